"""The RS-485 silence before each request is counted from the last byte received."""

from __future__ import annotations

import asyncio
import time

from gatewayd.config.models import Table
from gatewayd.modbus.client import PymodbusClient, inter_frame_delay
from gatewayd.modbus.errors import DeviceTimeout
from tests.integration.modbus_fixtures import rtu_over_tcp_bus
from tests.support import async_wait_until, rtu_crc16

#: At 1200 baud the automatic silence is 3.5 x 11 / 1200 s = 32 ms: far above loopback latency.
BAUD = 1200


def _reply(unit: int) -> bytes:
    body = bytes([unit, 3, 2, 0x12, 0x34])
    return body + rtu_crc16(body)


async def test_silence_counts_from_the_reply_and_from_late_bytes() -> None:
    """Each request starts at least the gap after the last byte the device sent, a late
    answer (after the request's timeout) included."""
    gap = inter_frame_delay(rtu_over_tcp_bus(1, baudrate=BAUD))
    sent_at: list[float] = []  # when the device wrote each reply
    arrived_at: list[float] = []  # when each request reached the device
    timed_out = asyncio.Event()

    async def device(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while request := await reader.read(8):
            arrived_at.append(time.monotonic())
            if len(arrived_at) == 2:
                # Request 2 goes unanswered until its timeout; the answer comes 20 ms
                # after that (device timing), when no request is waiting for it.
                await timed_out.wait()
                await asyncio.sleep(0.02)
            writer.write(_reply(request[0]))
            await writer.drain()
            sent_at.append(time.monotonic())
        writer.close()

    server = await asyncio.start_server(device, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    client = PymodbusClient(rtu_over_tcp_bus(port, baudrate=BAUD))
    try:
        await client.connect()
        assert await client.read(4, Table.HOLDING, 0, 1, timeout=1) == [0x1234]
        try:
            await client.read(4, Table.HOLDING, 0, 1, timeout=0.05)
        except DeviceTimeout:
            timed_out.set()
        assert timed_out.is_set()
        await async_wait_until(lambda: client.late_answers == 1, timeout=5)
        assert await client.read(4, Table.HOLDING, 0, 1, timeout=1) == [0x1234]
    finally:
        await client.close()
        server.close()
        await server.wait_closed()
    assert len(arrived_at) == 3
    assert len(sent_at) == 3
    # Request 2 after reply 1; request 3 after the late reply 2, not after the timeout.
    assert arrived_at[1] - sent_at[0] >= gap
    assert arrived_at[2] - sent_at[1] >= gap
