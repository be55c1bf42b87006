"""Block decoder: one pass over a response equals `codec.decode` per point, for every type/order."""

from __future__ import annotations

import math
import struct
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from gatewayd.config.models import DataType, Order, PointConfig, Table
from gatewayd.mapping.blockdecode import BlockDecoder, shortest_float32s
from gatewayd.modbus import codec

BIG, LITTLE = Order.BIG, Order.LITTLE
ORDERS = [(b, w) for b in (BIG, LITTLE) for w in (BIG, LITTLE)]
REGISTER_TYPES = list(DataType)
#: Register contents that hit the interesting cases: NaN/inf halves, 1.0f, BCD digits, signs.
SPECIAL_WORDS = [0, 1, 0x7FC0, 0x7F80, 0xFF80, 0x7F7F, 0xFFFF, 0x3F80, 0x8000, 0x1234, 0x9999]


def point(name: str, address: int, type_: DataType, table: Table = Table.HOLDING,
          **extra: Any) -> PointConfig:  # fmt: skip
    """A point config with the given layout."""
    if type_ is DataType.STRING:
        extra.setdefault("count", 2)
    return PointConfig(measurepoint=name, table=table, address=address, type=type_, **extra)


def expected(
    points: list[PointConfig], orders: list[tuple[Order, Order]], start: int, words: list[int]
) -> tuple[list[str], list[tuple[int, str]], list[int]]:
    """What `codec.decode` gives point by point: value reprs, errors, non-finite positions."""
    values, errors, nonfinite = [], [], []
    for position, p in enumerate(points):
        begin = p.address - start
        try:
            byte_order, word_order = orders[position]
            raw = words[begin : begin + p.register_count]
            value = codec.decode(p, raw, byte_order=byte_order, word_order=word_order)
        except codec.CodecError as exc:
            values.append(repr(None))
            errors.append((position, str(exc)))
            continue
        values.append(repr(value))  # repr tells 1 from 1.0 from True, -0.0 from 0.0, NaN
        if isinstance(value, float) and not math.isfinite(value):
            nonfinite.append(position)
    return values, errors, nonfinite


def check(
    points: list[PointConfig], orders: list[tuple[Order, Order]], start: int, words: list[int],
    count: int | None = None,
) -> None:  # fmt: skip
    """The block decoder agrees with the per-point codec on this response."""
    span = max(p.address + p.register_count for p in points) - start
    decoder = BlockDecoder(points, orders, start=start, count=span if count is None else count)
    got = decoder.decode(words)
    want_values, want_errors, want_nonfinite = expected(points, orders, start, words)
    assert [repr(v) for v in got.values] == want_values
    assert list(got.errors) == want_errors
    assert list(got.nonfinite) == want_nonfinite


@st.composite
def register_points(draw: st.DrawFn) -> tuple[list[PointConfig], list[tuple[Order, Order]]]:
    """1-12 register points of random types, orders and conversions, overlaps allowed."""
    points, orders = [], []
    for i in range(draw(st.integers(1, 12))):
        type_ = draw(st.sampled_from(REGISTER_TYPES))
        extra: dict[str, Any] = {}
        if type_ is DataType.BOOL:
            extra["bit"] = draw(st.none() | st.integers(0, 15))
        elif type_ is DataType.STRING:
            extra["count"] = draw(st.integers(1, 4))
        else:
            scale, offset = draw(st.sampled_from([(1.0, 0.0), (0.1, 0.0), (2.0, -5.0), (1.0, 3.5)]))
            extra.update(scale=scale, offset=offset)
            if draw(st.booleans()):
                extra["enum"] = {0: "off", 1: "on", 0x3F80: "one_high"}
        points.append(point(f"p{i}", draw(st.integers(3, 30)), type_, **extra))
        orders.append(draw(st.sampled_from(ORDERS)))
    # Request order is address order, as the planner makes it.
    ordered = sorted(zip(points, orders, strict=True), key=lambda item: item[0].address)
    return [p for p, _ in ordered], [o for _, o in ordered]


WORDS = st.lists(st.integers(0, 0xFFFF) | st.sampled_from(SPECIAL_WORDS), min_size=40, max_size=40)


@settings(max_examples=400, deadline=None)
@given(register_points(), WORDS, st.integers(0, 3))
def test_block_decode_equals_per_point_codec(layout: Any, words: list[int], start: int) -> None:
    """Random register maps of every type, order, scale, enum and overlap decode like codec."""
    points, orders = layout
    span = max(p.address + p.register_count for p in points) - start
    check(points, orders, start, words[:span])


@settings(max_examples=100, deadline=None)
@given(register_points(), WORDS, st.sampled_from(["short", "long", "negative", "too_big"]))
def test_malformed_responses_fail_like_the_codec(layout: Any, words: list[int], fault: str) -> None:
    """Short/long responses and words outside 0..65535 give the codec's values and errors."""
    points, orders = layout
    span = max(p.address + p.register_count for p in points)
    response = words[:span]
    if fault == "short":
        response = response[:-1]
    elif fault == "long":
        response = [*response, 7]
    elif fault == "negative":
        response[-1] = -1
    else:
        response[-1] = 0x10000
    check(points, orders, 0, response, count=span)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from([0, 1, 1, 0, 2]), min_size=16, max_size=16), st.data())
def test_coils_decode_like_the_codec(bits: list[int], data: st.DataObject) -> None:
    """Coil and discrete-input blocks (a 2 is a codec error) decode like codec."""
    table = data.draw(st.sampled_from([Table.COIL, Table.DISCRETE]))
    addresses = sorted(data.draw(st.sets(st.integers(0, 15), min_size=1, max_size=16)))
    points = [point(f"c{a}", a, DataType.BOOL, table) for a in addresses]
    check(points, [(BIG, BIG)] * len(points), 0, bits, count=16)


def test_float32_in_every_order_and_its_shortest_spelling() -> None:
    """1.1f and NaN in the four layouts: 1.1 (not 1.100000023841858), NaN flagged non-finite."""
    f11 = struct.unpack(">HH", struct.pack(">f", 1.1))
    nan = (0x7FC0, 0x0000)
    words = {
        (BIG, BIG): [*f11, *nan],
        (BIG, LITTLE): [f11[1], f11[0], nan[1], nan[0]],
        (LITTLE, BIG): [_swap(f11[0]), _swap(f11[1]), _swap(nan[0]), _swap(nan[1])],
        (LITTLE, LITTLE): [_swap(f11[1]), _swap(f11[0]), _swap(nan[1]), _swap(nan[0])],
    }
    for orders, response in words.items():
        points = [point("a", 0, DataType.FLOAT32), point("b", 2, DataType.FLOAT32)]
        got = BlockDecoder(points, [orders, orders], start=0, count=4).decode(response)
        assert got.values[0] == 1.1
        assert math.isnan(got.values[1])  # type: ignore[arg-type]
        assert got.nonfinite == (1,)
        assert got.errors == ()


def test_overlapping_points_and_mixed_orders_share_one_response() -> None:
    """Bits of a status word next to the word itself, and a little-endian int32, in one read."""
    points = [
        point("status", 0, DataType.UINT16),
        point("alarm", 0, DataType.BOOL, bit=3),
        point("running", 0, DataType.BOOL, bit=0),
        point("energy", 1, DataType.INT32, word_order=LITTLE),
        point("mode", 3, DataType.UINT16, enum={2: "auto"}),
        point("temp", 4, DataType.INT16, scale=0.1),
    ]
    orders = [(BIG, BIG), (BIG, BIG), (BIG, BIG), (BIG, LITTLE), (BIG, BIG), (BIG, BIG)]
    words = [0b1001, 0xFFFE, 0xFFFF, 2, 0xFF85]  # energy: 0xFFFFFFFE = -2; temp: -123 * 0.1
    got = BlockDecoder(points, orders, start=0, count=5).decode(words)
    assert got.values == [9, True, True, -2, "auto", -12.3]
    check(points, orders, 0, words)


def test_bcd_and_string_points_report_codec_errors_without_hurting_neighbours() -> None:
    """An invalid BCD nibble fails that point only, with the codec's error text."""
    points = [
        point("serial", 0, DataType.STRING, count=2),
        point("code", 2, DataType.BCD16),
        point("power", 3, DataType.FLOAT32),
    ]
    words = [0x4142, 0x4300, 0x12A4, *struct.unpack(">HH", struct.pack(">f", 2.5))]
    got = BlockDecoder(points, [(BIG, BIG)] * 3, start=0, count=5).decode(words)
    assert got.values == ["ABC", None, 2.5]
    assert got.errors == ((1, "invalid BCD digit 0xA in 0x12A4"),)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(0, 0xFFFFFFFF), max_size=70))
def test_shortest_float32s_equals_the_codec_one_by_one(patterns: list[int]) -> None:
    """Every float32 bit pattern (NaN, ±inf, ±0, subnormal, huge) spells as codec's does."""
    values = [struct.unpack(">f", struct.pack(">I", bits))[0] for bits in patterns]
    got = shortest_float32s(values)
    assert [repr(v) for v in got] == [repr(codec.shortest_float32(v)) for v in values]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.floats(width=32, allow_nan=False, allow_infinity=False), max_size=70))
def test_shortest_float32s_on_finite_values(values: list[float]) -> None:
    """Finite float32 values take the batched path and still match codec exactly."""
    assert [repr(v) for v in shortest_float32s(values)] == [
        repr(codec.shortest_float32(v)) for v in values
    ]


def _swap(word: int) -> int:
    return ((word & 0xFF) << 8) | (word >> 8)


MODERATE = st.floats(min_value=2.0**-17, max_value=2.0**24, width=32, exclude_max=True)


@settings(max_examples=300, deadline=None)
@given(st.lists(MODERATE | MODERATE.map(lambda v: -v), min_size=1, max_size=70))
def test_seven_digits_first_path_equals_the_codec(values: list[float]) -> None:
    """Moderate values (mostly the 7-digits-first path; values below 1e-3 take the literal
    one) spell like codec."""
    assert [repr(v) for v in shortest_float32s(values)] == [
        repr(codec.shortest_float32(v)) for v in values
    ]


#: The float32 nearest 1e-3 (just above it): hypothesis wants a float32 bound for width=32.
_FLOAT32_MILLI = struct.unpack(">f", struct.pack(">f", 1e-3))[0]
IN_RANGE = st.floats(min_value=_FLOAT32_MILLI, max_value=2.0**24, width=32, exclude_max=True)


@settings(max_examples=300, deadline=None)
@given(st.lists(IN_RANGE | IN_RANGE.map(lambda v: -v), min_size=1, max_size=70))
def test_signed_values_in_range_take_the_seven_digits_path(values: list[float]) -> None:
    """Magnitudes in [1e-3, 2**24) with either sign (a meter's kvar, °C): the 7-digits-first
    path, spelled like codec."""
    assert [repr(v) for v in shortest_float32s(values)] == [
        repr(codec.shortest_float32(v)) for v in values
    ]


def _neighbour(value: float, steps: int) -> float:
    """The float32 `steps` ulps away from float32 `value` (same sign, finite)."""
    (bits,) = struct.unpack(">I", struct.pack(">f", value))
    return float(struct.unpack(">f", struct.pack(">I", bits + steps))[0])


SIX_DIGIT = st.builds(
    lambda mantissa, exponent, steps: _neighbour(mantissa * 10.0**exponent, steps),
    st.integers(100_000, 999_999),
    st.integers(-9, 2),  # 1e-4 .. 1e8: across the 7-digits-first range and both its edges
    st.integers(-3, 3),
)


@settings(max_examples=400, deadline=None)
@given(st.lists(SIX_DIGIT, min_size=1, max_size=70))
def test_six_digit_values_and_their_neighbours_spell_like_the_codec(values: list[float]) -> None:
    """The values where 6 digits may fit (the case 7 digits first must get right), with
    their neighbours and [2**-10, 1e-3), where the 7-digit shortcut would be wrong."""
    assert [repr(v) for v in shortest_float32s(values)] == [
        repr(codec.shortest_float32(v)) for v in values
    ]


def test_powers_of_two_and_their_neighbours_take_the_seven_digits_path() -> None:
    """Every power of two in the 7-digits-first range, ±3 ulps, alone and as one block.

    Their rounding interval is lopsided (half as wide below); the path must still spell
    them exactly as codec does, with either sign.
    """
    powers = [2.0**e for e in range(-9, 24)]
    assert powers[0] >= 1e-3
    assert powers[-1] < 2**24
    values = [
        v
        for power in powers
        for v in (_neighbour(power, steps) for steps in range(-3, 4))
        if 1e-3 <= v < 2**24
    ]
    expected = [repr(codec.shortest_float32(v)) for v in values]
    assert [repr(v) for v in shortest_float32s(values)] == expected
    assert [repr(shortest_float32s([v])[0]) for v in values] == expected
    negated = [-v for v in values]
    assert [repr(v) for v in shortest_float32s(negated)] == ["-" + text for text in expected]


def test_short_spellings_powers_of_two_and_zero_in_one_block() -> None:
    """6-digit values, powers of two, zero and long spellings mixed keep codec's spelling."""
    spelled = (229.8, 0.5, 0.0, 1.1, 2.0**-17, 97.19916534423828, 16777215.0, 12.3)
    values = [struct.unpack(">f", struct.pack(">f", v))[0] for v in spelled]
    got = shortest_float32s(values)
    assert got == [codec.shortest_float32(v) for v in values]
    assert got[0] == 229.8
    assert got[3] == 1.1
    assert got[5] == 97.199165


def test_zeros_keep_a_block_on_the_seven_digits_path(monkeypatch: Any) -> None:
    """±0.0 among moderate values (a plant at night) spell like codec without the mixed path.

    The literal 6-9 digit path is replaced by one that fails, so taking it shows.
    """
    from gatewayd.mapping import blockdecode

    def no_literal_path(values: list[float]) -> list[float]:
        raise AssertionError(f"mixed path taken for {values}")

    monkeypatch.setattr(blockdecode, "_in_order", no_literal_path)
    spelled = (0.0, 229.8, -0.0, -12.5, 97.19916534423828, 0.0, 0.85)
    values = [struct.unpack(">f", struct.pack(">f", v))[0] for v in spelled]
    got = shortest_float32s(values)
    assert [repr(v) for v in got] == [repr(codec.shortest_float32(v)) for v in values]
    assert [repr(v) for v in got[:4]] == ["0.0", "229.8", "-0.0", "-12.5"]
    assert [repr(v) for v in shortest_float32s([0.0, -0.0])] == ["0.0", "-0.0"]


@settings(max_examples=300, deadline=None)
@given(st.lists(IN_RANGE | IN_RANGE.map(lambda v: -v) | st.sampled_from([0.0, -0.0]),
                min_size=1, max_size=70))  # fmt: skip
def test_zeros_among_values_in_range_spell_like_the_codec(values: list[float]) -> None:
    """Zeros of either sign mixed into in-range values of either sign: codec's spelling."""
    assert [repr(v) for v in shortest_float32s(values)] == [
        repr(codec.shortest_float32(v)) for v in values
    ]
