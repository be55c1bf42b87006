"""Register codec: hand-computed vectors, error cases and encode→decode round trips."""

from __future__ import annotations

import math
import struct
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gatewayd.config.models import (
    DataType,
    DeviceConfig,
    DeviceModel,
    Order,
    PointConfig,
    Table,
)
from gatewayd.modbus.codec import CodecError, decode, encode, point_orders

BIG, LITTLE = Order.BIG, Order.LITTLE
ORDERS = [(b, w) for b in (BIG, LITTLE) for w in (BIG, LITTLE)]


def pt(type_: DataType | str, table: Table = Table.HOLDING, **kw: Any) -> PointConfig:
    """A point at address 0 with the given type and options."""
    return PointConfig(measurepoint="p", table=table, address=0, type=DataType(type_), **kw)


def dec(point: PointConfig, words: list[int], b: Order = BIG, w: Order = BIG) -> object:
    """Decode with explicit orders."""
    return decode(point, words, byte_order=b, word_order=w)


def enc(point: PointConfig, value: Any, b: Order = BIG, w: Order = BIG, **kw: Any) -> list[int]:
    """Encode with explicit orders."""
    return encode(point, value, byte_order=b, word_order=w, **kw)


# ---------------------------------------------------------------------------- vectors


@pytest.mark.parametrize(
    ("b", "w", "words"),
    [
        (BIG, BIG, [0x3F80, 0x0000]),
        (BIG, LITTLE, [0x0000, 0x3F80]),
        (LITTLE, BIG, [0x803F, 0x0000]),
        (LITTLE, LITTLE, [0x0000, 0x803F]),
    ],
)
def test_float32_one_in_every_order(b: Order, w: Order, words: list[int]) -> None:
    """float32 1.0 is 0x3F800000 laid out per byte and word order."""
    assert enc(pt("float32"), 1.0, b, w) == words
    assert dec(pt("float32"), words, b, w) == 1.0


def test_int32_word_and_byte_order_vectors() -> None:
    """0x12345678 as int32 in all four layouts."""
    p = pt("uint32")
    assert enc(p, 0x12345678) == [0x1234, 0x5678]
    assert enc(p, 0x12345678, BIG, LITTLE) == [0x5678, 0x1234]
    assert enc(p, 0x12345678, LITTLE, BIG) == [0x3412, 0x7856]
    assert enc(p, 0x12345678, LITTLE, LITTLE) == [0x7856, 0x3412]


def test_signed_types_decode_negative() -> None:
    """Two's complement for int16/int32/int64."""
    assert dec(pt("int16"), [0xFFFF]) == -1
    assert dec(pt("uint16"), [0xFFFF]) == 65535
    assert dec(pt("int32"), [0xFFFF, 0xFFFE]) == -2
    assert dec(pt("int64"), [0x8000, 0, 0, 0]) == -(1 << 63)
    assert dec(pt("uint64"), [0xFFFF] * 4) == (1 << 64) - 1


def test_float64_vector() -> None:
    """float64 -2.5 big/big is 0xC004000000000000."""
    assert enc(pt("float64"), -2.5) == [0xC004, 0, 0, 0]
    assert dec(pt("float64"), [0xC004, 0, 0, 0]) == -2.5


def test_float32_decodes_to_shortest_decimal() -> None:
    """The float32 nearest 1.1 decodes as 1.1, not 1.100000023841858."""
    words = enc(pt("float32"), 1.1)
    assert words == [0x3F8C, 0xCCCD]
    assert dec(pt("float32"), words) == 1.1


def test_non_finite_floats_decode_unchanged() -> None:
    """NaN and inf pass through decode as floats (the mapper marks them BAD)."""
    assert math.isnan(dec(pt("float32"), [0x7FC0, 0]))  # type: ignore[arg-type]
    assert dec(pt("float32"), [0x7F80, 0]) == math.inf
    assert dec(pt("float32"), [0xFF80, 0]) == -math.inf
    assert dec(pt("float32", scale=2.0), [0x7F80, 0]) == math.inf


def test_scale_offset_int_stays_int_without_scaling() -> None:
    """Unscaled ints stay int; scaled values are floats without binary noise."""
    assert dec(pt("int16"), [123]) == 123
    assert isinstance(dec(pt("int16"), [123]), int)
    assert dec(pt("int16", scale=0.1), [123]) == 12.3
    assert dec(pt("uint16", scale=0.01, offset=-40.0), [6550]) == 25.5
    assert isinstance(dec(pt("int16", offset=1.0), [1]), float)


def test_scale_offset_inverted_with_rounding() -> None:
    """Encode inverts value*scale+offset and rounds to the nearest integer."""
    assert enc(pt("int16", scale=0.1), 12.3) == [123]
    assert enc(pt("uint16", scale=0.01, offset=-40.0), 25.5) == [6550]
    assert enc(pt("int16", scale=0.5), 1.3) == [3]  # 2.6 rounds to 3
    assert enc(pt("int16"), 7.0) == [7]


def test_enum_decode_and_unknown_code() -> None:
    """Enum codes map to labels; an unknown code decodes to the raw int."""
    p = pt("uint16", enum={0: "off", 1: "run", 2: "fault"})
    assert dec(p, [1]) == "run"
    assert dec(p, [7]) == 7
    assert enc(p, "fault") == [2]
    assert enc(p, 7) == [7]
    with pytest.raises(CodecError, match=r"unknown label 'stop' \(one of 'off', 'run', 'fault'\)"):
        enc(p, "stop")


def test_enum_on_signed_and_float_points() -> None:
    """Negative codes work on int16; a float32 enum matches integral values only."""
    p = pt("int16", enum={-1: "error", 0: "idle"})
    assert dec(p, [0xFFFF]) == "error"
    assert enc(p, "error") == [0xFFFF]
    f = pt("float32", enum={2: "run"})
    assert enc(f, "run") == [0x4000, 0x0000]
    assert dec(f, [0x4000, 0x0000]) == "run"
    assert dec(f, [0x4020, 0x0000]) == 2.5  # not a code: the raw value
    assert dec(pt("uint16", enum={1: "on"}, scale=10.0), [1]) == "on"  # no scaling on enums
    with pytest.raises(CodecError, match="expected an enum label or raw int"):
        enc(p, 1.5)


def test_bool_coil_and_bit_in_register() -> None:
    """Coils are [0]/[1]; a bit of a register reads that bit and writes read-modify-write."""
    coil = pt("bool", Table.COIL)
    assert dec(coil, [1]) is True
    assert dec(coil, [0]) is False
    assert enc(coil, True) == [1]
    assert enc(coil, 0) == [0]
    bit = pt("bool", bit=3)
    assert dec(bit, [0b1000]) is True
    assert dec(bit, [0b0111]) is False
    assert enc(bit, True, current=0b0001) == [0b1001]
    assert enc(bit, False, current=0xFFFF) == [0xFFF7]
    with pytest.raises(CodecError, match="needs the register's current value"):
        enc(bit, True)
    assert dec(pt("bool"), [2]) is True


def test_string_both_byte_orders_and_padding() -> None:
    """Strings: two chars per register, NUL/space padding stripped, both byte orders."""
    p = pt("string", count=3)
    assert dec(p, [0x4142, 0x4300, 0x0000]) == "ABC"
    assert dec(p, [0x4241, 0x0043, 0x0000], LITTLE) == "ABC"
    assert dec(p, [0x4142, 0x2020, 0x2020]) == "AB"
    assert dec(p, [0x4142, 0x0058, 0x5959]) == "AB"  # cut at the first NUL
    assert enc(p, "ABC") == [0x4142, 0x4300, 0x0000]
    assert enc(p, "ABC", LITTLE) == [0x4241, 0x0043, 0x0000]
    assert enc(p, "ABC", LITTLE, LITTLE) == [0x4241, 0x0043, 0x0000]  # no word order for text
    with pytest.raises(CodecError, match="7 characters do not fit in 6"):
        enc(p, "ABCDEFG")
    with pytest.raises(CodecError, match="outside Latin-1"):
        enc(p, "€")


def test_bcd_vectors_and_invalid_nibble() -> None:
    """BCD16 0x1234 is 1234; BCD32 respects word order; a nibble > 9 raises."""
    assert dec(pt("bcd16"), [0x1234]) == 1234
    assert enc(pt("bcd16"), 9999) == [0x9999]
    assert dec(pt("bcd32"), [0x0012, 0x3456]) == 123456
    assert dec(pt("bcd32"), [0x3456, 0x0012], BIG, LITTLE) == 123456
    assert enc(pt("bcd32"), 12345678, BIG, LITTLE) == [0x5678, 0x1234]
    with pytest.raises(CodecError, match="invalid BCD digit 0xA"):
        dec(pt("bcd16"), [0x12A4])
    with pytest.raises(CodecError, match=r"out of range 0\.\.9999"):
        enc(pt("bcd16"), 10000)


@pytest.mark.parametrize(
    ("type_", "value", "message"),
    [
        ("int16", 32768, r"raw value 32768 out of range -32768..32767 for int16"),
        ("uint16", -1, r"out of range 0..65535"),
        ("uint32", 1 << 32, r"out of range 0..4294967295"),
        ("int16", "12", r"expected a number, got the string '12'"),
        ("float32", math.nan, r"non-finite"),
        ("float32", 1e39, r"out of float32 range"),
    ],
)
def test_encode_rejects_with_clear_message(type_: str, value: Any, message: str) -> None:
    """Out-of-range and wrongly typed values raise CodecError naming the point."""
    with pytest.raises(CodecError, match=message):
        enc(pt(type_), value)


def test_decode_rejects_wrong_word_count_and_range() -> None:
    """Too few registers or a register above 0xFFFF is a CodecError, not a crash."""
    with pytest.raises(CodecError, match="expected 2 register"):
        dec(pt("float32"), [0])
    with pytest.raises(CodecError, match=r"out of 0\.\.65535"):
        dec(pt("uint16"), [70000])
    with pytest.raises(CodecError, match=r"out of 0\.\.1"):
        dec(pt("bool", Table.COIL), [2])


def test_point_orders_precedence() -> None:
    """Point order overrides the device's, which overrides the model's."""
    model = DeviceModel(
        name="m", byte_order=LITTLE, word_order=LITTLE, points=[pt("int16")]
    )
    device = DeviceConfig(
        name="d", bus="b", model="m", product_key="pk", device_key="dk", word_order=BIG
    )
    assert point_orders(pt("int16"), device, model) == (LITTLE, BIG)
    assert point_orders(pt("int16", byte_order=BIG), device, model) == (BIG, BIG)
    assert point_orders(pt("int16", word_order=LITTLE), device, model) == (LITTLE, LITTLE)


# ---------------------------------------------------------------------------- properties

orders = st.sampled_from(ORDERS)
INT_TYPES = {
    "int16": (-(1 << 15), (1 << 15) - 1),
    "uint16": (0, (1 << 16) - 1),
    "int32": (-(1 << 31), (1 << 31) - 1),
    "uint32": (0, (1 << 32) - 1),
    "int64": (-(1 << 63), (1 << 63) - 1),
    "uint64": (0, (1 << 64) - 1),
    "bcd16": (0, 9999),
    "bcd32": (0, 99_999_999),
}


@st.composite
def int_cases(draw: st.DrawFn) -> tuple[PointConfig, int]:
    """An integer-typed point and a raw value in its range."""
    type_ = draw(st.sampled_from(sorted(INT_TYPES)))
    low, high = INT_TYPES[type_]
    return pt(type_), draw(st.integers(low, high))


@given(int_cases(), orders)
def test_int_round_trip(case: tuple[PointConfig, int], order: tuple[Order, Order]) -> None:
    """Every integer type round-trips exactly in every byte × word order."""
    point, value = case
    words = enc(point, value, *order)
    assert len(words) == point.register_count
    assert all(0 <= w <= 0xFFFF for w in words)
    assert dec(point, words, *order) == value


@given(st.sampled_from(sorted(INT_TYPES)), orders, st.data())
def test_int_decode_encode_round_trip(type_: str, order: tuple[Order, Order], data: Any) -> None:
    """Any valid register content decodes and re-encodes to the same registers."""
    point = pt(type_)
    if type_.startswith("bcd"):
        value = data.draw(st.integers(*INT_TYPES[type_]))
        words = enc(point, value, *order)
    else:
        words = data.draw(st.lists(st.integers(0, 0xFFFF), min_size=point.register_count,
                                   max_size=point.register_count))
    assert enc(point, dec(point, words, *order), *order) == words


@given(st.floats(width=32, allow_nan=False, allow_infinity=False), orders)
def test_float32_round_trip(value: float, order: tuple[Order, Order]) -> None:
    """float32 values round-trip to the same float32 bits in every order."""
    point = pt("float32")
    decoded = dec(point, enc(point, value, *order), *order)
    assert isinstance(decoded, float)
    assert struct.pack(">f", decoded) == struct.pack(">f", value)


@given(st.floats(allow_nan=False, allow_infinity=False), orders)
def test_float64_round_trip(value: float, order: tuple[Order, Order]) -> None:
    """float64 values round-trip exactly in every order."""
    point = pt("float64")
    assert dec(point, enc(point, value, *order), *order) == value


@given(st.lists(st.integers(0, 0xFFFF), min_size=2, max_size=2), orders)
def test_float32_registers_round_trip(words: list[int], order: tuple[Order, Order]) -> None:
    """Every finite float32 register pair decodes and re-encodes to the same registers."""
    point = pt("float32")
    value = dec(point, words, *order)
    assert isinstance(value, float)
    if math.isfinite(value):
        assert enc(point, value, *order) == words


@given(
    st.sampled_from(["int16", "uint16", "int32", "uint32", "int64", "uint64", "bcd32"]),
    st.sampled_from([0.1, 0.01, 0.5, 2.0, 10.0, 1e-3]),
    st.sampled_from([0.0, -40.0, 273.15, 1.0]),
    orders,
    st.data(),
)
def test_scaled_int_round_trip(
    type_: str, scale: float, offset: float, order: tuple[Order, Order], data: Any
) -> None:
    """Scaled integer points round-trip their raw value through the engineering value."""
    low, high = INT_TYPES[type_]
    # Keep raw*scale exactly representable enough: |raw| < 2**50 leaves room for 15 digits.
    raw = data.draw(st.integers(max(low, -(10**12)), min(high, 10**12)))
    point = pt(type_, scale=scale, offset=offset)
    words = enc(pt(type_), raw, *order)  # the raw registers
    value = dec(point, words, *order)
    assert isinstance(value, float)
    assert enc(point, value, *order) == words


@given(
    st.sampled_from([0.1, 2.0, 10.0, 1e-3]),
    st.sampled_from([0.0, -40.0]),
    orders,
    st.floats(-1e6, 1e6, allow_nan=False, width=32).filter(lambda x: x == 0 or abs(x) > 1e-2),
)
def test_scaled_float32_round_trip(
    scale: float, offset: float, order: tuple[Order, Order], raw: float
) -> None:
    """Scaled float32 points re-encode their engineering value to the same float32."""
    words = enc(pt("float32"), raw, *order)
    point = pt("float32", scale=scale, offset=offset)
    value = dec(point, words, *order)
    assert isinstance(value, float)
    assert dec(point, enc(point, value, *order), *order) == value
    back = dec(pt("float32"), enc(point, value, *order), *order)
    assert isinstance(back, float)
    assert struct.pack(">f", back) == struct.pack(">f", raw + 0.0)  # -0.0 scales to 0.0


@given(
    st.sampled_from([0.1, 2.0, 1e-3]),
    st.sampled_from([0.0, -40.0]),
    orders,
    st.floats(-1e12, 1e12, allow_nan=False),
)
def test_scaled_float64_round_trip(
    scale: float, offset: float, order: tuple[Order, Order], value: float
) -> None:
    """Scaled float64 points round-trip within float64 rounding of the scale arithmetic."""
    point = pt("float64", scale=scale, offset=offset)
    back = dec(point, enc(point, value, *order), *order)
    assert isinstance(back, float)
    assert math.isclose(back, value, rel_tol=1e-13, abs_tol=1e-9)


@given(
    st.dictionaries(st.integers(0, 0xFFFF), st.text(min_size=1, max_size=8), min_size=1,
                    max_size=6).filter(lambda d: len(set(d.values())) == len(d)),
    orders,
    st.data(),
)
def test_enum_round_trip(enum: dict[int, str], order: tuple[Order, Order], data: Any) -> None:
    """Enum labels round-trip through their code; unknown codes round-trip as ints."""
    point = pt("uint16", enum=enum)
    code = data.draw(st.sampled_from(sorted(enum)))
    label = enum[code]
    words = enc(point, label, *order)
    assert dec(point, words, *order) == label
    unknown = data.draw(st.integers(0, 0xFFFF).filter(lambda c: c not in enum))
    assert dec(point, enc(point, unknown, *order), *order) == unknown


@given(
    st.integers(1, 8),
    st.sampled_from([BIG, LITTLE]),
    st.sampled_from([BIG, LITTLE]),
    st.data(),
)
def test_string_round_trip(count: int, b: Order, w: Order, data: Any) -> None:
    """Latin-1 strings without NUL or trailing spaces round-trip in both byte orders."""
    text = data.draw(
        st.text(st.characters(min_codepoint=1, max_codepoint=255), max_size=2 * count).map(
            lambda s: s.rstrip(" ")
        )
    )
    point = pt("string", count=count)
    words = enc(point, text, b, w)
    assert len(words) == count
    assert dec(point, words, b, w) == text


@given(st.integers(0, 15), st.integers(0, 0xFFFF), st.booleans())
def test_bit_read_modify_write(bit: int, current: int, state: bool) -> None:
    """Writing a bit changes only that bit, and reads back as written."""
    point = pt("bool", bit=bit)
    (word,) = enc(point, state, current=current)
    assert word & ~(1 << bit) == current & ~(1 << bit)
    assert dec(point, [word]) is state
