"""A rogue Modbus device: raw asyncio sockets and bytes built by hand from the spec.

It shares no code with the product (no pymodbus, no `gatewayd.modbus.codec`), so it can
misbehave in ways a real library would refuse to: wrong transaction id, unit id or
function code, short, long or odd byte counts, truncated frames, bytes appended after a
frame, garbage then a close, or silence. One device serves Modbus TCP (`framing="tcp"`),
RTU framing over TCP (`framing="rtu"`), or RTU on a serial line (`RogueSerialDevice`, one
end of a socat pty pair).

Every request is answered by a *policy*: a callable that gets the parsed `Request` and
the correct answer (`Answer`, whose `adu` are the exact bytes a sound device would send)
and returns what to do instead: bytes to write, `SILENCE`, or `CLOSE` (after writing
anything given). `script(...)` turns a list of `Fault`s into a policy that applies them
one request at a time and answers correctly afterwards.

Register `a` of every table holds `register_value(a)`; coil / discrete input `a` is
`bit_value(a)`, so a test can check exact values without configuring anything.

Modbus application protocol v1.1b3 and Modbus over serial line v1.02 are the sources:
MBAP header = transaction id (2), protocol id 0 (2), length = unit + PDU (2), unit (1);
RTU frame = unit (1), PDU, CRC-16 (poly 0xA001, init 0xFFFF, low byte first).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import struct
import termios
import tty
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from tests.support import rtu_crc16

__all__ = [
    "CLOSE",
    "SILENCE",
    "Answer",
    "Fault",
    "Policy",
    "Request",
    "RogueSerialDevice",
    "RogueTcpDevice",
    "bit_value",
    "correct_answer",
    "frame",
    "good",
    "refusal",
    "register_value",
    "script",
]

Framing = Literal["tcp", "rtu"]


class _Marker(enum.Enum):
    SILENCE = "silence"
    CLOSE = "close"


#: Policy verdict: say nothing to this request.
SILENCE = _Marker.SILENCE
#: Policy verdict: close the connection (TCP) after writing nothing.
CLOSE = _Marker.CLOSE

Reply = bytes | _Marker | tuple[bytes, _Marker]


def register_value(address: int) -> int:
    """What register `address` holds in every table (distinct neighbours, never all zero)."""
    return (address * 2654435761 + 0x1234) & 0xFFFF


def bit_value(address: int) -> int:
    """What coil / discrete input `address` holds."""
    return 1 if address % 3 == 0 else 0


@dataclass(frozen=True, slots=True)
class Request:
    """One request as the device read it off the wire."""

    framing: Framing
    transaction_id: int  # 0 on RTU (no such field)
    unit: int
    function: int
    body: bytes  # the PDU after the function code

    @property
    def address(self) -> int:
        """Start address of a read or write."""
        return int.from_bytes(self.body[0:2], "big")

    @property
    def count(self) -> int:
        """Quantity of a read (FC1-4) or multiple write (FC15/16)."""
        return int.from_bytes(self.body[2:4], "big")


@dataclass(frozen=True, slots=True)
class Answer:
    """The correct answer to a request, split the way faults need it."""

    framing: Framing
    transaction_id: int
    unit: int
    pdu: bytes  # function code + data

    @property
    def adu(self) -> bytes:
        """The exact bytes a sound device sends."""
        return frame(self.framing, self.transaction_id, self.unit, self.pdu)


def frame(framing: Framing, transaction_id: int, unit: int, pdu: bytes) -> bytes:
    """An ADU around `pdu`: MBAP header for TCP, unit and CRC for RTU."""
    if framing == "tcp":
        return struct.pack(">HHHB", transaction_id, 0, len(pdu) + 1, unit) + pdu
    body = bytes([unit]) + pdu
    return body + rtu_crc16(body)


def _read_pdu(function: int, address: int, count: int) -> bytes:
    if function in (1, 2):
        packed = bytearray((count + 7) // 8)
        for i in range(count):
            if bit_value(address + i):
                packed[i // 8] |= 1 << (i % 8)
        return bytes([function, len(packed)]) + bytes(packed)
    words = [register_value(address + i) for i in range(count)]
    return bytes([function, 2 * count]) + struct.pack(f">{count}H", *words)


def correct_answer(request: Request) -> Answer:
    """What a sound device answers: data for FC1-4, the echo for FC5/6/15/16."""
    function = request.function
    if function in (1, 2, 3, 4):
        pdu = _read_pdu(function, request.address, request.count)
    elif function in (5, 6, 15, 16):
        pdu = bytes([function]) + request.body[:4]
    else:
        pdu = bytes([function | 0x80, 1])  # illegal function
    return Answer(request.framing, request.transaction_id, request.unit, pdu)


class Fault(enum.Enum):
    """Ways to spoil one answer (`apply` builds the bytes)."""

    GOOD = "good"
    WRONG_TRANSACTION = "wrong transaction id"
    ZERO_TRANSACTION = "transaction id 0"
    WRONG_UNIT = "wrong unit id"
    WRONG_FUNCTION = "wrong function code"
    EXCEPTION_OTHER_FUNCTION = "exception answer for another function"
    LONG_EXCEPTION = "exception answer with a byte too many, framed to match"
    SHORT_COUNT = "byte count one short, payload to match"
    LONG_COUNT = "byte count two long, payload to match"
    ODD_COUNT = "byte count 2N+1"
    COUNT_MISMATCH = "byte count says more than the payload"
    TRUNCATED = "frame cut short, then silence"
    EXTRA_BYTES = "two bytes appended after a sound frame"
    GARBAGE_CLOSE = "garbage, then close"
    SILENCE = "no answer"
    BAD_CRC = "sound frame with a wrong CRC (RTU)"

    def apply(self, answer: Answer) -> Reply:
        """The reply this fault makes of `answer`."""
        return _FAULTS[self](answer)


def _with_pdu(
    answer: Answer, pdu: bytes, *, unit: int | None = None, tid: int | None = None
) -> bytes:
    return frame(
        answer.framing,
        answer.transaction_id if tid is None else tid,
        answer.unit if unit is None else unit,
        pdu,
    )


def _recount(answer: Answer, delta: int) -> bytes:
    """The answer with `delta` more (or fewer) data bytes, byte count to match."""
    pdu = answer.pdu
    data = pdu[2:]
    data = data + bytes(range(0x41, 0x41 + delta)) if delta > 0 else data[: len(data) + delta]
    return _with_pdu(answer, bytes([pdu[0], len(data)]) + data)


def _bad_crc(answer: Answer) -> bytes:
    adu = answer.adu
    if answer.framing == "tcp":
        return adu
    return adu[:-2] + bytes([adu[-2] ^ 0xFF, adu[-1]])


_FAULTS: dict[Fault, Callable[[Answer], Reply]] = {
    Fault.GOOD: lambda a: a.adu,
    Fault.WRONG_TRANSACTION: lambda a: _with_pdu(a, a.pdu, tid=(a.transaction_id + 1) & 0xFFFF),
    Fault.ZERO_TRANSACTION: lambda a: _with_pdu(a, a.pdu, tid=0),
    Fault.WRONG_UNIT: lambda a: _with_pdu(a, a.pdu, unit=(a.unit % 247) + 1),
    Fault.WRONG_FUNCTION: lambda a: _with_pdu(a, bytes([4 if a.pdu[0] == 3 else 3]) + a.pdu[1:]),
    Fault.EXCEPTION_OTHER_FUNCTION: lambda a: _with_pdu(a, bytes([(a.pdu[0] % 4 + 1) | 0x80, 2])),
    Fault.LONG_EXCEPTION: lambda a: _with_pdu(a, bytes([a.pdu[0] | 0x80, 2, 0])),
    Fault.SHORT_COUNT: lambda a: _recount(a, -1),
    Fault.LONG_COUNT: lambda a: _recount(a, 2),
    Fault.ODD_COUNT: lambda a: _recount(a, 1),
    Fault.COUNT_MISMATCH: lambda a: _with_pdu(a, bytes([a.pdu[0], a.pdu[1] + 2]) + a.pdu[2:]),
    Fault.TRUNCATED: lambda a: a.adu[:-3],
    Fault.EXTRA_BYTES: lambda a: a.adu + b"\x00\x07",
    Fault.GARBAGE_CLOSE: lambda a: (b"\xde\xad\xbe\xef" * 8, CLOSE),
    Fault.SILENCE: lambda a: SILENCE,
    Fault.BAD_CRC: _bad_crc,
}

#: What a policy decides per request.
Policy = Callable[[Request, Answer], Reply]


def refusal(answer: Answer, code: int) -> bytes:
    """Exception `code` instead of `answer` (02 illegal address, 03 illegal value ...)."""
    return _with_pdu(answer, bytes([answer.pdu[0] | 0x80, code]))


def script(*faults: Fault) -> Policy:
    """A policy applying `faults` to successive requests, then answering correctly."""
    pending = list(faults)

    def policy(_request: Request, answer: Answer) -> Reply:
        fault = pending.pop(0) if pending else Fault.GOOD
        return fault.apply(answer)

    return policy


def good(_request: Request, answer: Answer) -> Reply:
    """The policy of a sound device."""
    return answer.adu


# ---------------------------------------------------------------------------- parsing


def _tcp_request(buffer: bytearray) -> Request | None:
    """Take one MBAP request off the front of `buffer`, if complete."""
    if len(buffer) < 7:
        return None
    tid, _protocol, length, unit = struct.unpack_from(">HHHB", buffer)
    if len(buffer) < 6 + length:
        return None
    pdu = bytes(buffer[7 : 6 + length])
    del buffer[: 6 + length]
    return Request("tcp", tid, unit, pdu[0], pdu[1:])


def _rtu_request_length(buffer: bytearray) -> int | None:
    if len(buffer) < 2:
        return None
    function = buffer[1]
    if function in (15, 16):
        return None if len(buffer) < 7 else 7 + buffer[6] + 2
    return 8  # FC1-6: unit, function, 4 bytes, CRC


def _rtu_request(buffer: bytearray) -> Request | None:
    """Take one RTU request off the front of `buffer`, if complete (bad CRC: dropped)."""
    while True:
        length = _rtu_request_length(buffer)
        if length is None or len(buffer) < length:
            return None
        adu = bytes(buffer[:length])
        del buffer[:length]
        if rtu_crc16(adu[:-2]) == adu[-2:]:
            return Request("rtu", 0, adu[0], adu[1], adu[2:-2])
        buffer.clear()  # lost sync: a master repeats after its timeout


@dataclass
class _Device:
    """What both transports share: the policy, what was asked, and what was decided."""

    policy: Policy
    requests: list[Request] = field(default_factory=list)

    def decide(self, request: Request) -> Reply:
        self.requests.append(request)
        return self.policy(request, correct_answer(request))


# ---------------------------------------------------------------------------- transports


class RogueTcpDevice:
    """A rogue device on a loopback TCP port (MBAP, or RTU frames over TCP).

    Use as `async with RogueTcpDevice(policy) as device:`; `device.port` is the port,
    `device.requests` every request read so far, `device.policy` may be swapped any time.
    """

    def __init__(self, policy: Policy = good, *, framing: Framing = "tcp") -> None:
        self._device = _Device(policy)
        self.framing = framing
        self.port = 0
        self.connections = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def requests(self) -> list[Request]:
        """Every request read, in order."""
        return self._device.requests

    @property
    def policy(self) -> Policy:
        """How requests are answered."""
        return self._device.policy

    @policy.setter
    def policy(self, policy: Policy) -> None:
        self._device.policy = policy

    async def __aenter__(self) -> RogueTcpDevice:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()  # the handler reads EOF and ends
        if self._handlers:
            # Ended, not cancelled at loop shutdown (which asyncio logs as an error).
            await asyncio.wait(self._handlers, timeout=5)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self._writers.add(writer)
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        parse = _tcp_request if self.framing == "tcp" else _rtu_request
        buffer = bytearray()
        try:
            while chunk := await reader.read(4096):
                buffer += chunk
                while (request := parse(buffer)) is not None:
                    if not await self._answer(request, writer):
                        return
        except ConnectionError:
            pass
        finally:
            self._writers.discard(writer)
            self._handlers.discard(task)
            writer.close()

    async def _answer(self, request: Request, writer: asyncio.StreamWriter) -> bool:
        """Write the policy's reply in one write; False once the connection is to close."""
        data, marker = _split(self._device.decide(request))
        if data:
            writer.write(data)
            await writer.drain()
        return marker is not CLOSE


class RogueSerialDevice:
    """A rogue RTU device on a serial line: one end (`path`) of a socat pty pair.

    `CLOSE` has no meaning on a line; it is silence there.
    """

    def __init__(self, path: str, policy: Policy = good) -> None:
        self._device = _Device(policy)
        self.path = path
        self._fd = -1
        self._buffer = bytearray()

    @property
    def requests(self) -> list[Request]:
        """Every request read, in order."""
        return self._device.requests

    @property
    def policy(self) -> Policy:
        """How requests are answered."""
        return self._device.policy

    @policy.setter
    def policy(self, policy: Policy) -> None:
        self._device.policy = policy

    async def __aenter__(self) -> RogueSerialDevice:
        self._fd = os.open(self.path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
        tty.setraw(self._fd, termios.TCSANOW)
        termios.tcflush(self._fd, termios.TCIOFLUSH)  # nothing left from an earlier user
        asyncio.get_running_loop().add_reader(self._fd, self._on_readable)
        return self

    async def __aexit__(self, *_exc: object) -> None:
        asyncio.get_running_loop().remove_reader(self._fd)
        os.close(self._fd)

    def _on_readable(self) -> None:
        with contextlib.suppress(BlockingIOError):
            self._buffer += os.read(self._fd, 4096)
        while (request := _rtu_request(self._buffer)) is not None:
            data, _marker = _split(self._device.decide(request))
            if data:
                os.write(self._fd, data)  # one write: a frame without inner silence


def _split(reply: Reply) -> tuple[bytes, _Marker | None]:
    if isinstance(reply, tuple):
        return reply
    if isinstance(reply, _Marker):
        return b"", reply
    return reply, None
