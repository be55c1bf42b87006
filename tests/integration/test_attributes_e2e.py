"""Sub-device attributes end to end: Modbus simulator → gatewayd (in-process) → EnOS emulator.

The simulator serves the nameplate registers as plain points of a "wire" model; the
gateway's model declares them as `attributes:`. The emulator checks attribute names
against its product model (1204 for one it lacks) and records every accepted update.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import yaml

from gatewayd.app import Daemon
from gatewayd.config.loader import load_config
from gatewayd.config.models import Config, DeviceModel, Table
from gatewayd.sim.device import DeviceSimulator
from gatewayd.sim.emulator import EmulatorConfig, EnosEmulator
from gatewayd.systemd import Notifier
from gatewayd.uplink.attributes import FILE_NAME
from tests.integration.modbus_fixtures import still_units
from tests.support import async_wait_until, free_port

NAMEPLATE = [
    {"attribute": "serial", "table": "holding", "address": 100, "type": "string", "count": 4},
    {"attribute": "firmware", "table": "holding", "address": 110, "type": "uint16"},
    {"attribute": "rated_power", "table": "holding", "address": 111, "type": "uint16",
     "scale": 0.1, "unit": "kW"},
]  # fmt: skip
POINTS = [
    {"measurepoint": "voltage", "table": "input", "address": 0, "type": "float32"},
    {"measurepoint": "energy", "table": "input", "address": 2, "type": "uint32"},
]
METER_MODEL = {"name": "meter", "points": POINTS, "attributes": NAMEPLATE}
#: What the simulator serves: the nameplate registers as ordinary points.
WIRE_MODEL = {
    "name": "meter",
    "points": [
        *POINTS,
        *({**{k: v for k, v in a.items() if k != "attribute"}, "measurepoint": a["attribute"]}
          for a in NAMEPLATE),
    ],
}  # fmt: skip


@dataclass
class Site:
    tmp: Path
    config_path: Path
    config: Config
    sim: DeviceSimulator
    emulator: EnosEmulator

    def updates(self, device_key: str) -> list[dict[str, Any]]:
        """The attribute updates the cloud accepted for `device_key`, in order."""
        return [
            a.attributes for a in self.emulator.records.attributes if a.device_key == device_key
        ]


def write_site(tmp: Path, modbus_port: int, mqtt_port: int) -> Path:
    (tmp / "models").mkdir()
    (tmp / "models" / "meter.yaml").write_text(yaml.safe_dump(METER_MODEL))
    site = {
        "gateway": {"product_key": "gwPK", "device_key": "gwDK", "device_secret": "gwSecret",
                    "broker": {"host": "127.0.0.1", "port": mqtt_port}},
        "spool": {"path": "state/spool.db", "synchronous": "normal"},
        "uplink": {"live_window": "1s", "reply_timeout": "5s"},
        "buses": [{"name": "plant", "type": "tcp", "host": "127.0.0.1", "port": modbus_port,
                   "timeout": "500ms"}],
        "devices": [
            {"name": f"meter-{unit}", "bus": "plant", "unit_id": unit, "model": "meter",
             "product_key": "meterPK", "device_key": f"meter{unit}",
             "device_secret": f"secret{unit}", "poll_interval": "200ms",
             "attributes": {"site": "North-2", "commissioned": "2026-11-30"}}
            for unit in (1, 2)
        ],
    }  # fmt: skip
    path = tmp / "gatewayd.yaml"
    # A YAML date, as an engineer writes it: it must arrive as the same text.
    text = yaml.safe_dump(site, sort_keys=False).replace("'2026-11-30'", "2026-11-30")
    path.write_text(text)
    return path


def cloud_config(config: Config, *, without: str | None = None) -> EmulatorConfig:
    """The emulator's view of `config`; `without` drops an attribute from the product model."""
    cloud = EmulatorConfig.from_gateway_config(config)
    if without is None:
        return cloud
    models = {
        name: model.model_copy(
            update={"attributes": [a for a in model.attributes or [] if a != without]}
        )
        for name, model in cloud.models.items()
    }
    return cloud.model_copy(update={"models": models})


@contextlib.asynccontextmanager
async def make_site(tmp: Path, *, without: str | None = None) -> AsyncIterator[Site]:
    wire = DeviceModel.model_validate(WIRE_MODEL)
    async with DeviceSimulator(still_units(wire, 1, 2)) as sim:
        for unit in (1, 2):
            sim.set_value(unit, "voltage", 230.0)
            sim.set_value(unit, "energy", 1000 * unit)
            sim.set_value(unit, "serial", f"SN-000{unit}")
            sim.set_value(unit, "firmware", 312)
            sim.set_value(unit, "rated_power", 5.0)
        path = write_site(tmp, sim.port, free_port())
        config = load_config(path)
        emulator = EnosEmulator(cloud_config(config, without=without),
                                port=config.gateway.broker.port)  # fmt: skip
        await emulator.start()
        try:
            yield Site(tmp, path, config, sim, emulator)
        finally:
            await emulator.stop()


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


async def passes_done(daemon: Daemon, count: int = 1) -> None:
    """Wait until every meter had `count` attribute passes in this run."""

    def done() -> bool:
        sync = daemon.uplink.attributes if daemon.uplink else None
        return sync is not None and all(
            sync.passes.get(name, 0) >= count for name in ("meter-1", "meter-2")
        )

    await async_wait_until(done, timeout=30, what="attribute passes")


NAMEPLATE_1 = {"serial": "SN-0001", "firmware": 312, "rated_power": 5.0,
               "site": "North-2", "commissioned": "2026-11-30"}  # fmt: skip


async def test_attributes_sent_once_per_change_across_restarts(tmp_path: Path) -> None:
    """Register and static attributes arrive once; a restart resends nothing; a changed
    register sends only itself, once."""
    async with make_site(tmp_path) as site:
        async with running(site) as daemon:
            await passes_done(daemon)
        assert site.updates("meter1") == [NAMEPLATE_1]
        assert site.updates("meter2") == [{**NAMEPLATE_1, "serial": "SN-0002"}]
        state = tmp_path / "state" / FILE_NAME
        assert state.stat().st_mode & 0o777 == 0o600
        assert json.loads(state.read_text())["devices"]["meterPK&meter1"] == NAMEPLATE_1

        async with running(site) as daemon:
            await passes_done(daemon)
        assert len(site.emulator.records.attributes) == 2  # nothing resent

        site.sim.set_value(1, "firmware", 313)
        async with running(site) as daemon:
            await passes_done(daemon)
        assert site.updates("meter1") == [NAMEPLATE_1, {"firmware": 313}]
        assert len(site.updates("meter2")) == 1


async def test_refused_attribute_is_named_once_and_the_rest_delivered(tmp_path: Path) -> None:
    """1204 for an attribute the cloud model lacks: that one is named in one warning,
    every other attribute is accepted, and data keeps flowing."""
    with structlog.testing.capture_logs() as logs:
        await _refused_run(tmp_path)
    refusals = [e for e in logs if e["event"].startswith("EnOS refused a sub-device attribute")]
    assert sorted((e["device"], e["attribute"], e["code"]) for e in refusals) == [
        ("meter-1", "firmware", 1204),
        ("meter-2", "firmware", 1204),
    ]  # one per meter, not one per pass


async def _refused_run(tmp_path: Path) -> None:
    async with make_site(tmp_path, without="firmware") as site, running(site) as daemon:
        await passes_done(daemon)
        sync = daemon.uplink.attributes if daemon.uplink else None
        assert sync is not None
        # Another pass of the same values: the refused one is not sent again.
        sync.reconfigure(site.config)
        await passes_done(daemon, 2)
        await async_wait_until(
            lambda: {p.device_key for p in site.emulator.records.points} == {"meter1", "meter2"},
            timeout=20,
            what="data from both meters",
        )
    expected = {k: v for k, v in NAMEPLATE_1.items() if k != "firmware"}
    merged: dict[str, Any] = {}
    for update in site.updates("meter1"):
        merged.update(update)
    assert merged == expected


async def test_unreadable_attribute_reported_once_and_others_sent(tmp_path: Path) -> None:
    """A nameplate register answering exception 02 costs only its attribute: one warning,
    the other attributes go out, and it is sent once it reads again."""
    with structlog.testing.capture_logs() as logs:
        await _unreadable_run(tmp_path)
    unreadable = [e for e in logs if e["event"].startswith("sub-device attribute cannot be read")]
    assert [(e["device"], e["attribute"]) for e in unreadable] == [("meter-1", "firmware")]
    again = [e for e in logs if e["event"] == "sub-device attribute read again"]
    assert [(e["device"], e["attribute"]) for e in again] == [("meter-1", "firmware")]


async def _unreadable_run(tmp_path: Path) -> None:
    async with make_site(tmp_path) as site:
        site.sim.faults(1).add_holes(Table.HOLDING, [110])
        async with running(site) as daemon:
            await passes_done(daemon)
            assert site.updates("meter1") == [
                {k: v for k, v in NAMEPLATE_1.items() if k != "firmware"}
            ]
            sync = daemon.uplink.attributes if daemon.uplink else None
            assert sync is not None
            site.sim.faults(1).holes.clear()
            sync.reconfigure(site.config)  # the next pass, now
            await passes_done(daemon, 2)
            assert site.updates("meter1")[1:] == [{"firmware": 312}]
