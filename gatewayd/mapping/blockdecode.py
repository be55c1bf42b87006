"""Block decoding: every point of one read response in one pass (pure, no I/O).

`codec.decode` turns one point's registers into its value; decoding a 125-register response
that way costs a Python call, a byte join and a struct call per point, which dominated the
poll path's CPU. A `BlockDecoder` is compiled once per request layout (the mapping stage's
`decoding.ResponseDecoder` caches it) and decodes a whole response with one ``struct.pack``
of the words and one precompiled ``struct.Struct.unpack`` per *lane* (points that do not
overlap), then post-processes only the points that need it:

- float32: the shortest decimal that is still the same float32, as `codec.decode` gives,
  computed for all float32 points of the response together (`shortest_float32s`);
- enum / scale / offset: `codec.convert_raw`, per point;
- bool in a register: the bit, or "register != 0";
- everything else (strings, BCD, coils/discrete inputs), and a response the fast path
  cannot take (wrong length, a word out of 0..65535): `codec.decode` per point, so values
  and error texts are exactly the codec's.

The result equals `codec.decode` per point for every type, byte order and word order
(tests/unit/test_blockdecode.py checks it with hypothesis).

How byte and word order map onto one block: with the words packed big-endian (B: hi, lo of
each word) or little-endian (L: lo, hi), a value's bytes in significance order are

- byte big / word big: B read big-endian;   byte little / word little: B read little-endian;
- byte little / word big: L read big-endian; byte big / word little: L read little-endian.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import compress
from operator import eq, not_

from gatewayd.config.enums import DataType, Order
from gatewayd.modbus import codec
from gatewayd.modbus.specs import PointSpec
from gatewayd.samples import Value

__all__ = ["BlockDecoder", "BlockValues", "shortest_float32s"]

#: struct codes of the types the fast path unpacks (a register bool is read as uint16).
_CODES: dict[DataType, str] = {
    DataType.INT16: "h",
    DataType.UINT16: "H",
    DataType.INT32: "i",
    DataType.UINT32: "I",
    DataType.INT64: "q",
    DataType.UINT64: "Q",
    DataType.FLOAT32: "f",
    DataType.FLOAT64: "d",
    DataType.BOOL: "H",
}

#: Beyond this magnitude a float32 candidate may round past FLOAT32_MAX: the exact per-value
#: path (`codec.shortest_float32`) handles such values.
_BATCH_FLOAT32_LIMIT = 1e38
#: Where a 6-digit spelling that fits is always the 7-digit spelling (see `_seven_first`).
_SEVEN_FINAL_RANGE = (1e-3, float(1 << 24))


def _spell(values: Sequence[float], digits: int) -> list[float]:
    """Each value rounded to `digits` significant digits (what ``f"{v:.{digits}g}"`` gives)."""
    spelling = f"%.{digits}g "
    return list(map(float, ((spelling * len(values)) % tuple(values)).split()))


def _round_trips(candidates: Sequence[float], values: Sequence[float]) -> list[bool]:
    """For each candidate: is it, as a float32, exactly its value (a float32 in a float)?"""
    layout = f"<{len(values)}f"
    back = struct.unpack(layout, struct.pack(layout, *candidates))
    # Equal as floats is equal as float32 bits here: a candidate keeps the sign of its value,
    # so 0.0 and -0.0 never meet, and NaN never gets this far.
    return list(map(eq, back, values))


def shortest_float32s(values: list[float]) -> list[float]:
    """`codec.shortest_float32` of every value, computed for the whole list at once.

    Each digit count is tried for all values still open in one formatting call, one
    ``float`` map and one float32 round trip, so the per-value work is done in C.
    """
    if not values:
        return []
    if not math.isfinite(sum(values)):  # NaN or ±inf somewhere
        return [codec.shortest_float32(value) for value in values]
    low, high = _SEVEN_FINAL_RANGE
    if low <= min(values) and max(values) < high:
        return _seven_first(values)  # the usual block: positive plant values of moderate size
    magnitudes = list(map(abs, values))
    # Negative values: the spelling is symmetric in the sign. Zeros (a plant at night, an
    # idle feeder) spell as themselves, "0" or "-0", at any digit count: 7 digits first
    # gives them too, so they do not send a block down the mixed path.
    smallest_nonzero = min(filter(None, magnitudes), default=low)
    if low <= smallest_nonzero and max(magnitudes) < high:
        return _seven_first(values)
    if max(magnitudes) > _BATCH_FLOAT32_LIMIT:
        return [codec.shortest_float32(value) for value in values]
    # Mixed (tiny or huge values among moderate ones): each part its own way.
    monotone = [magnitude == 0 or low <= magnitude < high for magnitude in magnitudes]
    result = values[:]
    for fits, spell in ((True, _seven_first), (False, _in_order)):
        positions = [p for p, m in enumerate(monotone) if m is fits]
        if positions:
            subset = list(map(values.__getitem__, positions))
            for position, value in zip(positions, spell(subset), strict=True):
                result[position] = value
    return result


def _in_order(values: list[float]) -> list[float]:
    """6, 7, 8 then 9 digits for the values still open: `codec.shortest_float32` literally."""
    result = values[:]
    open_positions: Sequence[int] = range(len(values))
    open_values = values
    for digits in range(6, 10):
        candidates = _spell(open_values, digits)
        exact = _round_trips(candidates, open_values)
        for position, candidate in compress(zip(open_positions, candidates, strict=True), exact):
            result[position] = candidate
        still_open = list(map(not_, exact))
        open_positions = list(compress(open_positions, still_open))
        if not open_positions:
            break
        open_values = list(compress(open_values, still_open))
    return result  # 9 digits always round-trip: nothing is left open


def _seven_first(values: list[float]) -> list[float]:
    """The same result as `_in_order` with one spelling for most values: 7 digits, else 8/9.

    Valid for float32 values with 1e-3 <= |x| < 2**24, where 6 digits never need a try of
    their own, and for zeros (which every digit count spells). Why: there the float32
    spacing u around x is below the 7-digit step s7 by at least 2.4 % (or equal to it in
    [2**23, 1e7), where every float32 is an integer). A 6-digit rounding D6 that fits lies
    within u/2 of x (plus the 2**-52 relative error of parsing it into a float, far inside
    that margin), so within less than s7/2: D6, a point of the 7-digit grid, is then the
    nearest such point, which is what 7 digits spell (``%.7g`` drops the trailing zero). So
    the result is the 7-digit spelling where it fits, else the 8-digit one, else 9 digits
    (which always fit). In [2**-10, 1e-3) the spacing exceeds the 7-digit step, hence the
    range. A power of two has a rounding interval only half as wide below it, but a D6 that
    fits still lies within u/2 of x (u the spacing above), so the argument holds for it too.
    tests/unit/test_blockdecode.py checks the equality with hypothesis.
    """
    sevens = _spell(values, 7)
    fits = _round_trips(sevens, values)
    if all(fits):
        return sevens
    longer = list(map(values.__getitem__, compress(range(len(values)), map(not_, fits))))
    eights = _spell(longer, 8)
    eight_fits = _round_trips(eights, longer)
    if not all(eight_fits):  # 9 digits always fit
        nines = _spell(list(compress(longer, map(not_, eight_fits))), 9)
        eights = _merge(eight_fits, eights, nines)
    return _merge(fits, sevens, eights)


def _merge(fits: list[bool], spelled: list[float], longer: list[float]) -> list[float]:
    """`spelled` where it fits, else the next of `longer` (one per misfit, in order).

    Done by iterators in C: each position's bool picks which one to advance.
    """
    pick = (iter(longer), compress(spelled, fits)).__getitem__
    return list(map(next, map(pick, fits)))


@dataclass(frozen=True, slots=True)
class BlockValues:
    """The decoded values of one response, by position in the request's `points`."""

    values: list[Value | None]  # None where the point failed to decode (see `errors`)
    errors: tuple[tuple[int, str], ...]  # (position, codec error text)
    nonfinite: tuple[int, ...]  # positions holding NaN or ±inf


@dataclass(frozen=True, slots=True)
class _Lane:
    """Points that do not overlap, unpacked by one struct from one packing of the words."""

    little_words: bool  # unpack from the little-endian packing (L) rather than B
    layout: struct.Struct
    positions: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class _Field:
    position: int
    offset: int  # bytes from the start of the response
    little_words: bool
    little_endian: bool
    code: str


class BlockDecoder:
    """Decodes all points of one read request's response (compile once, decode every cycle).

    `points` are the request's points in request order, `orders` their (byte, word) order,
    `start`/`count` the request's register (or bit) range.
    """

    def __init__(
        self,
        points: Sequence[PointSpec],
        orders: Sequence[tuple[Order, Order]],
        *,
        start: int,
        count: int,
    ) -> None:
        self.points = tuple(points)
        self.orders = tuple(orders)
        self.start = start
        self.count = count
        #: (first, end) word of each point in the response.
        self.spans = tuple(
            (p.address - start, p.address - start + p.register_count) for p in self.points
        )
        fields: list[_Field] = []
        self._float32: list[int] = []
        self._plain_floats: list[int] = []  # float32/64 with no conversion: NaN/inf checks
        self._bools: list[tuple[int, int | None]] = []
        self._converts: list[tuple[int, PointSpec]] = []
        self._slow: list[int] = []
        for position, point in enumerate(self.points):
            code = None if point.table.is_bit else _CODES.get(point.type)
            if code is None:
                self._slow.append(position)
                continue
            byte_order, word_order = self.orders[position]
            if point.type is DataType.BOOL:
                # A register bool is the register's value (the codec ignores byte order).
                fields.append(_Field(position, 2 * self.spans[position][0], False, False, code))
                self._bools.append((position, point.bit))
                continue
            fields.append(
                _Field(
                    position,
                    2 * self.spans[position][0],
                    little_words=byte_order is not word_order,
                    little_endian=word_order is Order.LITTLE,
                    code=code,
                )
            )
            if point.type is DataType.FLOAT32:
                self._float32.append(position)
            if point.enum is not None or point.scale != 1 or point.offset != 0:
                self._converts.append((position, point))
            elif point.type.is_float:
                self._plain_floats.append(position)
        self._lanes = _lanes(fields)
        self._needs_little = any(lane.little_words for lane in self._lanes)
        self._pack_big = struct.Struct(f">{count}H")
        self._pack_little = struct.Struct(f"<{count}H")
        everything = tuple(range(len(self.points)))
        # The common shapes get a path without per-point Python work.
        self._one_lane = len(self._lanes) == 1 and self._lanes[0].positions == everything
        self._all_float32 = tuple(self._float32) == everything
        self._all_plain_floats = tuple(self._plain_floats) == everything

    def decode(self, words: Sequence[int]) -> BlockValues:
        """The values of all points from the response `words` (registers or bits)."""
        if len(words) != self.count or self._slow_only:
            return self._decode_per_point(words)
        try:
            big = self._pack_big.pack(*words)
        except struct.error:  # a word out of 0..65535: the codec names the culprit
            return self._decode_per_point(words)
        little = self._pack_little.pack(*words) if self._needs_little else b""
        values: list[Value | None]
        if self._one_lane:
            lane = self._lanes[0]
            values = list(lane.layout.unpack_from(little if lane.little_words else big))
        else:
            values = [None] * len(self.points)
            for lane in self._lanes:
                raws = lane.layout.unpack_from(little if lane.little_words else big)
                for position, raw in zip(lane.positions, raws, strict=True):
                    values[position] = raw
        self._finish(values)
        errors: list[tuple[int, str]] = []
        for position in self._slow:
            values[position] = self._decode_one(position, words, errors)
        return BlockValues(values, tuple(errors), self._nonfinite(values))

    @property
    def _slow_only(self) -> bool:
        return not self._lanes

    def _finish(self, values: list[Value | None]) -> None:
        """Post-process the raw numbers in place: float32 spelling, bools, enum/scale."""
        if self._all_float32:
            values[:] = shortest_float32s(values)  # type: ignore[arg-type]
        elif self._float32:
            spelled = shortest_float32s([values[p] for p in self._float32])  # type: ignore[misc]
            for position, value in zip(self._float32, spelled, strict=True):
                values[position] = value
        for position, bit in self._bools:
            raw = values[position]
            assert isinstance(raw, int)
            values[position] = raw != 0 if bit is None else bool((raw >> bit) & 1)
        for position, point in self._converts:
            raw = values[position]
            assert isinstance(raw, (int, float))
            values[position] = codec.convert_raw(point, raw)

    def _nonfinite(self, values: list[Value | None]) -> tuple[int, ...]:
        """Positions holding NaN or ±inf (only float-capable points are looked at)."""
        if self._all_plain_floats:
            plain: Sequence[Value | None] = values
        else:
            plain = [values[p] for p in self._plain_floats]
        found: list[int] = []
        if plain and not math.isfinite(sum(plain)):  # type: ignore[arg-type]
            found.extend(p for p in self._plain_floats if not _finite(values[p]))
        found.extend(p for p, _ in self._converts if not _finite(values[p]))
        found.extend(p for p in self._slow if not _finite(values[p]))
        return tuple(sorted(found))

    def _decode_per_point(self, words: Sequence[int]) -> BlockValues:
        errors: list[tuple[int, str]] = []
        values = [self._decode_one(p, words, errors) for p in range(len(self.points))]
        nonfinite = tuple(p for p, value in enumerate(values) if not _finite(value))
        return BlockValues(values, tuple(errors), nonfinite)

    def _decode_one(
        self, position: int, words: Sequence[int], errors: list[tuple[int, str]]
    ) -> Value | None:
        begin, end = self.spans[position]
        byte_order, word_order = self.orders[position]
        try:
            return codec.decode(
                self.points[position], words[begin:end], byte_order=byte_order,
                word_order=word_order,
            )  # fmt: skip
        except codec.CodecError as exc:
            errors.append((position, str(exc)))
            return None


def _finite(value: Value | None) -> bool:
    return not (isinstance(value, float) and not math.isfinite(value))


def _lanes(fields: Sequence[_Field]) -> tuple[_Lane, ...]:
    """Group fields into as few non-overlapping, same-packing structs as possible."""
    lanes: list[tuple[bool, bool, list[_Field]]] = []
    for field in sorted(fields, key=lambda f: (f.little_words, f.little_endian, f.offset)):
        for little_words, little_endian, members in lanes:
            if (little_words, little_endian) != (field.little_words, field.little_endian):
                continue
            last = members[-1]
            if last.offset + struct.calcsize(last.code) <= field.offset:
                members.append(field)
                break
        else:
            lanes.append((field.little_words, field.little_endian, [field]))
    compiled = []
    for little_words, little_endian, members in lanes:
        layout = ["<" if little_endian else ">"]
        cursor = 0
        for member in members:
            if member.offset > cursor:
                layout.append(f"{member.offset - cursor}x")
            layout.append(member.code)
            cursor = member.offset + struct.calcsize(member.code)
        compiled.append(
            _Lane(little_words, struct.Struct("".join(layout)), tuple(m.position for m in members))
        )
    return tuple(compiled)
