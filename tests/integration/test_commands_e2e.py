"""Cloud commands end to end: EnOS emulator → gatewayd → Modbus simulator → reply."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from gatewayd.app import Daemon
from gatewayd.commands import command_handler_factory
from gatewayd.config.models import Table
from gatewayd.enos.codes import ReplyCode
from gatewayd.sim.device import SimulatedUnit
from gatewayd.sim.device_motion import Motion
from gatewayd.uplink.uplink import CommandHandler
from tests.integration.commands_site import CommandSite, model, running_site

FC_WRITE_COIL, FC_WRITE_REGISTER, FC_WRITE_COILS, FC_WRITE_REGISTERS = 5, 6, 15, 16

#: One value per writable type, and what the simulator must decode afterwards.
EVERY_TYPE: dict[str, tuple[Any, Any]] = {
    "relay": (True, True),
    "flag0": (True, True),
    "flag9": (1, True),  # 0/1 accepted for bool points
    "i16": (-1000, -1000),
    "u16": (65535, 65535),
    "i32": (-2_000_000_000, -2_000_000_000),
    "u32": (4_000_000_000, 4_000_000_000),
    "i64": (-(2**62) - 7, -(2**62) - 7),
    "u64": (2**64 - 1, 2**64 - 1),
    "f32": (1.1, 1.1),
    "f64": (-1234.56789012345, -1234.56789012345),
    "name": ("AB-12", "AB-12"),
    "bcd4": (9876, 9876),
    "bcd8": (12345678, 12345678),
    "mode": ("standby", "standby"),
    "setpoint": (12.3, 12.3),
    "f32_swapped": (-2.5, -2.5),
}


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[CommandSite]:
    """Two commandable devices, logged in, with the real command handler."""
    async with running_site(tmp_path) as running:
        yield running


async def test_every_type_written_and_read_back(site: CommandSite) -> None:
    """One set with a point of every type: 200, and the simulator holds each value."""
    reply = await site.write(1, {name: value for name, (value, _) in EVERY_TYPE.items()})
    assert reply["code"] == 200, reply
    assert reply["data"] == {}
    for name, (_, expected) in EVERY_TYPE.items():
        actual = site.sim.get_value(1, name)
        if isinstance(expected, float):
            assert actual == pytest.approx(expected, rel=1e-7), name
        else:
            assert actual == expected, name
    # The two bits share register 0 and were both set without disturbing each other.
    assert site.sim.unit(1).registers(Table.HOLDING, 0, 1) == [(1 << 9) | 1]
    get = await site.command(1, "thing.service.measurepoint.get", list(EVERY_TYPE))
    assert get["code"] == 200, get
    for name, (_, expected) in EVERY_TYPE.items():
        if isinstance(expected, float):
            assert get["data"][name] == pytest.approx(expected, rel=1e-7), name
        else:
            assert get["data"][name] == expected, name


async def test_enum_takes_its_integer_and_bits_clear(site: CommandSite) -> None:
    """An enum point takes its integer code; clearing one bit keeps its neighbour."""
    assert (await site.write(1, {"flag0": True, "flag9": True}))["code"] == 200
    reply = await site.write(1, {"mode": 2, "flag0": False})
    assert reply["code"] == 200, reply
    assert site.sim.get_value(1, "mode") == "run"
    assert site.sim.unit(1).registers(Table.HOLDING, 0, 1) == [1 << 9]


async def test_function_codes_follow_the_device_option(site: CommandSite) -> None:
    """Single registers go out as FC6, or as FC16 on a write_multiple_only device; coils FC5."""
    for unit in (1, 2):
        site.sim.stats(unit).reset()
        reply = await site.write(unit, {"u16": 42, "relay": True, "u32": 7})
        assert reply["code"] == 200, reply
    one, two = site.sim.stats(1).requests, site.sim.stats(2).requests
    assert (one[FC_WRITE_REGISTER], one[FC_WRITE_REGISTERS], one[FC_WRITE_COIL]) == (1, 1, 1)
    assert (two[FC_WRITE_REGISTER], two[FC_WRITE_REGISTERS], two[FC_WRITE_COILS]) == (0, 2, 1)
    assert site.sim.get_value(2, "u16") == 42


async def test_out_of_range_read_only_unknown_refuse_the_whole_command(site: CommandSite) -> None:
    """Any invalid point refuses the command: nothing written, each point named with why."""
    site.sim.set_value(1, "u16", 0)
    site.sim.stats(1).reset()
    reply = await site.write(
        1,
        {"u16": 5, "i16": 1001, "status": 1, "voltage": 3.0, "nope": 1, "setpoint": "high",
         "mode": "turbo", "u32": -1},
    )  # fmt: skip
    assert reply["code"] == ReplyCode.VALUE_OUT_OF_RANGE  # the first failure's code
    failed = reply["data"]["failed"]
    assert set(failed) == {"i16", "status", "voltage", "nope", "setpoint", "mode", "u32"}
    assert reply["data"]["written"] == []
    assert "above the declared max 1000" in failed["i16"]
    assert "read-only" in failed["status"]
    assert "read-only" in failed["voltage"]
    assert failed["nope"] == "unknown measurepoint"
    assert "takes a number" in failed["setpoint"]
    assert "'off' (0), 'standby' (1), 'run' (2)" in failed["mode"]
    assert "out of range 0..4294967295" in failed["u32"]
    assert "nothing written" in reply["message"]
    for name in ("i16", "status", "voltage", "nope", "setpoint", "mode", "u32"):
        assert f"{name}: " in reply["message"]
    assert site.sim.stats(1).requests[FC_WRITE_REGISTER] == 0
    assert site.sim.stats(1).requests[FC_WRITE_REGISTERS] == 0
    assert site.sim.get_value(1, "u16") == 0


async def test_single_refusal_codes(site: CommandSite) -> None:
    """A lone read-only point answers 2005, a lone unknown point 2004, a bad value 2006."""
    assert (await site.write(1, {"status": 3}))["code"] == ReplyCode.POINT_NOT_WRITABLE
    assert (await site.write(1, {"bogus": 3}))["code"] == ReplyCode.POINT_UNKNOWN
    assert (await site.write(1, {"setpoint": 50.1}))["code"] == ReplyCode.VALUE_OUT_OF_RANGE
    assert (await site.write(1, {"relay": "on"}))["code"] == ReplyCode.VALUE_OUT_OF_RANGE


async def test_device_timeout_is_reported_offline(site: CommandSite) -> None:
    """A silent unit: the write times out, the reply says offline and names the points."""
    site.sim.set_value(2, "i16", 0)
    site.sim.faults(2).silent = True
    reply = await site.write(2, {"u16": 1, "i16": 2})
    assert reply["code"] == ReplyCode.DEVICE_OFFLINE, reply
    assert reply["data"]["written"] == []
    assert "device offline: no answer" in reply["data"]["failed"]["u16"]
    assert "not written: the device stopped answering" in reply["data"]["failed"]["i16"]
    site.sim.faults(2).silent = False
    assert site.sim.get_value(2, "i16") == 0


async def test_modbus_exception_and_partial_success(site: CommandSite) -> None:
    """A hole at one written address: the others are written, the reply is precise."""
    site.sim.faults(1).add_holes(Table.HOLDING, [41])
    reply = await site.write(1, {"i16": 5, "trip": 3, "u16": 9})
    assert reply["code"] == ReplyCode.PARTIAL_FAILURE, reply
    assert reply["data"]["written"] == ["i16", "u16"]
    assert set(reply["data"]["failed"]) == {"trip"}
    assert "Modbus exception 2 (illegal data address)" in reply["data"]["failed"]["trip"]
    assert "written: i16, u16" in reply["message"]
    assert (site.sim.get_value(1, "i16"), site.sim.get_value(1, "u16")) == (5, 9)
    only = await site.write(1, {"trip": 3})
    assert only["code"] == ReplyCode.DEVICE_WRITE_FAILED


async def test_duplicate_id_is_executed_once(site: CommandSite) -> None:
    """A command redelivered with the same id is answered again but written only once."""
    site.sim.stats(1).reset()
    # The emulator numbers commands from its id counter: rewind it to send the same id.
    site.emulator._ids = itertools.count(777)
    first = await site.write(1, {"u16": 11})
    site.sim.set_value(1, "u16", 3)  # were it written again, it would read 11
    site.emulator._ids = itertools.count(777)
    second = await site.write(1, {"u16": 11})
    assert first == second
    assert first["code"] == 200
    assert site.sim.stats(1).requests[FC_WRITE_REGISTER] == 1
    assert site.sim.get_value(1, "u16") == 3


async def test_service_binds_params_and_returns_outputs(site: CommandSite) -> None:
    """A service writes its bound params in order and replies with its outputs."""
    site.sim.set_value(1, "voltage", 230.5)
    reply = await site.command(1, "thing.service.start", {"speed": 42.5, "run": True})
    assert reply["code"] == 200, reply
    assert reply["data"] == {"f32": 42.5, "relay": True, "mode": "run", "voltage": 230.5}
    assert site.sim.get_value(1, "f32") == 42.5
    assert site.sim.get_value(1, "mode") == "run"


async def test_service_params_validated(site: CommandSite) -> None:
    """Missing, unknown, mistyped and out-of-range service params: 2003, nothing written."""
    site.sim.stats(1).reset()
    reply = await site.command(1, "thing.service.start", {"speed": 120, "extra": 1})
    assert reply["code"] == ReplyCode.COMMAND_INVALID_PARAMS
    failed = reply["data"]["failed"]
    assert failed["run"] == "missing parameter"
    assert "above its max 100" in failed["speed"]
    assert failed["extra"].startswith("unknown parameter")
    mistyped = await site.command(1, "thing.service.start", {"speed": 1, "run": "yes"})
    assert mistyped["code"] == ReplyCode.COMMAND_INVALID_PARAMS
    unknown = await site.command(1, "thing.service.launch", {})
    assert unknown["code"] == ReplyCode.POINT_UNKNOWN
    assert "services: start, reset" in unknown["message"]
    assert site.sim.stats(1).requests[FC_WRITE_REGISTER] == 0
    assert site.sim.stats(1).requests[FC_WRITE_REGISTERS] == 0


async def test_service_stops_at_first_failure(site: CommandSite) -> None:
    """A service whose first write is rejected does not run the second."""
    site.sim.set_value(1, "u16", 0)
    site.sim.faults(1).add_holes(Table.HOLDING, [41])
    reply = await site.command(1, "thing.service.reset", {})
    assert reply["code"] == ReplyCode.DEVICE_WRITE_FAILED, reply
    assert reply["data"]["written"] == []
    assert "not written: an earlier write failed" in reply["data"]["failed"]["u16"]
    assert site.sim.get_value(1, "u16") == 0
    site.sim.faults(1).holes.clear()
    done = await site.command(1, "thing.service.reset", {})
    assert (done["code"], done["data"]) == (200, {})
    assert (site.sim.get_value(1, "trip"), site.sim.get_value(1, "u16")) == (1, 7)


async def test_measurepoint_get(site: CommandSite) -> None:
    """get reads the named points now; unknown names are refused by name."""
    site.sim.set_value(1, "voltage", 229.75)
    site.sim.set_value(1, "energy", 123456)
    reply = await site.command(1, "thing.service.measurepoint.get", ["voltage", "energy"])
    assert reply == {**reply, "code": 200, "data": {"voltage": 229.75, "energy": 123456}}
    bad = await site.command(1, "thing.service.measurepoint.get", ["voltage", "watts"])
    assert bad["code"] == ReplyCode.POINT_UNKNOWN
    assert "watts: unknown measurepoint" in bad["message"]


async def test_commands_for_unknown_disabled_devices_are_refused(site: CommandSite) -> None:
    """Unknown sub-device and a disabled one: clear errors, nothing written."""
    unknown = await site.emulator.send_command(
        "gwPK", "gwDK", "thing.service.measurepoint.set", {"u16": 1}
    )
    assert unknown["code"] == ReplyCode.SUB_DEVICE_UNKNOWN
    registry = site.daemon.uplink.registry if site.daemon.uplink else None
    assert registry is not None
    sub = registry.get("m1")
    assert sub is not None
    site.sim.stats(1).reset()
    sub.enabled = False  # as combine.disable leaves it (the cloud would no longer route)
    disabled = await site.write(1, {"u16": 1})
    assert disabled["code"] == ReplyCode.SUB_DEVICE_DISABLED
    sub.enabled, sub.online = True, False
    offline = await site.write(1, {"u16": 1})
    assert offline["code"] == ReplyCode.SUB_DEVICE_NOT_LOGGED_IN
    assert site.sim.stats(1).requests[FC_WRITE_REGISTER] == 0


class ClampingUnit(SimulatedUnit):
    """A device that silently limits register 2 (`u16`) to 1000, as drives limit setpoints."""

    def wire_write(self, table: Table, address: int, values: list[int]) -> None:
        """Store the write, clamping u16."""
        if table is Table.HOLDING and address == 2:
            values = [min(v, 1000) for v in values]
        super().wire_write(table, address, values)


def clamping_units() -> list[SimulatedUnit]:
    motions = dict.fromkeys((p.measurepoint for p in model().points), Motion.FIXED)
    return [ClampingUnit(unit, model(), motions=motions) for unit in (1, 2)]


async def test_read_back_mismatch_is_reported(tmp_path: Path) -> None:
    """verify_writes: a value the device does not hold after the write is an error."""
    async with running_site(tmp_path, units=clamping_units(), m2={"verify_writes": False}) as site:
        reply = await site.write(1, {"u16": 5000, "i16": 3})
        assert reply["code"] == ReplyCode.PARTIAL_FAILURE, reply
        assert reply["data"]["written"] == ["i16"]
        assert reply["data"]["failed"] == {"u16": "wrote 5000 but the device reads back 1000"}
        only = await site.write(1, {"u16": 4000})
        assert only["code"] == ReplyCode.WRITE_NOT_VERIFIED
        # Without verification the same device answers 200: the write was acknowledged.
        unverified = await site.write(2, {"u16": 5000})
        assert unverified["code"] == 200
        assert site.sim.get_value(2, "u16") == 1000


async def test_busy_bus_answers_timeout_without_writing(tmp_path: Path) -> None:
    """A deadline shorter than a worst-case request: COMMAND_TIMEOUT, nothing written."""

    def factory(daemon: Daemon) -> CommandHandler:
        return command_handler_factory(daemon, deadline=0.05, reply_by=0.05)

    async with running_site(tmp_path, commands=factory) as site:
        site.sim.set_value(1, "u16", 0)
        site.sim.faults(2).turnaround = 0.25  # the other device keeps the bus busy
        site.sim.stats(1).reset()
        reply = await site.write(1, {"u16": 5, "i16": 6})
        assert reply["code"] == ReplyCode.COMMAND_TIMEOUT, reply
        assert reply["data"]["written"] == []
        assert set(reply["data"]["failed"]) == {"u16", "i16"}
        assert "deadline" in reply["data"]["failed"]["u16"]
        read = await site.command(1, "thing.service.measurepoint.get", ["u16"])
        assert read["code"] == ReplyCode.COMMAND_TIMEOUT
        assert site.sim.stats(1).requests[FC_WRITE_REGISTER] == 0
        assert site.sim.get_value(1, "u16") == 0


async def test_get_of_a_non_finite_value(site: CommandSite) -> None:
    """A float register holding NaN cannot go out as JSON: the point is named, null in data."""
    site.sim.unit(1).wire_write(Table.HOLDING, 15, [0x7FC0, 0x0000])  # float32 NaN
    site.sim.set_value(1, "u16", 8)
    reply = await site.command(1, "thing.service.measurepoint.get", ["f32", "u16"])
    assert reply["code"] == ReplyCode.DEVICE_READ_FAILED, reply
    assert reply["data"] == {"f32": None, "u16": 8}
    assert "f32: the device reports nan" in reply["message"]
