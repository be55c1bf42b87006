"""The device simulator: moving values on an injected clock, pins, writes, faults, counters."""

from __future__ import annotations

import math

import pytest

from gatewayd.config.models import Config, DeviceModel, PointConfig, Table
from gatewayd.modbus.client import make_client
from gatewayd.modbus.codec import CodecError
from gatewayd.modbus.errors import DeviceRejected, DeviceTimeout
from gatewayd.sim.device import DeviceSimulator, SimulatedUnit
from gatewayd.sim.device_motion import FLIP_EVERY, PERIOD, Motion, default_motion
from tests.integration.modbus_fixtures import tcp_bus


class FakeClock:
    """A settable monotonic clock: simulated values move only when the test says so."""

    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now


def _point(model: DeviceModel, name: str) -> PointConfig:
    return next(p for p in model.points if p.measurepoint == name)


def test_default_motions_by_type(modbus_model: DeviceModel) -> None:
    """Floats sine, counters count, bools flip, enums cycle, strings stay, ints ramp."""
    expected = {
        "relay": Motion.FLIP,
        "door_open": Motion.FLIP,
        "flags_bit9": Motion.FLIP,
        "f32": Motion.SINE,
        "setpoint": Motion.SINE,  # a scaled integer moves like an analogue value
        "energy_total": Motion.COUNTER,
        "mode": Motion.CYCLE,
        "name": Motion.FIXED,
        "u16": Motion.RAMP,
        "bcd8": Motion.RAMP,
    }
    assert {n: default_motion(_point(modbus_model, n)) for n in expected} == expected


def test_values_move_deterministically(modbus_model: DeviceModel) -> None:
    """With an injected clock every moving value is exactly predictable."""
    clock = FakeClock()
    unit = SimulatedUnit(1, modbus_model, clock=clock)
    start = {n: unit.get_value(n) for n in ("relay", "energy_total", "mode", "f32", "u16")}
    assert start == {"relay": False, "energy_total": 1000, "mode": "off", "f32": 50.0, "u16": 0}

    clock.now += PERIOD / 4  # a quarter period: sine at its top, ramp a quarter up
    assert unit.get_value("f32") == 100.0
    assert unit.get_value("u16") == 25
    assert unit.get_value("energy_total") == 1000 + PERIOD / 4
    assert unit.get_value("relay") is (int(PERIOD / 4 // FLIP_EVERY) % 2 == 1)
    assert unit.get_value("mode") == ["off", "standby", "run"][int(PERIOD / 4 // FLIP_EVERY) % 3]

    clock.now += FLIP_EVERY  # one more flip step
    assert unit.get_value("relay") is (int((PERIOD / 4 + FLIP_EVERY) // FLIP_EVERY) % 2 == 1)
    assert unit.get_value("name") == "SIM name"


def test_counter_only_rises(modbus_model: DeviceModel) -> None:
    """A counter point never goes down while time moves on."""
    clock = FakeClock()
    unit = SimulatedUnit(1, modbus_model, clock=clock)
    readings = []
    for _ in range(50):
        clock.now += 7.25  # exact in binary, so the expected count is exact
        readings.append(unit.get_value("energy_total"))
    assert readings == sorted(readings)
    assert readings[-1] == 1000 + math.floor(50 * 7.25)


def test_pin_and_release(modbus_model: DeviceModel) -> None:
    """A pinned point holds its value while time passes; released, it moves again."""
    clock = FakeClock()
    unit = SimulatedUnit(1, modbus_model, clock=clock)
    unit.set_value("f32", 12.25)
    clock.now += PERIOD / 4
    assert unit.get_value("f32") == 12.25
    unit.release("f32")
    assert unit.get_value("f32") == 100.0


def test_bad_values_and_names_are_clear_errors(modbus_model: DeviceModel) -> None:
    """Unknown measurepoints are KeyErrors; values the codec cannot encode are CodecErrors."""
    unit = SimulatedUnit(1, modbus_model)
    with pytest.raises(KeyError, match="no measurepoint 'nope'"):
        unit.set_value("nope", 1)
    with pytest.raises(CodecError):
        unit.set_value("u16", 70000)
    with pytest.raises(ValueError, match="unknown measurepoints"):
        SimulatedUnit(1, modbus_model, motions={"nope": Motion.FIXED})


async def test_wire_writes_pin_and_show_in_get_value(modbus_model: DeviceModel) -> None:
    """FC6/FC16/FC5 writes land in the datastore, stop the motion and show in get_value."""
    clock = FakeClock()
    async with DeviceSimulator({1: modbus_model}, clock=clock) as sim:
        client = make_client(tcp_bus(sim.port))
        await client.connect()
        await client.write(1, Table.HOLDING, 15, [0x4049, 0x0FDB], timeout=1, multiple=True)
        await client.write(1, Table.HOLDING, 2, [1234], timeout=1, multiple=False)
        await client.write(1, Table.COIL, 0, [1], timeout=1, multiple=False)
        clock.now += PERIOD / 3
        assert sim.get_value(1, "f32") == 3.1415927
        assert sim.get_value(1, "u16") == 1234
        assert sim.get_value(1, "relay") is True
        assert sim.get_value(1, "i16") == 33  # untouched, so still ramping: 100 * (1/3)
        assert await client.read(1, Table.HOLDING, 15, 2, timeout=1) == [0x4049, 0x0FDB]
        await client.close()


async def test_counters_and_fault_knobs(modbus_model: DeviceModel) -> None:
    """Requests are counted per function code; holes, long reads and silence are counted too."""
    async with DeviceSimulator({1: modbus_model, 5: modbus_model}) as sim:
        client = make_client(tcp_bus(sim.port))
        await client.connect()
        sim.faults(5).add_holes(Table.INPUT, [4, 5])
        sim.faults(5).max_registers = 8
        await client.read(5, Table.INPUT, 0, 4, timeout=1)
        for start in (2, 5):
            with pytest.raises(DeviceRejected):
                await client.read(5, Table.INPUT, start, 3, timeout=1)
        with pytest.raises(DeviceRejected) as long_read:
            await client.read(5, Table.HOLDING, 100, 9, timeout=1)
        assert long_read.value.code == 3
        sim.faults(5).silent = True
        with pytest.raises(DeviceTimeout):
            await client.read(5, Table.HOLDING, 0, 1, timeout=0.1)
        await client.read(1, Table.COIL, 0, 8, timeout=1)

        stats = sim.stats(5)
        assert dict(stats.requests) == {4: 3, 3: 2}
        assert stats.exception_02 == 2
        assert dict(stats.exceptions) == {2: 2, 3: 1}
        assert stats.answers == 4
        assert sim.stats(1).total_requests == 1
        assert sim.total_requests() == 6
        stats.reset()
        assert (stats.total_requests, stats.exception_02, stats.answers) == (0, 0, 0)
        await client.close()


async def test_simulator_lifecycle_and_units(modbus_model: DeviceModel) -> None:
    """start/stop toggle `running`; the port is bound; unknown units are KeyErrors."""
    sim = DeviceSimulator({3: modbus_model, 4: modbus_model})
    assert not sim.running
    await sim.start()
    try:
        assert sim.running
        assert sim.port > 0
        assert sim.unit_ids == [3, 4]
        with pytest.raises(KeyError, match="no simulated unit 9"):
            sim.unit(9)
        with pytest.raises(RuntimeError, match="already started"):
            await sim.start()
    finally:
        await sim.stop()
    assert not sim.running
    await sim.stop()  # idempotent


def test_constructor_errors(modbus_model: DeviceModel) -> None:
    """Duplicate unit ids and RTU without a serial port are refused up front."""
    units = [SimulatedUnit(1, modbus_model), SimulatedUnit(1, modbus_model)]
    with pytest.raises(ValueError, match="share a unit id"):
        DeviceSimulator(units)
    with pytest.raises(ValueError, match="serial_port"):
        DeviceSimulator({1: modbus_model}, mode="rtu")


async def test_from_config_serves_a_bus(modbus_model: DeviceModel) -> None:
    """from_config simulates the enabled devices of one bus with their unit ids and orders."""
    from tests.support import free_port

    port = free_port()
    config = Config.model_validate(
        {
            "gateway": {"product_key": "gp", "device_key": "gd", "broker": {"host": "x"}},
            "buses": [
                {"name": "plant", "type": "tcp", "host": "127.0.0.1", "port": port},
                {"name": "other", "type": "tcp", "host": "127.0.0.1", "port": 1},
            ],
            "devices": [
                {"name": "a", "bus": "plant", "unit_id": 7, "model": "test-all-types",
                 "product_key": "p", "device_key": "a", "word_order": "little"},
                {"name": "b", "bus": "plant", "unit_id": 8, "model": "test-all-types",
                 "product_key": "p", "device_key": "b", "enabled": False},
                {"name": "c", "bus": "other", "unit_id": 9, "model": "test-all-types",
                 "product_key": "p", "device_key": "c"},
            ],
            "models": {"test-all-types": modbus_model.model_dump()},
        }
    )  # fmt: skip
    async with DeviceSimulator.from_config(config, "plant") as sim:
        assert sim.port == port
        assert sim.unit_ids == [7]
        sim.set_value(7, "u32", 1)
        client = make_client(tcp_bus(port))
        await client.connect()
        assert await client.read(7, Table.HOLDING, 5, 2, timeout=1) == [1, 0]  # little words
        await client.close()
    with pytest.raises(KeyError, match="no bus named 'nope'"):
        DeviceSimulator.from_config(config, "nope")
