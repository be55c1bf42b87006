"""A running site for cloud-command tests: simulator → gatewayd (in-process) → EnOS emulator.

`running_site(tmp_path)` starts a Modbus TCP simulator with two still units of
`COMMAND_MODEL` (a writable point of every type, read-only points and two services), the
EnOS emulator, and a `Daemon` with the real command handler, and waits until both
sub-devices are logged in. Unit 1 is `m1` (FC6 for single registers), unit 2 is `m2`
(`write_multiple_only`: FC16 only).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gatewayd.app import CommandFactory, Daemon
from gatewayd.commands import command_handler_factory
from gatewayd.config.loader import load_config
from gatewayd.config.models import Config, DeviceModel
from gatewayd.modbus.poller import CycleResult
from gatewayd.sim.device import DeviceSimulator, SimulatedUnit
from gatewayd.sim.emulator import EmulatorConfig, EnosEmulator
from gatewayd.systemd import Notifier
from tests.integration.modbus_fixtures import still_units
from tests.support import async_wait_until, free_port

GW = ("gwPK", "gwDK")
PK = "cmdPK"


def _w(doc: dict[str, Any]) -> dict[str, Any]:
    return {**doc, "writable": True}


COMMAND_MODEL: dict[str, Any] = {
    "name": "commandable",
    "points": [
        _w({"measurepoint": "relay", "table": "coil", "address": 0, "type": "bool"}),
        {"measurepoint": "door_open", "table": "discrete", "address": 3, "type": "bool"},
        _w({"measurepoint": "flag0", "table": "holding", "address": 0, "type": "bool", "bit": 0}),
        _w({"measurepoint": "flag9", "table": "holding", "address": 0, "type": "bool", "bit": 9}),
        _w({"measurepoint": "i16", "table": "holding", "address": 1, "type": "int16",
            "min": -1000, "max": 1000}),
        _w({"measurepoint": "u16", "table": "holding", "address": 2, "type": "uint16"}),
        _w({"measurepoint": "i32", "table": "holding", "address": 3, "type": "int32"}),
        _w({"measurepoint": "u32", "table": "holding", "address": 5, "type": "uint32"}),
        _w({"measurepoint": "i64", "table": "holding", "address": 7, "type": "int64"}),
        _w({"measurepoint": "u64", "table": "holding", "address": 11, "type": "uint64"}),
        _w({"measurepoint": "f32", "table": "holding", "address": 15, "type": "float32"}),
        _w({"measurepoint": "f64", "table": "holding", "address": 17, "type": "float64"}),
        _w({"measurepoint": "name", "table": "holding", "address": 21, "type": "string",
            "count": 5}),
        _w({"measurepoint": "bcd4", "table": "holding", "address": 26, "type": "bcd16"}),
        _w({"measurepoint": "bcd8", "table": "holding", "address": 27, "type": "bcd32"}),
        _w({"measurepoint": "mode", "table": "holding", "address": 29, "type": "uint16",
            "enum": {0: "off", 1: "standby", 2: "run"}}),
        _w({"measurepoint": "setpoint", "table": "holding", "address": 30, "type": "int16",
            "scale": 0.1, "offset": -5.0, "min": -50, "max": 50}),
        _w({"measurepoint": "f32_swapped", "table": "holding", "address": 31, "type": "float32",
            "byte_order": "little", "word_order": "little"}),
        {"measurepoint": "status", "table": "holding", "address": 40, "type": "uint16"},
        _w({"measurepoint": "trip", "table": "holding", "address": 41, "type": "uint16"}),
        {"measurepoint": "voltage", "table": "input", "address": 0, "type": "float32"},
        {"measurepoint": "energy", "table": "input", "address": 2, "type": "uint32"},
    ],
    "services": [
        {
            "id": "start",
            "params": {"speed": {"type": "float", "min": 0, "max": 100},
                       "run": {"type": "bool"}},
            "writes": [{"point": "f32", "value": "$speed"}, {"point": "relay", "value": "$run"},
                       {"point": "mode", "value": "run"}],
            "outputs": ["f32", "relay", "mode", "voltage"],
        },
        {
            "id": "reset",
            "writes": [{"point": "trip", "value": 1}, {"point": "u16", "value": 7}],
        },
    ],
}  # fmt: skip


def device_key(unit: int) -> str:
    """The EnOS device key of simulated unit `unit`."""
    return f"m{unit}"


def write_site(tmp: Path, modbus_port: int, mqtt_port: int, **device_options: Any) -> Path:
    """Write gatewayd.yaml and the model for a two-device site; returns the config path."""
    (tmp / "models").mkdir()
    (tmp / "models" / "commandable.yaml").write_text(yaml.safe_dump(COMMAND_MODEL))
    devices = [
        {"name": f"m{unit}", "bus": "plant", "unit_id": unit, "model": "commandable",
         "product_key": PK, "device_key": device_key(unit), "device_secret": f"secret{unit}",
         "poll_interval": "500ms", **device_options.get(f"m{unit}", {})}
        for unit in (1, 2)
    ]  # fmt: skip
    devices[1].setdefault("write_multiple_only", True)
    site = {
        "gateway": {
            "product_key": GW[0],
            "device_key": GW[1],
            "device_secret": "gwSecret",
            "broker": {"host": "127.0.0.1", "port": mqtt_port},
        },
        "spool": {"path": "spool.db", "synchronous": "normal"},
        "uplink": {"live_window": "2s", "reply_timeout": "5s"},
        "buses": [{"name": "plant", "type": "tcp", "host": "127.0.0.1", "port": modbus_port,
                   "timeout": "300ms", "retries": 1}],
        "devices": devices,
    }  # fmt: skip
    path = tmp / "gatewayd.yaml"
    path.write_text(yaml.safe_dump(site, sort_keys=False))
    return path


@dataclass
class CommandSite:
    """A running site: send commands with `command`, look at the devices through `sim`."""

    config: Config
    sim: DeviceSimulator
    emulator: EnosEmulator
    daemon: Daemon
    committed: list[CycleResult] = field(default_factory=list)

    async def command(
        self, unit: int, method: str, params: Any, timeout: float = 15.0
    ) -> dict[str, Any]:
        """Send `method` to sub-device `unit` through the cloud; the device's reply.

        Replies take milliseconds here: a missing one fails fast with `CommandTimeout`.
        """
        return await self.emulator.send_command(PK, device_key(unit), method, params, timeout)

    async def write(self, unit: int, params: dict[str, Any]) -> dict[str, Any]:
        """`thing.service.measurepoint.set` to `unit`."""
        return await self.command(unit, "thing.service.measurepoint.set", params)

    async def combine(self, method: str, *units: int) -> dict[str, Any]:
        """A `combine.*` command to the gateway about `units`."""
        params = [{"productKey": PK, "deviceKey": device_key(u)} for u in units]
        return await self.emulator.send_command(*GW, method, params)

    def online(self) -> set[str]:
        """Device keys the cloud sees logged in through the gateway."""
        return {dk for _, dk in self.emulator.online_sub_devices(*GW)}


def model() -> DeviceModel:
    """`COMMAND_MODEL` validated."""
    return DeviceModel.model_validate(COMMAND_MODEL)


@contextlib.asynccontextmanager
async def running_site(
    tmp: Path,
    *,
    commands: CommandFactory | None = command_handler_factory,
    units: list[SimulatedUnit] | None = None,
    **device_options: Any,
) -> AsyncIterator[CommandSite]:
    """Start simulator, emulator and daemon; yield once both sub-devices are logged in.

    `units` replaces the two still units (ids 1 and 2) of `COMMAND_MODEL`; `device_options`
    maps a device name to extra config keys, e.g. ``m1={"verify_writes": False}``.
    """
    async with DeviceSimulator(units or still_units(model(), 1, 2)) as sim:
        path = write_site(tmp, sim.port, free_port(), **device_options)
        config = load_config(path)
        emulator = EnosEmulator(
            EmulatorConfig.from_gateway_config(config), port=config.gateway.broker.port
        )
        await emulator.start()
        try:
            committed: list[CycleResult] = []
            daemon = Daemon(
                path,
                config,
                notifier=Notifier(environ={}),
                commands=commands,
                observer=committed.append,
            )
            task = asyncio.create_task(daemon.run())
            site = CommandSite(config, sim, emulator, daemon, committed)
            try:
                await asyncio.wait_for(daemon.ready.wait(), 10)
                await async_wait_until(
                    lambda: site.online() == {"m1", "m2"}, 15, "both sub-devices logged in"
                )
                yield site
            finally:
                daemon.request_stop()
                assert await asyncio.wait_for(task, 20) == 0
        finally:
            await emulator.stop()
