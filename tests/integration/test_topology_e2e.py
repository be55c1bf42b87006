"""Topology sync: `gatewayd topo` (a subprocess) and the daemon against the EnOS emulator.

The cloud's topology differs from the config both ways: meter2 is configured but not bound
to the gateway (missing), meter9 is bound but not configured (extra, and online).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import structlog

from gatewayd.app import Daemon
from gatewayd.sim.emulator import EnosEmulator
from gatewayd.sim.emulator.config import DeviceSpec
from gatewayd.systemd import Notifier
from tests.integration.test_attributes_e2e import Site, cloud_config, make_site
from tests.support import async_wait_until

GW = ("gwPK", "gwDK")
METER2 = ("meterPK", "meter2")
METER9 = ("meterPK", "meter9")


@contextlib.asynccontextmanager
async def drifted_site(tmp: Path) -> AsyncIterator[Site]:
    """The attribute test site, with a cloud whose topology drifted from the config."""
    async with make_site(tmp) as site:
        await site.emulator.stop()
        cloud = cloud_config(site.config)
        extra = DeviceSpec(product_key="meterPK", device_key="meter9", device_secret="s9",
                           gateway="gwPK/gwDK")  # fmt: skip
        cloud = cloud.model_copy(update={"devices": [*cloud.devices, extra]})
        site.emulator = EnosEmulator(cloud, port=site.config.gateway.broker.port)
        await site.emulator.start()
        site.emulator.state.devices[METER2].gateway = None
        try:
            yield site
        finally:
            await site.emulator.stop()


async def topo(site: Site, *args: str) -> tuple[int, str, str]:
    """Run `gatewayd topo CONFIG ARGS...`: (exit status, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gatewayd", "topo", str(site.config_path), *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def bound(emulator: EnosEmulator) -> set[tuple[str, str]]:
    return set(emulator.state.sub_devices_of(GW))


async def test_topo_prints_the_diff_and_changes_nothing(tmp_path: Path) -> None:
    """Without flags: present, missing and extra, one line each; the cloud is untouched."""
    async with drifted_site(tmp_path) as site:
        status, out, err = await topo(site)
        assert (status, err) == (0, "")
        assert out.splitlines() == [
            "present  meterPK/meter1  meter-1",
            "missing  meterPK/meter2  meter-2",
            "extra    meterPK/meter9",
            "1 present, 1 missing, 1 extra, 0 added, 0 removed",
        ]
        assert bound(site.emulator) == {("meterPK", "meter1"), METER9}
        assert site.emulator.stats.requests_by_method["thing.topo.delete"] == 0


async def test_topo_add_and_prune_log_the_extra_out_first(tmp_path: Path) -> None:
    """--add binds meter2; --prune logs the online meter9 out, then removes it (no 1256);
    the CONNECT is counted in the daemon's connects.json."""
    async with drifted_site(tmp_path) as site:
        site.emulator.state.set_online(GW, METER9)
        status, out, err = await topo(site, "--add", "--prune", "--json")
        assert (status, err) == (0, "")
        document = json.loads(out)
        assert [d["device_key"] for d in document["added"]] == ["meter2"]
        assert [d["device_key"] for d in document["removed"]] == ["meter9"]
        assert document["failed"] == []
        assert bound(site.emulator) == {("meterPK", "meter1"), METER2}
        stats = site.emulator.stats.requests_by_method
        assert (stats["combine.logout"], stats["thing.topo.delete"]) == (1, 1)
        connects = json.loads((tmp_path / "state" / "connects.json").read_text())["connects"]
        assert len(connects) == 1


async def test_topo_prune_names_a_sub_device_the_cloud_keeps_online(tmp_path: Path) -> None:
    """EnOS still answers 1256 after the logout (e.g. the sub-device logged in again at
    once): named on stderr with the hint, exit 76, the extra stays."""
    async with drifted_site(tmp_path) as site:
        site.emulator.faults.answer_code(1256, n=1, method="thing.topo.delete")
        status, _out, err = await topo(site, "--prune")
        assert status == 76
        assert "meterPK/meter9: refused with 1256" in err
        assert "still online" in err
        assert METER9 in bound(site.emulator)


async def test_daemon_adds_missing_and_reports_extras_once(tmp_path: Path) -> None:
    """auto_topo: the daemon reads the topology at start, adds meter2 before logging in,
    and warns about meter9 once, naming it."""
    async with drifted_site(tmp_path) as site:
        doc = site.config.model_copy(
            update={"uplink": site.config.uplink.model_copy(update={"auto_topo": True})}
        )
        daemon = Daemon(site.config_path, doc, notifier=Notifier(environ={}))
        with structlog.testing.capture_logs() as logs:
            task = asyncio.create_task(daemon.run())
            try:
                await async_wait_until(
                    lambda: daemon.uplink is not None and daemon.uplink.topology.last is not None,
                    timeout=30,
                    what="topology read",
                )
                await async_wait_until(
                    lambda: METER2 in site.emulator.online_sub_devices(*GW), 30, "meter2 online"
                )
            finally:
                daemon.request_stop()
                assert await asyncio.wait_for(task, 20) == 0
        assert daemon.uplink is not None
        assert daemon.uplink.topology.last is not None
        assert daemon.uplink.topology.last.extra == (METER9,)
        extras = [e for e in logs if e["event"].startswith("sub-devices in the gateway topology")]
        assert [e["devices"] for e in extras] == [["meterPK/meter9"]]
        logins = [(r.device_key, r.code) for r in site.emulator.records.logins
                  if r.action == "login"]  # fmt: skip
        assert ("meter2", 740) not in logins
