"""The client over Modbus RTU: a socat pty pair as the RS-485 line, RTU framing over TCP too."""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from gatewayd.config.models import DeviceModel, Table
from gatewayd.modbus.client import ModbusClient, PymodbusClient, inter_frame_delay, make_client
from gatewayd.modbus.errors import BusUnavailable, DeviceRejected, DeviceTimeout
from gatewayd.sim.device import DeviceSimulator
from tests.integration.modbus_fixtures import (
    SocatPair,
    rtu_over_tcp_bus,
    serial_bus,
    still_units,
)
from tests.support import async_wait_until, rtu_crc16

GUARD = 10.0


@pytest.fixture
async def rtu_line(
    socat_pty_pair: tuple[str, str], modbus_model: DeviceModel
) -> AsyncIterator[tuple[DeviceSimulator, ModbusClient]]:
    """Units 1 and 2 on one end of a pty pair, a connected RTU client on the other."""
    sim_end, client_end = socat_pty_pair
    async with DeviceSimulator(
        still_units(modbus_model, 1, 2), mode="rtu", serial_port=sim_end, baudrate=115200
    ) as sim:
        client = make_client(serial_bus(client_end))
        await client.connect()
        yield sim, client
        await client.close()


@pytest.fixture
async def rtu_over_tcp(
    modbus_model: DeviceModel,
) -> AsyncIterator[tuple[DeviceSimulator, ModbusClient]]:
    """Units 1 and 2 served with RTU framing on a TCP port, and a connected client."""
    async with DeviceSimulator(still_units(modbus_model, 1, 2), mode="rtu_over_tcp") as sim:
        client = make_client(rtu_over_tcp_bus(sim.port))
        await client.connect()
        yield sim, client
        await client.close()


@pytest.fixture(params=["serial", "rtu_over_tcp"])
def rtu(
    request: pytest.FixtureRequest,
) -> tuple[DeviceSimulator, ModbusClient]:
    """Both RTU transports, so every test below runs on each."""
    fixture = "rtu_line" if request.param == "serial" else "rtu_over_tcp"
    pair: tuple[DeviceSimulator, ModbusClient] = request.getfixturevalue(fixture)
    return pair


async def test_reads_and_writes(rtu: tuple[DeviceSimulator, ModbusClient]) -> None:
    """Every table reads and both writable tables write through RTU framing (CRC and all)."""
    sim, client = rtu
    sim.set_value(1, "u32", 0xCAFEF00D)
    sim.set_value(2, "u32", 7)
    sim.set_value(1, "door_open", True)
    sim.set_value(1, "voltage", 1.0)
    sim.set_value(1, "energy_total", 65536 + 5)
    assert await client.read(1, Table.HOLDING, 5, 2, timeout=1) == [0xCAFE, 0xF00D]
    assert await client.read(2, Table.HOLDING, 5, 2, timeout=1) == [0, 7]
    assert await client.read(1, Table.DISCRETE, 3, 1, timeout=1) == [1]
    assert await client.read(1, Table.INPUT, 0, 4, timeout=1) == [0x3F80, 0, 1, 5]

    await client.write(1, Table.COIL, 0, [1], timeout=1, multiple=False)
    await client.write(1, Table.HOLDING, 2, [321], timeout=1, multiple=False)
    await client.write(1, Table.HOLDING, 1, [0xFFFF, 9], timeout=1, multiple=True)
    assert sim.get_value(1, "relay") is True
    assert sim.get_value(1, "i16") == -1
    assert sim.get_value(1, "u16") == 9
    assert await client.read(1, Table.COIL, 0, 1, timeout=1) == [1]
    assert dict(sim.stats(1).requests) == {3: 1, 2: 1, 4: 1, 5: 1, 6: 1, 16: 1, 1: 1}


async def test_exception_02(rtu: tuple[DeviceSimulator, ModbusClient]) -> None:
    """An exception response over RTU becomes DeviceRejected(2)."""
    sim, client = rtu
    sim.faults(2).add_holes(Table.INPUT, [3])
    with pytest.raises(DeviceRejected) as caught:
        await client.read(2, Table.INPUT, 0, 4, timeout=1)
    assert caught.value.code == 2
    assert await client.read(2, Table.INPUT, 0, 3, timeout=1) == [0x4248, 0, 0]  # 50.0


async def test_silent_unit_on_shared_line(rtu: tuple[DeviceSimulator, ModbusClient]) -> None:
    """A silent unit times out; the other unit on the same line answers right after."""
    sim, client = rtu
    sim.faults(2).silent = True
    sim.set_value(1, "u16", 99)
    async with asyncio.timeout(GUARD):
        with pytest.raises(DeviceTimeout):
            await client.read(2, Table.HOLDING, 2, 1, timeout=0.1)
        with pytest.raises(DeviceTimeout):  # an id nobody has: also silence on RS-485
            await client.read(17, Table.HOLDING, 2, 1, timeout=0.1)
    assert await client.read(1, Table.HOLDING, 2, 1, timeout=1) == [99]


async def test_timeout_then_right_answer(rtu: tuple[DeviceSimulator, ModbusClient]) -> None:
    """After a timed-out request whose late answer is dropped, the next request gets its own.

    RTU frames carry no transaction id, so a late answer is only harmless once it has
    arrived: the test waits until the client has received and dropped it (the poller's
    timeouts exceed the device turnaround for the same reason).
    """
    sim, client = rtu
    assert isinstance(client, PymodbusClient)
    sim.faults(1).turnaround = 0.3
    sim.set_value(1, "u16", 1)
    with pytest.raises(DeviceTimeout):
        await client.read(1, Table.HOLDING, 2, 1, timeout=0.05)
    await async_wait_until(lambda: client.late_answers == 1, GUARD, "the late answer")
    assert sim.stats(1).answers == 1
    sim.faults(1).turnaround = 0
    sim.set_value(1, "u16", 2)
    assert await client.read(1, Table.HOLDING, 2, 1, timeout=1) == [2]
    assert await client.read(1, Table.HOLDING, 1, 2, timeout=1) == [50, 2]  # i16 still at 50


async def test_inter_frame_gap_on_the_line(
    socat_pty_pair: tuple[str, str], modbus_model: DeviceModel
) -> None:
    """Consecutive requests reach the device at least the configured silence apart."""
    sim_end, client_end = socat_pty_pair
    arrivals: list[float] = []
    gap = 0.05  # far above pty latency, so a missing gap could not pass by accident
    async with DeviceSimulator(
        still_units(modbus_model, 1),
        mode="rtu",
        serial_port=sim_end,
        baudrate=115200,
        on_request=lambda unit, function: arrivals.append(time.monotonic()),
    ):
        client = make_client(serial_bus(client_end, inter_frame_delay="50ms"))
        await client.connect()
        for _ in range(4):
            await client.read(1, Table.HOLDING, 0, 2, timeout=1)
        await client.close()
    spacings = [later - earlier for earlier, later in itertools.pairwise(arrivals)]
    assert len(spacings) == 3
    assert min(spacings) >= gap


def test_auto_inter_frame_delay() -> None:
    """Auto delay is 3.5 characters of 11 bits, and 1.75 ms above 19200 baud."""
    assert inter_frame_delay(serial_bus("/dev/null", baudrate=9600)) == pytest.approx(
        3.5 * 11 / 9600
    )
    assert inter_frame_delay(serial_bus("/dev/null", baudrate=115200)) == pytest.approx(0.00175)
    assert inter_frame_delay(serial_bus("/dev/null", inter_frame_delay="10ms")) == 0.01
    assert inter_frame_delay(rtu_over_tcp_bus(1, baudrate=19200)) == pytest.approx(3.5 * 11 / 19200)


async def test_missing_serial_port_is_bus_unavailable(tmp_path: Path) -> None:
    """A serial device that does not exist raises BusUnavailable on connect."""
    client = make_client(serial_bus(f"{tmp_path}/no-such-tty"))
    with pytest.raises(BusUnavailable):
        await client.connect()
    assert not client.connected


async def test_line_lost_is_bus_unavailable(tmp_path: Path, modbus_model: DeviceModel) -> None:
    """When the serial line disappears (socat ends), requests fail with BusUnavailable."""
    pair = SocatPair(tmp_path)
    try:
        async with DeviceSimulator(
            still_units(modbus_model, 1), mode="rtu", serial_port=pair.a, baudrate=115200
        ) as sim:
            sim.set_value(1, "u16", 3)
            client = make_client(serial_bus(pair.b))
            await client.connect()
            assert await client.read(1, Table.HOLDING, 2, 1, timeout=1) == [3]
            pair.stop()
            async with asyncio.timeout(GUARD):
                with pytest.raises(BusUnavailable):
                    await client.read(1, Table.HOLDING, 2, 1, timeout=GUARD * 2)
            assert not client.connected
            await client.close()
    finally:
        pair.stop()


async def test_crc_error_is_device_timeout_and_next_answer_is_good() -> None:
    """A reply with a bad CRC is dropped (DeviceTimeout); the next, sound reply is decoded."""
    replies = 0

    async def device(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal replies
        while request := await reader.read(8):
            unit = request[0]
            body = bytes([unit, 3, 2, 0x12, 0x34])
            crc = rtu_crc16(body)
            if replies == 0:
                crc = bytes([crc[0] ^ 0xFF, crc[1]])  # one corrupted byte on the line
            replies += 1
            writer.write(body + crc)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(device, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = make_client(rtu_over_tcp_bus(port))
    try:
        await client.connect()
        with pytest.raises(DeviceTimeout):
            await client.read(4, Table.HOLDING, 0, 1, timeout=0.2)
        assert await client.read(4, Table.HOLDING, 0, 1, timeout=1) == [0x1234]
        assert replies == 2
    finally:
        await client.close()
        server.close()
        await server.wait_closed()
