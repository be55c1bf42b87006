"""End to end with real parts: Modbus simulator → gatewayd (in-process) → EnOS emulator."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from gatewayd.app import Daemon
from gatewayd.config.loader import load_config
from gatewayd.config.models import Config
from gatewayd.enos.reconnect import ConnectThrottle, ReconnectPolicy
from gatewayd.modbus.poller import CycleResult
from gatewayd.samples import Quality
from gatewayd.sim.device import DeviceSimulator
from gatewayd.sim.emulator import EmulatorConfig, EnosEmulator
from gatewayd.sim.emulator.records import PointRecord
from gatewayd.systemd import Notifier
from tests.integration.modbus_fixtures import still_units
from tests.support import async_wait_until, free_port

METER_MODEL = {
    "name": "meter",
    "points": [
        {"measurepoint": "voltage", "table": "input", "address": 0, "type": "float32",
         "quality": True},
        {"measurepoint": "energy", "table": "input", "address": 2, "type": "uint32"},
        {"measurepoint": "temp", "table": "holding", "address": 10, "type": "int16",
         "scale": 0.1},
        {"measurepoint": "alarm", "table": "coil", "address": 0, "type": "bool"},
    ],
    "events": [{"event": "alarmOn", "rule": "bit_set", "point": "alarm"}],
}  # fmt: skip


@dataclass
class Site:
    """A running simulated plant and cloud, with everything the daemon committed."""

    config_path: Path
    config: Config
    sim: DeviceSimulator
    emulator: EnosEmulator
    committed: list[CycleResult] = field(default_factory=list)
    archived: list[PointRecord] = field(default_factory=list)

    def delivered(self) -> list[PointRecord]:
        """Every accepted value, across emulator restarts."""
        return [*self.archived, *self.emulator.records.points]


def write_site(tmp: Path, modbus_port: int, mqtt_port: int) -> Path:
    (tmp / "models").mkdir()
    (tmp / "models" / "meter.yaml").write_text(yaml.safe_dump(METER_MODEL))
    site = {
        "gateway": {
            "product_key": "gwPK",
            "device_key": "gwDK",
            "device_secret": "gwSecret",
            "broker": {"host": "127.0.0.1", "port": mqtt_port},
        },
        "spool": {"path": "spool.db", "synchronous": "normal"},
        "uplink": {"live_window": "1s", "reply_timeout": "5s"},
        "buses": [{"name": "plant", "type": "tcp", "host": "127.0.0.1", "port": modbus_port,
                   "timeout": "500ms"}],
        "devices": [
            {"name": f"meter-{unit}", "bus": "plant", "unit_id": unit, "model": "meter",
             "product_key": "meterPK", "device_key": f"meter{unit}",
             "device_secret": f"secret{unit}", "poll_interval": "200ms"}
            for unit in (1, 2)
        ],
    }  # fmt: skip
    path = tmp / "gatewayd.yaml"
    path.write_text(yaml.safe_dump(site, sort_keys=False))
    return path


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    """Two still meters on a Modbus TCP simulator and a cloud that knows them."""
    from gatewayd.config.models import DeviceModel

    model = DeviceModel.model_validate(METER_MODEL)
    async with DeviceSimulator(still_units(model, 1, 2)) as sim:
        for unit, volts in ((1, 231.5), (2, 229.25)):
            sim.set_value(unit, "voltage", volts)
            sim.set_value(unit, "energy", 1000 * unit)
            sim.set_value(unit, "temp", 21.5)
            sim.set_value(unit, "alarm", False)
        path = write_site(tmp_path, sim.port, free_port())
        config = load_config(path)
        emulator = EnosEmulator(
            EmulatorConfig.from_gateway_config(config), port=config.gateway.broker.port
        )
        await emulator.start()
        site = Site(path, config, sim, emulator)
        try:
            yield site
        finally:
            # An outage test replaces the cloud: stop the one running now (stop is idempotent).
            await site.emulator.stop()
            await emulator.stop()


@contextlib.asynccontextmanager
async def running(site: Site, *, quick_reconnect: bool = False) -> AsyncIterator[Daemon]:
    """The daemon on `site`; `quick_reconnect` retries the cloud every ~0.2 s (no EnOS
    spread), for outage tests whose cloud comes back within seconds."""
    policy = None
    if quick_reconnect:
        policy = ReconnectPolicy(
            rng=random.Random(1),
            base_s=0.2,
            cap_s=0.4,
            spread_s=0.4,
            quick_retries=100,
            throttle=ConnectThrottle(max_attempts=1000),
        )
        site.emulator.throttle.enabled = False
    daemon = Daemon(
        site.config_path,
        site.config,
        notifier=Notifier(environ={}),
        observer=site.committed.append,
        reconnect=policy,
    )
    task = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(daemon.ready.wait(), 10)
        yield daemon
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 20) == 0


def produced(site: Site) -> set[tuple[str, str, int]]:
    """(device key, measurepoint, time) of every good sample the daemon committed."""
    keys = {d.name: d.device_key for d in site.config.devices}
    return {
        (keys[s.device], s.measurepoint, s.ts_ms)
        for result in site.committed
        for s in result.samples
        if s.quality is Quality.GOOD
    }


def received(site: Site, channel: str | None = None) -> set[tuple[str, str, int]]:
    return {
        (r.device_key, r.point, r.time)
        for r in site.delivered()
        if channel is None or r.channel == channel
    }


async def test_live_values_arrive_exactly(site: Site) -> None:
    """Pinned register values reach EnOS live, decoded, scaled, with quality where enabled."""
    async with running(site):
        await async_wait_until(
            lambda: {"meter1", "meter2"} <= {r.device_key for r in site.emulator.records.points},
            15,
            "values of both meters in the cloud",
        )
    latest = {(r.device_key, r.point): r for r in site.emulator.records.points}
    assert latest[("meter1", "voltage")].value == pytest.approx(231.5)
    assert latest[("meter1", "voltage")].quality == 0
    assert latest[("meter2", "voltage")].value == pytest.approx(229.25)
    assert latest[("meter1", "energy")].value == 1000
    assert latest[("meter2", "energy")].value == 2000
    assert latest[("meter1", "temp")].value == pytest.approx(21.5)
    assert latest[("meter1", "alarm")].value is False
    assert latest[("meter1", "energy")].quality is None
    assert {r.channel for r in site.emulator.records.points} == {"post"}
    # Every value the cloud holds is one the daemon read, at the time it read it.
    assert received(site) <= produced(site)


async def test_event_fires_once_per_transition(site: Site) -> None:
    """An alarm coil that rises gives exactly one event with its original time."""
    async with running(site):
        await async_wait_until(lambda: site.emulator.records.points, 15, "first values")
        site.sim.set_value(1, "alarm", True)
        await async_wait_until(lambda: site.emulator.records.events, 15, "the alarm event")
        # Several more poll cycles with the alarm still set must not repeat the event.
        seen = len(site.committed)
        await async_wait_until(lambda: len(site.committed) >= seen + 5, 15, "five more cycles")
    events = [e for e in site.emulator.records.events if e.event_id == "alarmOn"]
    assert len(events) == 1
    assert events[0].device_key == "meter1"
    fired = [e for r in site.committed for e in r.events]
    assert [(e.device, e.ts_ms) for e in fired] == [("meter-1", events[0].time)]


async def test_outage_backfills_with_resume_and_loses_nothing(site: Site) -> None:
    """Cloud down for a while: live data before/after via post, the gap via resume, none lost."""
    async with running(site, quick_reconnect=True):
        await async_wait_until(lambda: len(site.emulator.records.points) >= 8, 15, "live data")
        site.archived.extend(site.emulator.records.points)
        await site.emulator.stop()
        down_from = len(site.committed)
        # Keep the cloud away for several live windows' worth of poll cycles.
        await async_wait_until(lambda: len(site.committed) >= down_from + 15, 20, "cycles")
        site.emulator = EnosEmulator(site.emulator.config, port=site.config.gateway.broker.port)
        site.emulator.throttle.enabled = False
        await site.emulator.start()
        await async_wait_until(
            lambda: produced(site) <= received(site), 60, "every committed sample in the cloud"
        )
    assert produced(site) <= received(site)
    resumed = received(site, "resume")
    assert resumed, "samples of the outage must be backfilled with resume"
    # Backfill is per device in time order.
    for device in ("meter1", "meter2"):
        times = [
            r.time for r in site.emulator.records.points
            if r.device_key == device and r.channel == "resume" and r.point == "energy"
        ]  # fmt: skip
        assert times == sorted(times)
