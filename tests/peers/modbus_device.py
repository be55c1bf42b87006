"""A Modbus TCP device by hand from the Modbus application protocol (MBAP + PDU), no pymodbus.

Serves several unit ids with coils and holding/input registers (discrete inputs are not
needed by the tests that use it); answers FC 1/3/4 reads and FC 5/6/15/16 writes, exception
02 for addresses outside its tables and 01 for other function codes, and keeps every write
it was asked for, in order, so a test can check exactly what reached the device.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections import Counter
from dataclasses import dataclass, field

SIZE = 64  # registers / coils per table per unit


@dataclass
class Unit:
    """One slave's tables; registers are 16-bit unsigned words."""

    holding: list[int] = field(default_factory=lambda: [0] * SIZE)
    inputs: list[int] = field(default_factory=lambda: [0] * SIZE)
    coils: list[bool] = field(default_factory=lambda: [False] * SIZE)


@dataclass(frozen=True)
class Write:
    """A write request as it arrived: unit, function code, first address, values."""

    unit: int
    function: int
    address: int
    values: tuple[int, ...]


def _exception(function: int, code: int) -> bytes:
    return bytes([function | 0x80, code])


def _pack_bits(bits: list[bool]) -> bytes:
    out = bytearray((len(bits) + 7) // 8)
    for index, bit in enumerate(bits):
        if bit:
            out[index // 8] |= 1 << (index % 8)  # first coil in the lowest bit
    return bytes(out)


class ModbusTcpDevice:
    """`async with ModbusTcpDevice([1, 2]) as device:` serves units 1 and 2 on `device.port`."""

    def __init__(self, unit_ids: list[int]) -> None:
        self.units = {uid: Unit() for uid in unit_ids}
        self.writes: list[Write] = []
        self.requests = 0
        self.reads: Counter[tuple[int, int, int, int]] = Counter()  # (unit, fc, addr, count)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> ModbusTcpDevice:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self._server.wait_closed()

    def set_float32(self, unit: int, table: str, address: int, value: float) -> None:
        """Big-endian IEEE 754 single in two registers, high word first."""
        high, low = struct.unpack(">HH", struct.pack(">f", value))
        getattr(self.units[unit], table)[address : address + 2] = [high, low]

    def set_uint32(self, unit: int, table: str, address: int, value: int) -> None:
        """Unsigned 32-bit integer in two registers, high word first."""
        getattr(self.units[unit], table)[address : address + 2] = [value >> 16, value & 0xFFFF]

    def set_int16(self, unit: int, table: str, address: int, value: int) -> None:
        """Two's complement 16-bit integer in one register."""
        getattr(self.units[unit], table)[address] = value & 0xFFFF

    def int16(self, unit: int, table: str, address: int) -> int:
        """A register read back as a signed 16-bit integer."""
        word: int = getattr(self.units[unit], table)[address]
        return word - 0x10000 if word & 0x8000 else word

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        try:
            while True:
                header = await reader.readexactly(7)
                transaction, protocol, length, unit = struct.unpack(">HHHB", header)
                pdu = await reader.readexactly(length - 1)
                self.requests += 1
                if protocol != 0 or unit not in self.units or not pdu:
                    continue  # not for this device: a real slave stays silent
                answer = self._answer(unit, pdu)
                writer.write(struct.pack(">HHHB", transaction, 0, len(answer) + 1, unit) + answer)
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    def _answer(self, unit_id: int, pdu: bytes) -> bytes:
        function, unit = pdu[0], self.units[unit_id]
        try:
            if function in (1, 3, 4):
                address, count = struct.unpack(">HH", pdu[1:5])
                self.reads[unit_id, function, address, count] += 1
                return self._read(unit, function, address, count)
            if function in (5, 6):
                address, value = struct.unpack(">HH", pdu[1:5])
                self._write(unit_id, function, address, [value])
                return pdu[:5]
            if function in (15, 16):
                address, count, _ = struct.unpack(">HHB", pdu[1:6])
                data = pdu[6:]
                if function == 15:
                    values = [(data[i // 8] >> (i % 8)) & 1 for i in range(count)]
                else:
                    values = list(struct.unpack(f">{count}H", data[: 2 * count]))
                self._write(unit_id, function, address, values)
                return pdu[:5]
        except IndexError:
            return _exception(function, 2)
        except struct.error:
            return _exception(function, 3)
        return _exception(function, 1)

    def _read(self, unit: Unit, function: int, address: int, count: int) -> bytes:
        if function == 1:
            bits = unit.coils[address : address + count]
            if len(bits) != count:
                raise IndexError(address)
            data = _pack_bits(bits)
        else:
            table = unit.holding if function == 3 else unit.inputs
            words = table[address : address + count]
            if len(words) != count:
                raise IndexError(address)
            data = struct.pack(f">{count}H", *words)
        return bytes([function, len(data)]) + data

    def _write(self, unit_id: int, function: int, address: int, values: list[int]) -> None:
        unit = self.units[unit_id]
        if function in (5, 15):
            if address + len(values) > SIZE:
                raise IndexError(address)
            for offset, value in enumerate(values):
                unit.coils[address + offset] = value in (1, 0xFF00)
        else:
            if address + len(values) > SIZE:
                raise IndexError(address)
            unit.holding[address : address + len(values)] = values
        self.writes.append(Write(unit_id, function, address, tuple(values)))
