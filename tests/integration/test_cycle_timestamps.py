"""One record per device and cycle (issue #16.12), end to end with real parts.

A pymodbus simulator serves a register map spread beyond 125 registers, so one poll
cycle of a device takes several requests; gatewayd (in-process) commits to its spool and
publishes to the EnOS emulator. With `timestamps: cycle` (the default) every point of a
cycle reaches EnOS with one time; with `timestamps: request` a cycle gives several.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
import yaml

from gatewayd.app import Daemon
from gatewayd.config.loader import load_config
from gatewayd.config.models import DeviceModel
from gatewayd.modbus.poller import CycleResult
from gatewayd.sim.device import DeviceSimulator
from gatewayd.sim.emulator import EmulatorConfig, EnosEmulator
from gatewayd.sim.emulator.records import PointRecord
from gatewayd.systemd import Notifier
from tests.integration.modbus_fixtures import still_units
from tests.support import async_wait_until, free_port

#: Points 0..310: no request may span them (125 registers at most), and the gaps are too
#: wide to read through: three requests per cycle.
SPREAD = {
    "name": "spread",
    "points": [
        {"measurepoint": "p0", "table": "holding", "address": 0, "type": "uint16"},
        {"measurepoint": "p1", "table": "holding", "address": 1, "type": "float32"},
        {"measurepoint": "p150", "table": "holding", "address": 150, "type": "uint16"},
        {"measurepoint": "p151", "table": "holding", "address": 151, "type": "int16"},
        {"measurepoint": "p300", "table": "holding", "address": 300, "type": "uint32"},
    ],
}
POINTS = {p["measurepoint"] for p in SPREAD["points"]}
CYCLES = 4  # complete cycles per device that must reach EnOS


def write_site(tmp: Path, modbus_port: int, mqtt_port: int, timestamps: str | None) -> Path:
    """Two devices of the spread model on one TCP bus; `timestamps` set on device 2 only."""
    devices: list[dict[str, Any]] = [
        {"name": f"dev-{unit}", "bus": "plant", "unit_id": unit, "model": "spread",
         "product_key": "devPK", "device_key": f"dev{unit}", "device_secret": f"secret{unit}",
         "poll_interval": "300ms"}
        for unit in (1, 2)
    ]  # fmt: skip
    if timestamps is not None:
        devices[1]["timestamps"] = timestamps
    site = {
        "gateway": {"product_key": "gwPK", "device_key": "gwDK", "device_secret": "gwSecret",
                    "broker": {"host": "127.0.0.1", "port": mqtt_port}},
        "spool": {"path": "spool.db", "synchronous": "normal"},
        "uplink": {"live_window": "1s", "reply_timeout": "5s"},
        "buses": [{"name": "plant", "type": "tcp", "host": "127.0.0.1", "port": modbus_port,
                   "timeout": "1s", "gap_fill": 4}],
        "devices": devices,
        "models": {"spread": SPREAD},
    }  # fmt: skip
    path = tmp / "gatewayd.yaml"
    path.write_text(yaml.safe_dump(site, sort_keys=False))
    return path


async def deliver(tmp: Path, timestamps: str | None) -> tuple[list[PointRecord], list[CycleResult]]:
    """Run the site until each device has `CYCLES` complete cycles in EnOS; what arrived."""
    model = DeviceModel.model_validate(SPREAD)
    committed: list[CycleResult] = []
    async with DeviceSimulator(still_units(model, 1, 2)) as sim:
        for unit in (1, 2):
            # A real device thinks a few ms per request: per-request times differ.
            sim.faults(unit).turnaround = 0.005
            for name, value in (("p0", 1), ("p1", 2.5), ("p150", 3), ("p151", -4), ("p300", 5)):
                sim.set_value(unit, name, value)
        path = write_site(tmp, sim.port, free_port(), timestamps)
        config = load_config(path)
        emulator = EnosEmulator(
            EmulatorConfig.from_gateway_config(config), port=config.gateway.broker.port
        )
        await emulator.start()
        try:
            daemon = Daemon(path, config, notifier=Notifier(environ={}), observer=committed.append)
            task = asyncio.create_task(daemon.run())
            try:
                await asyncio.wait_for(daemon.ready.wait(), 20)

                def complete_cycles(device_key: str) -> int:
                    # A cycle is complete in EnOS when its last point (p300) arrived.
                    return sum(
                        1
                        for r in emulator.records.points
                        if r.device_key == device_key and r.point == "p300"
                    )

                await async_wait_until(
                    lambda: min(complete_cycles("dev1"), complete_cycles("dev2")) >= CYCLES,
                    60,
                    f"{CYCLES} cycles of each device in EnOS",
                )
            finally:
                daemon.request_stop()
                assert await asyncio.wait_for(task, 30) == 0
            return list(emulator.records.points), committed
        finally:
            await emulator.stop()


def points_by_time(records: list[PointRecord], device_key: str) -> dict[int, set[str]]:
    """The measurepoints EnOS received for `device_key`, by their time."""
    by_time: dict[int, set[str]] = defaultdict(set)
    for record in records:
        if record.device_key == device_key:
            by_time[record.time].add(record.point)
    return dict(by_time)


def in_time_order_per_message(records: list[PointRecord], device_key: str) -> bool:
    """Within every message, the device's records come in time order."""
    times: dict[str | None, list[int]] = defaultdict(list)
    for record in records:
        if record.device_key == device_key:
            times[record.message_id].append(record.time)
    return all(t == sorted(t) for t in times.values())


@pytest.mark.parametrize("option", [None, "cycle"])
async def test_one_time_per_device_and_cycle_by_default(tmp_path: Path, option: str | None) -> None:
    """Three requests per cycle, and every cycle of a device reaches EnOS with one time."""
    records, committed = await deliver(tmp_path, option)
    assert all(result.requests >= 3 * len(result.devices) for result in committed[:3])
    for device_key in ("dev1", "dev2"):
        by_time = points_by_time(records, device_key)
        cycles = [points for points in by_time.values() if "p300" in points]
        assert len(cycles) >= CYCLES
        # Each time carries the whole cycle: never a cycle split over several times.
        assert all(points == POINTS for points in cycles), by_time
        assert len(by_time) - len(cycles) <= 1  # at most a last cycle caught mid-delivery
        assert in_time_order_per_message(records, device_key)


async def test_request_timestamps_give_several_times_per_cycle(tmp_path: Path) -> None:
    """`timestamps: request` on dev-2: its cycles arrive as one time per request (3),
    in time order within each message; dev-1 keeps one time per cycle."""
    records, _ = await deliver(tmp_path, "request")
    dev1 = points_by_time(records, "dev1")
    assert all(points == POINTS for points in dev1.values() if "p300" in points)
    dev2 = points_by_time(records, "dev2")
    groups = sorted(dev2.values(), key=len)
    assert {"p0", "p1"} in groups
    assert {"p150", "p151"} in groups
    assert {"p300"} in groups
    assert not any(points == POINTS for points in dev2.values())
    assert len(dev2) >= 3 * CYCLES
    assert in_time_order_per_message(records, "dev2")
