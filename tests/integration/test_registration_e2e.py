"""Dynamic registration against the EnOS emulator: meter-2 has `register:` and no secret.

In process for the normal path; as a subprocess (`python -m gatewayd run`) for `kill -9`,
which the emulator delivers itself the moment it has registered the device, before its
reply leaves: the cloud has the device, the gateway never got its secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import structlog
import yaml

from gatewayd.app import Daemon
from gatewayd.config.loader import load_config
from gatewayd.systemd import Notifier
from tests.integration.test_attributes_e2e import Site, make_site
from tests.support import async_wait_until

METER2 = ("meterPK", "meter2")


@contextlib.asynccontextmanager
async def registering_site(tmp: Path) -> AsyncIterator[Site]:
    """The attribute test site where meter-2 is to be registered by the gateway."""
    async with make_site(tmp) as site:
        doc = yaml.safe_load(site.config_path.read_text())
        meter2 = doc["devices"][1]
        del meter2["device_secret"]
        meter2["register"] = {"name": "Meter 2", "timezone": "+01:00",
                              "attributes": {"site": "North-2"}}  # fmt: skip
        doc["logging"] = {"format": "json"}
        site.config_path.write_text(yaml.safe_dump(doc, sort_keys=False))
        site.config = load_config(site.config_path)
        del site.emulator.state.devices[METER2]  # EnOS does not know it yet
        yield site


def registered_file(site: Site) -> Path:
    return site.tmp / "state" / "registered" / "meterPK&meter2.json"


@contextlib.asynccontextmanager
async def running(site: Site) -> AsyncIterator[Daemon]:
    daemon = Daemon(site.config_path, site.config, notifier=Notifier(environ={}))
    task = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(daemon.ready.wait(), 10)
        yield daemon
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 20) == 0


def meter2_online(site: Site) -> bool:
    return METER2 in site.emulator.online_sub_devices("gwPK", "gwDK")


def all_values(logs: list[dict[str, Any]]) -> Iterator[str]:
    for entry in logs:
        yield from (str(v) for v in entry.values())


async def test_registered_once_then_bound_logged_in_and_sending(tmp_path: Path) -> None:
    """The gateway registers meter-2 (its name, timezone, attributes), keeps the secret
    0600 and never logs it, binds and logs it in; a restart registers nothing."""
    async with registering_site(tmp_path) as site:
        with structlog.testing.capture_logs() as logs:
            async with running(site):
                await async_wait_until(lambda: meter2_online(site), 30, "meter2 online")
                await async_wait_until(
                    lambda: any(p.device_key == "meter2" for p in site.emulator.records.points),
                    30,
                    "meter2 data",
                )
        stored = json.loads(registered_file(site).read_text())
        secret = stored["deviceSecret"]
        assert secret == site.emulator.state.devices[METER2].secret
        assert registered_file(site).stat().st_mode & 0o777 == 0o600
        assert secret not in " ".join(all_values(logs))
        assert site.emulator.state.devices[METER2].gateway == ("gwPK", "gwDK")
        assert site.emulator.stats.requests_by_method["thing.device.register"] == 1

        async with running(site):
            await async_wait_until(lambda: meter2_online(site), 30, "meter2 online again")
        assert site.emulator.stats.requests_by_method["thing.device.register"] == 1


async def test_quota_739_is_reported_and_not_retried_at_once(tmp_path: Path) -> None:
    """739: one warning naming the device and the quota; no tight retry loop; meter-1 flows."""
    async with registering_site(tmp_path) as site:
        site.emulator.faults.answer_code(739, None, method="thing.device.register")
        with structlog.testing.capture_logs() as logs:
            async with running(site):
                await async_wait_until(
                    lambda: sum(1 for p in site.emulator.records.points
                                if p.device_key == "meter1") >= 10,
                    30,
                    "meter1 data",
                )  # fmt: skip
        assert site.emulator.stats.requests_by_method["thing.device.register"] == 1
        failed = [e for e in logs if e["event"].startswith("sub-device registration failed")]
        assert [(e["device"], e["retry_s"]) for e in failed] == [("meter-2", 3600.0)]
        assert "quota" in failed[0]["reason"]
        assert not registered_file(site).exists()


async def run_daemon(site: Site, log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as handle:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gatewayd", "run", str(site.config_path),
            stdout=handle, stderr=handle,
        )  # fmt: skip


async def test_kill_9_after_the_cloud_registered_never_registers_twice(tmp_path: Path) -> None:
    """kill -9 between EnOS registering the device and the gateway keeping its secret:
    after a restart the gateway asks once more, gets 702 and says the earlier attempt
    was interrupted; the cloud holds one device and no third request comes."""
    async with registering_site(tmp_path) as site:
        log = tmp_path / "gatewayd.log"
        responder = site.emulator.responder
        original = responder._register
        victim: list[int] = []

        def register_then_die(params: Any) -> Any:
            result = original(params)
            if victim:
                os.kill(victim.pop(), signal.SIGKILL)  # the reply never reaches it
            return result

        responder._register = register_then_die  # type: ignore[method-assign]
        first = await run_daemon(site, log)
        victim.append(first.pid)
        assert await asyncio.wait_for(first.wait(), 60) == -signal.SIGKILL
        assert METER2 in site.emulator.state.devices  # the cloud has it
        assert not registered_file(site).exists()
        assert (tmp_path / "state" / "registered" / "meterPK&meter2.pending").exists()

        second = await run_daemon(site, log)
        try:
            await async_wait_until(
                lambda: "its device key exists in EnOS (702)" in log.read_text(), 60, "702 error"
            )
            await async_wait_until(
                lambda: (
                    sum(1 for r in site.emulator.records.points if r.device_key == "meter1") >= 5
                ),
                60,
                "meter1 still delivering",
            )
        finally:
            second.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(second.wait(), 30) == 0
        assert site.emulator.stats.requests_by_method["thing.device.register"] == 2
        errors = [json.loads(line) for line in log.read_text().splitlines()
                  if line.startswith("{") and "(702)" in line]  # fmt: skip
        assert len(errors) == 1
        assert "interrupted" in errors[0]["cause"]
        assert sum(1 for key in site.emulator.state.devices if key == METER2) == 1
