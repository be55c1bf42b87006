"""DeviceReader against the real device simulator over Modbus TCP: what a read sends and reports."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from gatewayd.clock import SystemClock
from gatewayd.config.models import DeviceConfig, DeviceModel, Table
from gatewayd.mapping.decoding import PointReading, ResponseDecoder
from gatewayd.modbus.client import ModbusClient, make_client
from gatewayd.modbus.reader import UNREADABLE, DeviceReader, ReadOutcome
from gatewayd.sim.device import DeviceSimulator
from tests.integration.modbus_fixtures import still_units, tcp_bus

#: uint16 points with gaps of 2 (3-4, 7-8) that a gap fill of 4 reads through.
ADDRESSES = (0, 1, 2, 5, 6, 9, 10, 11)
MODEL = DeviceModel.model_validate({
    "name": "gappy",
    "points": [
        {"measurepoint": f"p{a}", "table": "holding", "address": a, "type": "uint16"}
        for a in ADDRESSES
    ],
})  # fmt: skip
DEVICE = DeviceConfig.model_validate(
    {"name": "d", "bus": "tcp-test", "unit_id": 1, "model": "gappy",
     "product_key": "pk", "device_key": "d"}
)  # fmt: skip


@pytest.fixture
async def sim() -> AsyncIterator[DeviceSimulator]:
    """One still unit of the gappy model; every register holds its own address."""
    async with DeviceSimulator(still_units(MODEL, 1)) as simulator:
        for address in ADDRESSES:
            simulator.set_value(1, f"p{address}", address)
        yield simulator


@pytest.fixture
async def client(sim: DeviceSimulator) -> AsyncIterator[ModbusClient]:
    """A real pymodbus client connected to the simulator."""
    connected = make_client(tcp_bus(sim.port, timeout="1s"))
    await connected.connect()
    yield connected
    await connected.close()


def good(reader: DeviceReader, outcome: ReadOutcome) -> list[PointReading]:
    """The outcome's good readings, decoded as the mapping stage decodes them."""
    return ResponseDecoder(reader.points, reader.orders).decode(outcome.responses).good


def fresh_reader(sim: DeviceSimulator) -> DeviceReader:
    """A reader that has learnt nothing yet about the device (no poll cycle ran)."""
    return DeviceReader(tcp_bus(sim.port, timeout="1s"), DEVICE, MODEL, gap_fill=4)


async def test_a_command_read_sends_only_its_own_requests(
    sim: DeviceSimulator, client: ModbusClient
) -> None:
    """read_indices (a command's read-back) sends its plan, no discovery probes: one
    request for p0 and p1, although the planner has gaps and a full plan still to check."""
    reader = fresh_reader(sim)
    responses = await reader.read_indices(client, [0, 1], SystemClock())
    assert [(r.request.start, r.request.count, r.words) for r in responses] == [(0, 2, [0, 1])]
    assert sim.stats(1).total_requests == 1
    assert reader.planner.probes() != []  # the discovery work is left to the poll cycle


async def test_a_hole_found_by_a_probe_fails_only_the_points_asked_for(
    sim: DeviceSimulator, client: ModbusClient
) -> None:
    """A poll of p0-p2 whose discovery reads find p10 unreadable: p0-p2 are good and p10
    is not in this outcome; it fails as unreadable the next time it is read."""
    sim.faults(1).add_holes(Table.HOLDING, [10])
    reader = fresh_reader(sim)
    clock = SystemClock()
    outcome = await reader.read(client, [0, 1, 2], clock)
    assert sim.stats(1).exception_02 >= 1  # a probe met the hole
    assert reader.unreadable_measurepoints == ("p10",)
    assert [(r.index, r.value) for r in good(reader, outcome)] == [(0, 0), (1, 1), (2, 2)]
    assert outcome.failed == []
    everything = await reader.read(client, range(len(ADDRESSES)), clock)
    assert [(r.index, r.error) for r in everything.failed] == [(6, UNREADABLE)]
    assert [r.value for r in good(reader, everything)] == [0, 1, 2, 5, 6, 9, 11]
