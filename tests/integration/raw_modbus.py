"""A Modbus TCP device written from the spec with raw asyncio sockets (no product code).

It answers FC3 (read holding registers) from a register dict, and with the exception code
given in `exceptions` for reads starting at chosen addresses: enough to make the product
warn about a device without sharing a line of its Modbus code.
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import Mapping
from types import TracebackType

#: Modbus exception 04: server device failure (not a hole: the product keeps polling it).
DEVICE_FAILURE = 4


class RawHoldingDevice:
    """Serves FC3 on 127.0.0.1 (any port) for every unit id, until the context exits."""

    def __init__(self, registers: Mapping[int, int], exceptions: Mapping[int, int]) -> None:
        """`registers`: address -> value; `exceptions`: start address -> exception code."""
        self._registers = dict(registers)
        self._exceptions = dict(exceptions)
        self._server: asyncio.Server | None = None
        self.requests: list[tuple[int, int]] = []  # (start, count) of each FC3 request

    @property
    def port(self) -> int:
        """The listening port."""
        assert self._server is not None
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    def set_register(self, address: int, value: int) -> None:
        """Change one register: later reads answer the new value."""
        self._registers[address] = value

    async def __aenter__(self) -> RawHoldingDevice:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                header = await reader.readexactly(7)  # MBAP: tid, protocol, length, unit
                tid, _, length, unit = struct.unpack(">HHHB", header)
                pdu = await reader.readexactly(length - 1)
                writer.write(self._answer(tid, unit, pdu))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def _answer(self, tid: int, unit: int, pdu: bytes) -> bytes:
        function = pdu[0]
        if function != 3:
            body = bytes([function | 0x80, 1])  # illegal function
        else:
            start, count = struct.unpack(">HH", pdu[1:5])
            self.requests.append((start, count))
            code = self._exceptions.get(start)
            if code is not None:
                body = bytes([0x83, code])
            else:
                words = [self._registers.get(start + i, 0) for i in range(count)]
                body = struct.pack(f">BB{count}H", 3, 2 * count, *words)
        return struct.pack(">HHHB", tid, 0, len(body) + 1, unit) + body
