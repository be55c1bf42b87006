"""A minimal Modbus TCP responder for benchmarks: FC3/FC4 answered from a fixed register image.

    python -m tests.bench.fast_responder CONFIG BUS

The pymodbus simulator (`sim_proc`) spends about as much CPU per request as the daemon
does, so on a 2-core machine it, not the daemon, set B2's ceiling (5 k points/s). This
responder is written from the Modbus TCP spec with no pymodbus and no product code on the
request path: each device's holding and input registers are a precomputed byte image, and
an answer is looked up by the request's bytes after the transaction id (requests repeat
every cycle), so a request costs a dict lookup and one concatenation. Values never move
(B2 measures throughput, not change handling): float32 point `i` of unit `u` reads
``u + i / 8`` (exact in float32, distinct per point); other types read 0.

Same stdin protocol as `sim_proc` (so `b1_fleet.SimProcess` drives either): prints
``PORT <n>`` once serving, then answers ``stats`` (requests per unit), ``reset`` and
``quit``, one JSON line each.

Answers (spec "MODBUS Application Protocol" 1.1b3 and "Messaging on TCP/IP" 1.0b):
exception 01 for other function codes, 02 for a range outside the image, 03 for a count
outside 1..125 or a malformed PDU, 0B for a unit the bus does not have. A frame whose
protocol id is not 0 is dropped; a length field outside 2..254 closes the connection
(the byte stream can no longer be framed).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import struct
import sys
from collections import Counter
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

FC_READ_HOLDING = 3
FC_READ_INPUT = 4
MAX_READ_REGISTERS = 125
#: MBAP header: transaction id, protocol id, length (of unit id + PDU).
_HEADER = 6
_MIN_LENGTH, _MAX_LENGTH = 2, 254
_GATEWAY_TARGET_FAILED = 0x0B

#: (unit id, function code) → the table's registers as big-endian bytes from address 0.
Image = Mapping[tuple[int, int], bytes]


class FramingError(ValueError):
    """The byte stream cannot be split into MBAP frames any more."""


class FrameSplitter:
    """Bytes in, complete MBAP frames out (a TCP read may hold several or part of one)."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[bytes]:
        """Append `data`; return the frames it completed, in order."""
        buffer = self._buffer + data if self._buffer else data
        frames: list[bytes] = []
        start = 0
        while len(buffer) - start >= _HEADER:
            length = int.from_bytes(buffer[start + 4 : start + 6], "big")
            if not _MIN_LENGTH <= length <= _MAX_LENGTH:
                raise FramingError(f"MBAP length {length} outside {_MIN_LENGTH}..{_MAX_LENGTH}")
            end = start + _HEADER + length
            if end > len(buffer):
                break
            frames.append(buffer[start:end])
            start = end
        self._buffer = buffer[start:]
        return frames


def _exception(unit: int, function: int, code: int) -> bytes:
    """Everything after the transaction id of an exception answer."""
    return struct.pack(">HHBBB", 0, 3, unit, function | 0x80, code)


def answer_body(image: Image, request: bytes) -> bytes | None:
    """The answer to one frame, without its transaction id; None to stay silent.

    `request` is a whole MBAP frame with its transaction id cut off (protocol id onwards).
    """
    if request[0:2] != b"\0\0":
        return None
    unit = request[4]
    function = request[5] if len(request) > 5 else 0
    if function not in (FC_READ_HOLDING, FC_READ_INPUT):
        return _exception(unit, function, 0x01)
    if len(request) != 10:
        return _exception(unit, function, 0x03)
    table = image.get((unit, function))
    if table is None:
        return _exception(unit, function, _GATEWAY_TARGET_FAILED)
    address, count = struct.unpack(">HH", request[6:10])
    if not 1 <= count <= MAX_READ_REGISTERS:
        return _exception(unit, function, 0x03)
    if 2 * (address + count) > len(table):
        return _exception(unit, function, 0x02)
    data = table[2 * address : 2 * (address + count)]
    return struct.pack(">HHBBB", 0, 3 + len(data), unit, function, len(data)) + data


class Responder:
    """Answers frames from an image, memoising answers by request bytes; counts per unit."""

    def __init__(self, image: Image) -> None:
        self.image = image
        self.requests: Counter[int] = Counter()
        self._answers: dict[bytes, bytes | None] = {}

    def answer(self, frame: bytes) -> bytes | None:
        """The whole answer frame to one request frame (None: no answer)."""
        key = frame[2:]
        if len(key) > 4:
            self.requests[key[4]] += 1
        try:
            body = self._answers[key]
        except KeyError:
            body = self._answers[key] = answer_body(self.image, key)
        return None if body is None else frame[:2] + body


class _Connection(asyncio.Protocol):
    def __init__(self, responder: Responder) -> None:
        self._responder = responder
        self._splitter = FrameSplitter()
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport

    def data_received(self, data: bytes) -> None:
        assert self._transport is not None
        try:
            frames = self._splitter.feed(data)
        except FramingError:
            self._transport.close()
            return
        answers = [a for a in map(self._responder.answer, frames) if a is not None]
        if answers:
            self._transport.write(b"".join(answers) if len(answers) > 1 else answers[0])


def float32_image(
    units: Iterable[int], addresses: Mapping[int, list[int]]
) -> dict[tuple[int, int], bytes]:
    """Each unit's image: function code → float32 point `i` at `addresses[fc][i]` = unit + i/8."""
    image: dict[tuple[int, int], bytes] = {}
    for unit in units:
        for function, starts in addresses.items():
            table = bytearray(2 * (max(starts, default=-2) + 2))
            for i, start in enumerate(starts):
                table[2 * start : 2 * start + 4] = struct.pack(">f", unit + i / 8)
            image[(unit, function)] = bytes(table)
    return image


def image_of_bus(config_path: Path, bus: str) -> tuple[dict[tuple[int, int], bytes], int]:
    """The register image of every device of `bus` in a gatewayd config, and the bus' port."""
    from gatewayd.config.loader import load_config  # only to read the site, never per request
    from gatewayd.config.models import DataType, Table, TcpBus

    config = load_config(config_path)
    bus_config = next(b for b in config.buses if b.name == bus)
    if not isinstance(bus_config, TcpBus):
        raise SystemExit(f"bus {bus!r} is not a Modbus TCP bus")
    functions = {Table.HOLDING: FC_READ_HOLDING, Table.INPUT: FC_READ_INPUT}
    image: dict[tuple[int, int], bytes] = {}
    for device in config.devices:
        if device.bus != bus:
            continue
        points = config.models[device.model].points
        floats: dict[int, list[int]] = {fc: [] for fc in functions.values()}
        ends = dict.fromkeys(functions.values(), 0)
        for point in points:
            if point.table in functions:
                fc = functions[point.table]
                if point.type == DataType.FLOAT32:
                    floats[fc].append(point.address)
                ends[fc] = max(ends[fc], point.address + 4)  # room for the widest type
        unit_image = float32_image([device.unit_id], floats)
        for fc, end in ends.items():
            table = unit_image[(device.unit_id, fc)]
            image[(device.unit_id, fc)] = table + bytes(max(0, 2 * end - len(table)))
    return image, bus_config.port


def handle(responder: Responder, line: str) -> dict[str, Any] | None:
    """Apply one stdin command; the reply to print, None to quit."""
    words = line.split()
    if not words or words[0] == "quit":
        return None
    if words[0] == "stats":
        return {"requests": dict(responder.requests)}
    if words[0] == "reset":
        responder.requests.clear()
        return {"ok": True}
    return {"error": f"unknown command {words[0]!r}"}


async def serve(config_path: Path, bus: str) -> None:
    """Serve `bus` of the config until `quit` or stdin closes."""
    image, port = image_of_bus(config_path, bus)
    responder = Responder(image)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Connection(responder), "127.0.0.1", port)
    async with server:
        print(f"PORT {port}", flush=True)
        while True:
            line = await loop.run_in_executor(None, sys.stdin.readline)
            reply = handle(responder, line)
            if reply is None:
                break
            print(json.dumps(reply), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("bus")
    args = parser.parse_args()
    asyncio.run(serve(args.config, args.bus))


if __name__ == "__main__":
    main()
