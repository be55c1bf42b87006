"""Wire-time model of Modbus requests, and the gap-fill break-even it implies (pure).

Frame sizes (bytes on the wire; N = data bytes):

=================  ===========================  ==========================
function           RTU request / response        TCP request / response
=================  ===========================  ==========================
FC1-4 read         8 / 5 + N                     12 / 9 + N
FC5/6 write one    8 / 8                         12 / 12
FC15/16 write      9 + N / 8                     13 + N / 12
=================  ===========================  ==========================

RTU frames are address(1) + PDU + CRC(2); TCP frames are MBAP(7, unit id included) + PDU.
A read returns N = 2 bytes per register, or ceil(bits / 8) for coils/discrete inputs.

On a serial line one character is 1 start + 8 data + parity-or-second-stop + 1 stop = 11
bits (the Modbus serial spec's framing; `bits_per_char` uses the port's real framing when
known, e.g. 10 for 8N1). Frames are separated by 3.5 character times of silence, fixed at
1.75 ms above 19200 baud. One request costs::

    t = (request + response bytes) * char_time + 2 * frame_gap + turnaround (+ link RTT)

Break-even gap. Reading `g` gap registers through costs 2g more response bytes; a second
request instead costs a request frame (8), a response header and CRC (5), two frame gaps
and a turnaround. Reading through is cheaper while::

    2 g * char_time  <=  13 * char_time + 2 * frame_gap + turnaround (+ link RTT)
    g  <=  (13 * char_time + 2 * frame_gap + turnaround + rtt) / (2 * char_time)

At 9600 baud 8E1 (char 1.146 ms, gap 4.01 ms) with a 5 ms turnaround this is 12
registers; at 115200 (char 95.5 µs, gap 1.75 ms) it is 51. Over Modbus TCP bytes are
almost free (a 10 Mbit/s link is assumed, 0.8 µs per byte) and the per-request cost is the
round trip plus turnaround, so the break-even exceeds any request: `auto` reads through
whatever fits in one request (the planner's hole discovery keeps that safe). For bit tables
the planner scales the fill by 16 (16 bits cost what one register does).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from gatewayd.config.models import BusConfig, Parity, RtuOverTcpBus, SerialBus, Table, TcpBus
from gatewayd.modbus.planner import MAX_REGISTERS, ReadRequest

__all__ = [
    "DEFAULT_BITS_PER_CHAR",
    "TCP_BYTE_TIME",
    "TCP_ROUND_TRIP",
    "bits_per_char",
    "break_even_gap",
    "bus_cycle_time",
    "bus_timing",
    "char_time",
    "cycle_wire_time",
    "frame_gap",
    "inter_frame_delay",
    "read_frame_bytes",
    "request_wire_time",
    "resolve_gap_fill",
    "write_frame_bytes",
]

#: Modbus serial framing: start + 8 data + parity (or a 2nd stop bit) + stop.
DEFAULT_BITS_PER_CHAR = 11
#: Round trip of a Modbus TCP request on a LAN, on top of the device turnaround.
TCP_ROUND_TRIP = 0.001
#: Seconds per byte on a TCP link (10 Mbit/s: slow embedded Ethernet, conservatively).
TCP_BYTE_TIME = 8 / 10_000_000

_MAX_GAP_FILL = MAX_REGISTERS - 1  # the config's upper bound for gap_fill
_RTU_OVERHEAD = 3  # address + CRC
_TCP_OVERHEAD = 7  # MBAP header (transaction, protocol, length, unit)


def _data_bytes(table: Table, count: int) -> int:
    return math.ceil(count / 8) if table.is_bit else 2 * count


def read_frame_bytes(table: Table, count: int, *, tcp: bool = False) -> tuple[int, int]:
    """(request, response) bytes of an FC1-4 read of `count` registers/bits."""
    overhead = _TCP_OVERHEAD if tcp else _RTU_OVERHEAD
    return overhead + 5, overhead + 2 + _data_bytes(table, count)


def write_frame_bytes(table: Table, count: int, *, tcp: bool = False) -> tuple[int, int]:
    """(request, response) bytes of a write: FC5/6 for one item, FC15/16 for several."""
    overhead = _TCP_OVERHEAD if tcp else _RTU_OVERHEAD
    if count == 1:
        return overhead + 5, overhead + 5
    return overhead + 6 + _data_bytes(table, count), overhead + 5


def bits_per_char(bus: BusConfig | None = None) -> int:
    """Bits per serial character: the port's framing for an RTU bus, 11 otherwise."""
    if isinstance(bus, SerialBus):
        return 1 + bus.bytesize + (bus.parity is not Parity.NONE) + bus.stopbits
    return DEFAULT_BITS_PER_CHAR


def char_time(baudrate: int, bits: int = DEFAULT_BITS_PER_CHAR) -> float:
    """Seconds per character at `baudrate`."""
    return bits / baudrate


def frame_gap(baudrate: int, bits: int = DEFAULT_BITS_PER_CHAR) -> float:
    """The RTU inter-frame silence: 3.5 characters, fixed at 1.75 ms above 19200 baud."""
    if baudrate > 19200:
        return 0.00175
    return 3.5 * char_time(baudrate, bits)


def inter_frame_delay(bus: SerialBus) -> float:
    """The silence to keep between frames on `bus`: its setting, or the spec's for "auto"."""
    if bus.inter_frame_delay == "auto":
        return frame_gap(bus.baudrate, bits_per_char(bus))
    return bus.inter_frame_delay


def request_wire_time(
    table: Table,
    count: int,
    baudrate: int | None,
    turnaround: float,
    *,
    bits: int = DEFAULT_BITS_PER_CHAR,
    round_trip: float = 0.0,
) -> float:
    """Seconds one read of `count` items takes: RTU at `baudrate`, or TCP if it is None.

    `round_trip` adds a network hop (RTU over TCP); plain TCP always adds `TCP_ROUND_TRIP`.
    """
    if baudrate is None:
        request, response = read_frame_bytes(table, count, tcp=True)
        return (request + response) * TCP_BYTE_TIME + turnaround + TCP_ROUND_TRIP + round_trip
    request, response = read_frame_bytes(table, count)
    return (
        (request + response) * char_time(baudrate, bits)
        + 2 * frame_gap(baudrate, bits)
        + turnaround
        + round_trip
    )


def cycle_wire_time(
    requests: Iterable[ReadRequest],
    baudrate: int | None,
    turnaround: float,
    *,
    bits: int = DEFAULT_BITS_PER_CHAR,
    round_trip: float = 0.0,
) -> float:
    """Seconds a sequence of reads occupies the bus (see `request_wire_time`)."""
    return sum(
        request_wire_time(
            r.table, r.count, baudrate, turnaround, bits=bits, round_trip=round_trip
        )
        for r in requests
    )


def break_even_gap(
    baudrate: int | None,
    turnaround: float,
    *,
    bits: int = DEFAULT_BITS_PER_CHAR,
    round_trip: float = 0.0,
) -> int:
    """Largest gap (registers) that is cheaper to read through than to skip with a new request.

    See the module docstring for the derivation; capped at 124 (a gap must leave room for a
    point in a 125-register request).
    """
    if baudrate is None:
        byte_time = TCP_BYTE_TIME
        # A second request adds a 12-byte request and a 9-byte response header.
        per_request = 21 * byte_time + turnaround + TCP_ROUND_TRIP + round_trip
    else:
        byte_time = char_time(baudrate, bits)
        # A second request adds its request frame and a response header+CRC (8 + 5 bytes).
        per_request = 13 * byte_time + 2 * frame_gap(baudrate, bits) + turnaround + round_trip
    return min(_MAX_GAP_FILL, math.floor(per_request / (2 * byte_time)))


def bus_timing(bus: BusConfig) -> tuple[int | None, int, float]:
    """(baudrate or None for TCP, bits per char, extra round trip) of a bus."""
    if isinstance(bus, TcpBus):
        return None, DEFAULT_BITS_PER_CHAR, 0.0
    if isinstance(bus, RtuOverTcpBus):
        return bus.baudrate, DEFAULT_BITS_PER_CHAR, TCP_ROUND_TRIP
    return bus.baudrate, bits_per_char(bus), 0.0


def resolve_gap_fill(bus: BusConfig) -> int:
    """The bus's `gap_fill` as a number: its setting, or the break-even for "auto"."""
    if bus.gap_fill != "auto":
        return bus.gap_fill
    baudrate, bits, round_trip = bus_timing(bus)
    return break_even_gap(baudrate, bus.turnaround, bits=bits, round_trip=round_trip)


def bus_cycle_time(bus: BusConfig, requests: Iterable[ReadRequest]) -> float:
    """Seconds `requests` occupy `bus` (its baud rate, framing, turnaround and link)."""
    baudrate, bits, round_trip = bus_timing(bus)
    return cycle_wire_time(requests, baudrate, bus.turnaround, bits=bits, round_trip=round_trip)
