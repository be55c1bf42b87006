"""Capture rules end to end: Modbus simulator → gatewayd → capture drop (CSV + sidecar),
with the EnOS emulator as the cloud that must NOT get the captured event by event.post.

In process for the normal path (the committed cycles tell exactly which rows the file must
hold); as a subprocess (`python -m gatewayd run`) for kill -9 during `after`.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import structlog
import yaml

from gatewayd.config.loader import load_config
from gatewayd.config.models import DeviceModel
from gatewayd.mapping.capture import iso_time
from gatewayd.samples import Quality
from gatewayd.sim.device import DeviceSimulator
from gatewayd.sim.emulator import EmulatorConfig, EnosEmulator
from tests.integration.modbus_fixtures import still_units
from tests.integration.test_run_e2e import METER_MODEL, Site, running, write_site
from tests.support import async_wait_until, free_port

CAPTURE = {"points": ["voltage", "energy"], "before": "1s", "after": "1s", "param": "record"}


def capture_model(after: str) -> dict[str, Any]:
    """The test meter whose alarm event captures voltage and energy."""
    capture = {**CAPTURE, "after": after}
    event = {"event": "alarmOn", "rule": "bit_set", "point": "alarm", "params": {"reason": 7},
             "capture": capture}  # fmt: skip
    return {**METER_MODEL, "events": [event]}


@contextlib.asynccontextmanager
async def capture_site(tmp: Path, *, after: str = "1s") -> AsyncIterator[Site]:
    """Two still meters (alarm off) whose alarm captures; integration.http configured (no
    request is made: the drop is what this test checks); a cloud that knows them."""
    model = DeviceModel.model_validate(capture_model(after))
    async with DeviceSimulator(still_units(model, 1, 2)) as sim:
        for unit in (1, 2):
            sim.set_value(unit, "voltage", 230.5)
            sim.set_value(unit, "energy", 1000 * unit)
            sim.set_value(unit, "temp", 21.5)
            sim.set_value(unit, "alarm", False)
        path = write_site(tmp, sim.port, free_port())
        (tmp / "models" / "meter.yaml").write_text(yaml.safe_dump(capture_model(after)))
        doc = yaml.safe_load(path.read_text())
        doc["integration"] = {"http": {"address": "https://127.0.0.1:9", "org_id": "o1",
                                       "access_key": "ak", "secret_key": "sk"}}  # fmt: skip
        doc["logging"] = {"format": "json"}
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        config = load_config(path)
        emulator = EnosEmulator(
            EmulatorConfig.from_gateway_config(config), port=config.gateway.broker.port
        )
        await emulator.start()
        try:
            yield Site(path, config, sim, emulator)
        finally:
            await emulator.stop()


def captures(site: Site) -> Path:
    return site.config_path.parent / "captures"


def sidecars(site: Site) -> list[Path]:
    """Complete drops' sidecars in the capture directory."""
    directory = captures(site)
    return sorted(directory.glob("*.json")) if directory.is_dir() else []


def published(site: Site) -> dict[str, tuple[dict[str, Any], Path]]:
    """Complete drops by payload name: (sidecar, payload), still in captures/ or already
    committed by the file-event watcher (which takes a drop within a second; its uploads
    to the unreachable integration address keep it in the store)."""
    found: dict[str, tuple[dict[str, Any], Path]] = {}
    for sidecar in sidecars(site):
        with contextlib.suppress(FileNotFoundError):  # taken by the watcher meanwhile
            name = sidecar.name.removesuffix(".json")
            found[name] = (json.loads(sidecar.read_text()), captures(site) / name)
    store = site.config.spool.path.parent / "file-events" / "pending"
    for record_path in sorted(store.glob("*/event.json")):
        record = json.loads(record_path.read_text())
        keys = ("device", "event", "file_param", "params", "filename")
        sidecar = {**{k: record[k] for k in keys}, "time": record["time_ms"]}
        found[record["filename"]] = (sidecar, record_path.parent / "payload")
    return found


def leftovers(site: Site, name: str) -> list[str]:
    """What captures/ holds besides the drop `name` (nothing may be left running)."""
    directory = captures(site)
    return sorted(p.name for p in directory.iterdir() if p.name not in (name, name + ".json"))


def read_csv(path: Path) -> list[dict[str, str]]:
    """The file as a general-purpose parser (the stdlib's csv) reads it."""
    with path.open(newline="", encoding="utf-8") as file:
        return list(csv.DictReader(file))


def cloud_events(site: Site, event_id: str) -> list[Any]:
    return [e for e in site.emulator.records.events if e.event_id == event_id]


async def test_fired_capture_drops_the_rows_around_the_event(tmp_path: Path) -> None:
    """The alarm rises: one drop appears with the sidecar of the contract and exactly the
    committed readings of voltage and energy from 1 s before to 1 s after the event;
    the event itself never goes by thing.event.post."""
    async with capture_site(tmp_path) as site, running(site):
        await async_wait_until(lambda: len(site.committed) >= 10, 20, "ten cycles")
        site.sim.set_value(1, "alarm", True)
        await async_wait_until(lambda: published(site), 30, "the capture's drop")
        # Later data reaches the cloud: the uplink runs, and had the event gone to the
        # spool it would have been delivered before these points.
        dropped_at = int(time.time() * 1000)
        await async_wait_until(
            lambda: any(r.time > dropped_at for r in site.emulator.records.points),
            30,
            "values read after the drop in the cloud",
        )
    ((name, (sidecar, payload)),) = published(site).items()
    fired = sidecar["time"]
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(fired // 1000))
    assert name == f"meter-1-alarmOn-{stamp}.csv"
    assert sidecar == {
        "device": "meter-1",
        "event": "alarmOn",
        "file_param": "record",
        "params": {"measurepoint": "alarm", "value": True, "reason": 7},
        "time": fired,
        "filename": name,
    }
    # The readings the daemon committed in the window, as the file must hold them.
    expected: dict[int, dict[str, str]] = {}
    for result in site.committed:
        for s in result.samples:
            if (
                s.device == "meter-1"
                and s.measurepoint in ("voltage", "energy")
                and s.quality is Quality.GOOD
                and fired - 1000 <= s.ts_ms <= fired + 1000
            ):
                cells = expected.setdefault(s.ts_ms, {"time": iso_time(s.ts_ms)})
                cells[s.measurepoint] = repr(s.value) if isinstance(s.value, float) else str(
                    s.value
                )
    rows = read_csv(payload)
    assert rows == [expected[ts] for ts in sorted(expected)]
    assert rows[0] == {"time": rows[0]["time"], "voltage": "230.5", "energy": "1000"}
    assert any(ts < fired for ts in expected)
    assert any(ts > fired for ts in expected)
    assert cloud_events(site, "alarmOn") == []
    assert [e for r in site.committed for e in r.events] == []
    assert leftovers(site, name) == []


async def test_a_stop_during_after_completes_the_drop_as_it_is(tmp_path: Path) -> None:
    """SIGTERM-like stop while the capture waits for its 60 s `after`: the daemon publishes
    the drop before it exits (rows so far), with a warning, and nothing is left running."""
    async with capture_site(tmp_path, after="60s") as site:
        with structlog.testing.capture_logs() as logs:
            async with running(site):
                await async_wait_until(lambda: len(site.committed) >= 10, 20, "ten cycles")
                site.sim.set_value(1, "alarm", True)
                await async_wait_until(
                    lambda: list(captures(site).glob("*.csv.part")), 30, "the running capture"
                )
                assert published(site) == {}
        ((name, (_sidecar, payload)),) = published(site).items()
        rows = read_csv(payload)
        assert rows
        assert leftovers(site, name) == []
        cut = [e for e in logs if e["event"] == "captures cut short: the daemon stops"]
        assert [(e["device"], e["count"], e["log_level"]) for e in cut] == [
            ("meter-1", 1, "warning")
        ]
        assert cloud_events(site, "alarmOn") == []


async def start_daemon(site: Site, log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as handle:
        return await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gatewayd", "run", str(site.config_path),
            stdout=handle, stderr=handle,
        )  # fmt: skip


def lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


async def test_kill_9_during_after_then_restart_completes_the_drop(tmp_path: Path) -> None:
    """kill -9 while the capture waits for its 60 s `after`: nothing looks complete; the
    restarted daemon completes the drop as it was (header, rows before and after) with a
    warning, and the event never goes by thing.event.post."""
    async with capture_site(tmp_path, after="60s") as site:
        log = tmp_path / "gatewayd.log"
        first = await start_daemon(site, log)
        try:
            await async_wait_until(
                lambda: sum(r.device_key == "meter1" for r in site.emulator.records.points)
                >= 24,
                60,
                "a few seconds of meter1 in the cloud",
            )
            site.sim.set_value(1, "alarm", True)
            await async_wait_until(lambda: list(captures(site).glob("*.csv.part")), 30, "a .part")
            (part,) = captures(site).glob("*.csv.part")
            begun = lines(part)
            assert begun >= 3  # the header and at least two rows before the event
            await async_wait_until(lambda: lines(part) >= begun + 2, 30, "rows after the event")
        finally:
            first.send_signal(signal.SIGKILL)
            assert await asyncio.wait_for(first.wait(), 30) == -signal.SIGKILL
        written = part.read_bytes()
        assert published(site) == {}
        name = part.name.removesuffix(".part")
        assert (captures(site) / (name + ".json.part")).is_file()

        site.sim.set_value(1, "alarm", False)  # the restart must not fire it again
        restarted_at = int(time.time() * 1000)
        second = await start_daemon(site, log)
        try:
            await async_wait_until(lambda: published(site), 30, "the completed drop")
            await async_wait_until(
                lambda: any(r.time > restarted_at for r in site.emulator.records.points),
                60,
                "values read after the restart in the cloud",
            )
        finally:
            second.send_signal(signal.SIGTERM)
            assert await asyncio.wait_for(second.wait(), 30) == 0
    ((published_name, (sidecar, payload)),) = published(site).items()
    assert published_name == name
    assert (sidecar["device"], sidecar["event"], sidecar["file_param"]) == (
        "meter-1", "alarmOn", "record"
    )  # fmt: skip
    assert sidecar["params"] == {"measurepoint": "alarm", "value": True, "reason": 7}
    assert payload.read_bytes() == written
    rows = read_csv(payload)
    assert len(rows) == written.count(b"\n") - 1
    times = [r["time"] for r in rows]
    assert times == sorted(times)
    assert times[0] < iso_time(sidecar["time"]) < times[-1]
    assert {r["voltage"] for r in rows} == {"230.5"}
    assert leftovers(site, name) == []
    entries = [json.loads(line) for line in log.read_text().splitlines() if line.startswith("{")]
    recovered = [e for e in entries if e["event"].startswith("capture completed after a restart")]
    assert [(e["file"], e["level"]) for e in recovered] == [(name, "warning")]
    assert cloud_events(site, "alarmOn") == []
    assert os.stat(payload).st_mode & 0o777 == 0o600
