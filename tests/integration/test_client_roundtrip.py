"""Writes of every data type round-trip: codec encode → client write → simulator → read → decode."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import pytest

from gatewayd.config.models import DeviceConfig, DeviceModel, Order, PointConfig, Table
from gatewayd.modbus import codec
from gatewayd.modbus.client import ModbusClient, make_client
from gatewayd.samples import Value
from gatewayd.sim.device import DeviceSimulator, SimulatedUnit
from gatewayd.sim.device_motion import Motion
from tests.integration.modbus_fixtures import tcp_bus

#: Values worth writing per measurepoint of the all-types model: extremes and fractions.
VALUES: dict[str, list[Value]] = {
    "relay": [True, False],
    "relay2": [True, False],
    "flags_bit0": [True, False],
    "flags_bit9": [True, False],
    "i16": [-32768, 32767, -2],
    "u16": [0, 65535],
    "i32": [-(2**31), 2**31 - 1, -70000],
    "u32": [2**32 - 1, 65536],
    "i64": [-(2**63), 2**63 - 1, -5],
    "u64": [2**64 - 1, 2**40 + 3],
    "f32": [1.1, -1234.5, 3.0e38],
    "f64": [3.141592653589793, -1e300, 5e-324],
    "name": ["ABCDEFGHIJ", "hi"],
    "bcd4": [1234, 9999, 0],
    "bcd8": [12345678, 99999999],
    "mode": ["run", "off", "standby"],
    "setpoint": [20.5, -5.0, -100.0],
    "f32_swapped": [2.5, -0.75],
}

#: Device-level (byte_order, word_order) overrides: one unit per combination.
ORDERS = list(itertools.product(Order, Order))


def _device(unit: int, byte_order: Order, word_order: Order) -> DeviceConfig:
    return DeviceConfig(
        name=f"dev{unit}",
        bus="tcp-test",
        unit_id=unit,
        model="test-all-types",
        product_key="pk",
        device_key=f"dk{unit}",
        byte_order=byte_order,
        word_order=word_order,
    )


@pytest.fixture
async def order_sim(modbus_model: DeviceModel) -> AsyncIterator[DeviceSimulator]:
    """Four still units, one per (byte_order, word_order) device override."""
    still = dict.fromkeys((p.measurepoint for p in modbus_model.points), Motion.FIXED)
    units = [
        SimulatedUnit(uid, modbus_model, byte_order=bo, word_order=wo, motions=still)
        for uid, (bo, wo) in enumerate(ORDERS, start=1)
    ]
    async with DeviceSimulator(units) as sim:
        yield sim


@pytest.fixture
async def client(order_sim: DeviceSimulator) -> AsyncIterator[ModbusClient]:
    """A connected client to `order_sim`."""
    client = make_client(tcp_bus(order_sim.port))
    await client.connect()
    yield client
    await client.close()


async def _write_point(
    client: ModbusClient, unit: int, point: PointConfig, value: Value, orders: tuple[Order, Order]
) -> None:
    current = None
    if point.type.value == "bool" and point.bit is not None:
        [current] = await client.read(unit, point.table, point.address, 1, timeout=1)
    words = codec.encode(point, value, byte_order=orders[0], word_order=orders[1], current=current)
    await client.write(unit, point.table, point.address, words, timeout=1, multiple=len(words) > 1)


async def _read_point(
    client: ModbusClient, unit: int, point: PointConfig, orders: tuple[Order, Order]
) -> Value:
    words = await client.read(unit, point.table, point.address, point.register_count, timeout=1)
    return codec.decode(point, words, byte_order=orders[0], word_order=orders[1])


@pytest.mark.parametrize(("unit", "device_orders"), list(enumerate(ORDERS, start=1)))
async def test_every_type_round_trips(
    order_sim: DeviceSimulator,
    client: ModbusClient,
    modbus_model: DeviceModel,
    unit: int,
    device_orders: tuple[Order, Order],
) -> None:
    """Each writable-table point: the simulator decodes what we wrote, and we read it back."""
    device = _device(unit, *device_orders)
    written = 0
    for point in modbus_model.points:
        if point.table not in (Table.COIL, Table.HOLDING):
            continue
        orders = codec.point_orders(point, device, modbus_model)
        for value in VALUES[point.measurepoint]:
            await _write_point(client, unit, point, value, orders)
            assert order_sim.get_value(unit, point.measurepoint) == value, point.measurepoint
            assert await _read_point(client, unit, point, orders) == value, point.measurepoint
            written += 1
    assert written == sum(len(v) for v in VALUES.values())
    # Neighbouring bits of the shared flags register were not disturbed by the bit writes.
    assert order_sim.get_value(unit, "flags_bit0") is False
    assert order_sim.get_value(unit, "flags_bit9") is False


async def test_orders_change_the_wire_layout(
    order_sim: DeviceSimulator, client: ModbusClient
) -> None:
    """The same float lands as four different register layouts, one per order combination."""
    layouts = []
    for unit in range(1, len(ORDERS) + 1):
        order_sim.set_value(unit, "f32", 1.0)
        layouts.append(await client.read(unit, Table.HOLDING, 15, 2, timeout=1))
    assert layouts == [[0x3F80, 0], [0, 0x3F80], [0x803F, 0], [0, 0x803F]]


async def test_input_tables_round_trip_reads(
    order_sim: DeviceSimulator, client: ModbusClient, modbus_model: DeviceModel
) -> None:
    """Read-only tables: values pinned in the simulator decode identically at the client."""
    device = _device(2, *ORDERS[1])
    voltage = next(p for p in modbus_model.points if p.measurepoint == "voltage")
    energy = next(p for p in modbus_model.points if p.measurepoint == "energy_total")
    order_sim.set_value(2, "voltage", 231.7)
    order_sim.set_value(2, "energy_total", 4_000_000_000)
    assert (
        await _read_point(client, 2, voltage, codec.point_orders(voltage, device, modbus_model))
        == 231.7
    )
    assert (
        await _read_point(client, 2, energy, codec.point_orders(energy, device, modbus_model))
        == 4_000_000_000
    )
