"""A rogue device (tests/peers/rogue_modbus.py) on any transport, with a client to it.

`rogue(transport, policy)` starts the device on "tcp", "rtu_over_tcp" or "serial" (one end
of a socat pty pair, passed as `pty`) and connects a real `PymodbusClient`; `expected`
is what a sound device answers for a read at `ADDRESS`.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

from gatewayd.config.models import Table
from gatewayd.modbus.client import ModbusClient, make_client
from tests.integration.modbus_fixtures import rtu_over_tcp_bus, serial_bus, tcp_bus
from tests.peers.rogue_modbus import (
    Policy,
    RogueSerialDevice,
    RogueTcpDevice,
    bit_value,
    register_value,
)

#: Where the tests read.
ADDRESS = 10


@contextlib.asynccontextmanager
async def rogue(
    transport: str, policy: Policy, pty: tuple[str, str] | None = None
) -> AsyncIterator[tuple[Any, ModbusClient]]:
    """A rogue device on `transport` ("tcp", "rtu_over_tcp", "serial") and a client to it."""
    device: Any
    if transport == "serial":
        assert pty is not None
        device = RogueSerialDevice(pty[0], policy)
        bus: Any = serial_bus(pty[1])
    else:
        framing = "tcp" if transport == "tcp" else "rtu"
        device = RogueTcpDevice(policy, framing=framing)
    async with device:
        if transport == "tcp":
            bus = tcp_bus(device.port)
        elif transport == "rtu_over_tcp":
            bus = rtu_over_tcp_bus(device.port)
        client = make_client(bus)
        await client.connect()
        try:
            yield device, client
        finally:
            await client.close()


def expected(table: Table, count: int) -> list[int]:
    """What a sound device answers for `count` values at ADDRESS."""
    value = bit_value if table.is_bit else register_value
    return [value(ADDRESS + i) for i in range(count)]
