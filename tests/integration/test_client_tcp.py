"""The pymodbus seam over Modbus TCP against the device simulator (real sockets on loopback)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gatewayd.config.models import DeviceModel, Table
from gatewayd.modbus.client import (
    HoldingRegistersAnswer,
    InputRegistersAnswer,
    ModbusClient,
    PymodbusClient,
    inter_frame_delay,
    make_client,
)
from gatewayd.modbus.errors import BusUnavailable, DeviceRejected, DeviceTimeout
from gatewayd.sim.device import DeviceSimulator
from tests.integration.modbus_fixtures import still_units, tcp_bus
from tests.support import free_port

#: Generous guard: a request bounded by a sub-second device timeout must end far sooner.
#: (pymodbus' own timeout is an hour, so a regression shows as this guard firing.)
GUARD = 10.0


@pytest.fixture
async def client(modbus_sim: DeviceSimulator) -> AsyncIterator[ModbusClient]:
    """A connected TCP client to the simulator."""
    client = make_client(tcp_bus(modbus_sim.port))
    await client.connect()
    yield client
    await client.close()


async def test_reads_every_table(modbus_sim: DeviceSimulator, client: ModbusClient) -> None:
    """Holding, input, coil and discrete reads return exactly the simulator's content."""
    unit = modbus_sim.unit(1)
    unit.set_value("u16", 0xBEEF)
    unit.set_value("i16", -2)
    unit.set_value("energy_total", 0x12345678)
    unit.set_value("relay2", True)
    unit.set_value("door_open", True)

    assert await client.read(1, Table.HOLDING, 1, 2, timeout=1) == [0xFFFE, 0xBEEF]
    assert await client.read(1, Table.INPUT, 2, 2, timeout=1) == [0x1234, 0x5678]
    assert await client.read(1, Table.COIL, 0, 9, timeout=1) == [0, 0, 0, 0, 0, 0, 0, 1, 0]
    assert await client.read(1, Table.DISCRETE, 2, 3, timeout=1) == [0, 1, 0]
    # Unmapped addresses read as zeros, like most devices.
    assert await client.read(1, Table.HOLDING, 1000, 3, timeout=1) == [0, 0, 0]
    assert dict(unit.stats.requests) == {1: 1, 2: 1, 3: 2, 4: 1}


async def test_register_answers_use_the_one_call_decoders(
    modbus_sim: DeviceSimulator, client: ModbusClient
) -> None:
    """FC3/FC4 answers go through the client's own answer classes, 125 registers intact."""
    unit = modbus_sim.unit(1)
    unit.set_value("u16", 0xBEEF)
    assert isinstance(client, PymodbusClient)
    decoder = client._client.ctx.framer.decoder  # type: ignore[union-attr]
    assert isinstance(decoder.decode(bytes([3, 2, 0, 7])), HoldingRegistersAnswer)
    assert isinstance(decoder.decode(bytes([4, 2, 0, 7])), InputRegistersAnswer)
    # Answers are read with a small buffer, not asyncio's 256 KiB one per event.
    assert client._client.ctx.transport.max_size == 4096  # type: ignore[union-attr]
    # pymodbus' own timer is off: each request is bounded by the client's timeout alone.
    assert client._client.ctx.comm_params.timeout_connect is None  # type: ignore[union-attr]
    words = await client.read(1, Table.HOLDING, 0, 125, timeout=1)
    assert len(words) == 125
    assert words[2] == 0xBEEF


async def test_units_are_independent(modbus_sim: DeviceSimulator, client: ModbusClient) -> None:
    """Two unit ids behind one endpoint answer with their own registers."""
    modbus_sim.set_value(1, "u16", 111)
    modbus_sim.set_value(2, "u16", 222)
    assert await client.read(1, Table.HOLDING, 2, 1, timeout=1) == [111]
    assert await client.read(2, Table.HOLDING, 2, 1, timeout=1) == [222]


async def test_write_function_codes(modbus_sim: DeviceSimulator, client: ModbusClient) -> None:
    """Single writes use FC5/FC6, multi-value or `multiple=True` writes use FC15/FC16."""
    stats = modbus_sim.stats(1)
    await client.write(1, Table.COIL, 0, [1], timeout=1, multiple=False)
    await client.write(1, Table.COIL, 6, [1, 0], timeout=1, multiple=False)
    await client.write(1, Table.HOLDING, 2, [4242], timeout=1, multiple=False)
    await client.write(1, Table.HOLDING, 3, [0xFFFF, 0xFFF0], timeout=1, multiple=False)
    await client.write(1, Table.HOLDING, 1, [7], timeout=1, multiple=True)
    await client.write(1, Table.COIL, 7, [1], timeout=1, multiple=True)

    assert dict(stats.requests) == {5: 1, 15: 2, 6: 1, 16: 2}
    assert modbus_sim.get_value(1, "relay") is True
    assert modbus_sim.get_value(1, "relay2") is True
    assert modbus_sim.get_value(1, "u16") == 4242
    assert modbus_sim.get_value(1, "i32") == -16
    assert modbus_sim.get_value(1, "i16") == 7
    assert await client.read(1, Table.COIL, 6, 2, timeout=1) == [1, 1]


async def test_write_rejects_read_only_tables_and_bad_values(client: ModbusClient) -> None:
    """Input/discrete writes, out-of-range words and non-0/1 coils are ValueErrors."""
    with pytest.raises(ValueError, match="read-only"):
        await client.write(1, Table.INPUT, 0, [1], timeout=1, multiple=False)
    with pytest.raises(ValueError, match="read-only"):
        await client.write(1, Table.DISCRETE, 0, [1], timeout=1, multiple=False)
    with pytest.raises(ValueError, match=r"0\.\.65535"):
        await client.write(1, Table.HOLDING, 0, [70000], timeout=1, multiple=False)
    with pytest.raises(ValueError, match="0 or 1"):
        await client.write(1, Table.COIL, 0, [2], timeout=1, multiple=False)
    with pytest.raises(ValueError, match="count 126"):
        await client.read(1, Table.HOLDING, 0, 126, timeout=1)
    with pytest.raises(ValueError, match=r"outside 0\.\.65535"):
        await client.read(1, Table.HOLDING, 65530, 10, timeout=1)


async def test_exception_02_is_device_rejected(
    modbus_sim: DeviceSimulator, client: ModbusClient
) -> None:
    """A read covering a hole answers exception 02 → DeviceRejected(2); around it reads fine."""
    modbus_sim.faults(1).add_holes(Table.HOLDING, [40])
    with pytest.raises(DeviceRejected) as caught:
        await client.read(1, Table.HOLDING, 30, 20, timeout=1)
    assert caught.value.code == 2
    assert await client.read(1, Table.HOLDING, 41, 2, timeout=1) == [0, 0]
    assert modbus_sim.stats(1).exception_02 == 1


async def test_long_read_rejected_with_03(
    modbus_sim: DeviceSimulator, client: ModbusClient
) -> None:
    """A read longer than the device's maximum answers exception 03 → DeviceRejected(3)."""
    modbus_sim.faults(1).max_registers = 10
    with pytest.raises(DeviceRejected) as caught:
        await client.read(1, Table.HOLDING, 0, 11, timeout=1)
    assert caught.value.code == 3
    assert len(await client.read(1, Table.HOLDING, 0, 10, timeout=1)) == 10


async def test_silent_unit_times_out_and_bus_keeps_working(
    modbus_sim: DeviceSimulator, client: ModbusClient
) -> None:
    """A silent unit costs its own timeout only; the connection stays up for the others."""
    modbus_sim.faults(2).silent = True
    modbus_sim.set_value(1, "u16", 5)
    async with asyncio.timeout(GUARD):
        for _ in range(6):  # more than pymodbus' default "retries + 3" disconnect threshold
            with pytest.raises(DeviceTimeout):
                await client.read(2, Table.HOLDING, 2, 1, timeout=0.1)
    assert client.connected
    assert await client.read(1, Table.HOLDING, 2, 1, timeout=1) == [5]
    assert modbus_sim.stats(2).requests[3] == 6  # every request reached the device: no retries


async def test_late_answer_does_not_desynchronise(
    modbus_sim: DeviceSimulator, client: ModbusClient
) -> None:
    """An answer arriving after its timeout is discarded; the next request gets its own answer."""
    unit = modbus_sim.unit(1)
    unit.faults.turnaround = 0.4
    unit.set_value("u16", 1)
    with pytest.raises(DeviceTimeout):
        await client.read(1, Table.HOLDING, 2, 1, timeout=0.1)
    # The late answer ([1]) lands while this request is outstanding; it must be skipped.
    unit.set_value("u16", 2)
    assert await client.read(1, Table.HOLDING, 2, 1, timeout=3) == [2]
    unit.faults.turnaround = 0
    unit.set_value("u16", 3)
    assert await client.read(1, Table.HOLDING, 2, 1, timeout=1) == [3]
    assert unit.stats.requests[3] == 3
    assert isinstance(client, PymodbusClient)
    assert client.late_answers == 0  # skipped by transaction id while a request waited


async def test_refused_port_is_bus_unavailable() -> None:
    """Connecting to a port nobody listens on raises BusUnavailable, not a pymodbus error."""
    client = make_client(tcp_bus(free_port()))
    with pytest.raises(BusUnavailable, match="cannot connect"):
        await client.connect()
    assert not client.connected
    with pytest.raises(BusUnavailable):
        await client.read(1, Table.HOLDING, 0, 1, timeout=1)


async def test_connection_lost_is_bus_unavailable(modbus_model: DeviceModel) -> None:
    """When the server goes away mid-request the request fails with BusUnavailable at once."""
    sim = DeviceSimulator(still_units(modbus_model, 1))
    await sim.start()
    client = make_client(tcp_bus(sim.port))
    await client.connect()
    sim.faults(1).silent = True
    request = asyncio.ensure_future(client.read(1, Table.HOLDING, 0, 1, timeout=GUARD * 2))
    await asyncio.sleep(0)  # let the request go out before the server stops
    await sim.stop()
    async with asyncio.timeout(GUARD):
        with pytest.raises(BusUnavailable):
            await request
    assert not client.connected
    with pytest.raises(BusUnavailable):
        await client.read(1, Table.HOLDING, 0, 1, timeout=1)
    await client.close()


async def test_reconnect_after_server_restart(modbus_sim: DeviceSimulator) -> None:
    """After BusUnavailable, connect() again works once the endpoint is back."""
    port = modbus_sim.port
    client = make_client(tcp_bus(port))
    await client.connect()
    await modbus_sim.stop()
    with pytest.raises(BusUnavailable):
        await client.read(1, Table.HOLDING, 0, 1, timeout=1)
    with pytest.raises(BusUnavailable):
        await client.connect()
    restarted = DeviceSimulator([modbus_sim.unit(1)], port=port)
    async with restarted:
        restarted.set_value(1, "u16", 77)
        await client.connect()
        assert await client.read(1, Table.HOLDING, 2, 1, timeout=1) == [77]
    await client.close()


def test_tcp_has_no_inter_frame_delay() -> None:
    """Modbus TCP frames need no RS-485 silence."""
    assert inter_frame_delay(tcp_bus(502)) == 0.0


async def test_cancel_landing_with_the_answer_is_not_dropped(modbus_sim: DeviceSimulator) -> None:
    """A stop that arrives in the same loop turn as the answer still cancels the read.

    pymodbus waits with `asyncio.wait_for`, which on Python 3.11 returns the answer and drops
    such a cancellation: a poller being shut down then kept polling (seen in CI as a
    20 s shutdown). The cancel is sent from pymodbus' own receive hook, right before it
    resolves the answer, which is exactly that race.
    """
    modbus_sim.set_value(1, "u16", 5)
    client = PymodbusClient(tcp_bus(modbus_sim.port))
    reader: asyncio.Task[list[int]] | None = None
    cancels_sent = 0
    on_pdu = client._on_pdu

    def cancel_on_answer(sending: bool, pdu: Any) -> Any:
        nonlocal cancels_sent
        if not sending and reader is not None:
            reader.cancel()
            cancels_sent += 1
        return on_pdu(sending, pdu)

    client._on_pdu = cancel_on_answer  # type: ignore[method-assign]
    await client.connect()
    try:
        reader = asyncio.create_task(client.read(1, Table.HOLDING, 2, 1, timeout=GUARD))
        with pytest.raises(asyncio.CancelledError):
            await reader
        assert cancels_sent == 1
        assert reader.cancelled()
        # The client is still usable for the next request.
        reader = None
        assert await client.read(1, Table.HOLDING, 2, 1, timeout=GUARD) == [5]
    finally:
        await client.close()
