"""The Modbus data-type groups, asked of the type enum (the one place they are defined)."""

from __future__ import annotations

import pytest

from gatewayd.config.models import REGISTER_COUNT, DataType

#: Written out by hand from the README's list of point types, not derived from the enum.
INTEGERS = {"int16", "uint16", "int32", "uint32", "int64", "uint64", "bcd16", "bcd32"}
FLOATS = {"float32", "float64"}
SIGNED = {"int16", "int32", "int64"}


def test_each_type_is_in_exactly_one_kind() -> None:
    """bool, string, the eight integer types and the two float types: a partition."""
    for type_ in DataType:
        kinds = [type_.is_integer, type_.is_float, type_ in (DataType.BOOL, DataType.STRING)]
        assert kinds.count(True) == 1, type_
    assert {t.value for t in DataType if t.is_integer} == INTEGERS
    assert {t.value for t in DataType if t.is_float} == FLOATS
    assert {t.value for t in DataType if t.is_numeric} == INTEGERS | FLOATS
    assert {t.value for t in DataType if t.is_signed} == SIGNED
    assert {t.value for t in DataType if t.is_bcd} == {"bcd16", "bcd32"}


@pytest.mark.parametrize("type_", [t for t in DataType if t.is_integer and not t.is_bcd])
def test_binary_integer_ranges_fill_their_registers(type_: DataType) -> None:
    """A binary integer's range spans exactly 2^(16 * registers) values, signed or not."""
    low, high = type_.raw_range or (1, 0)
    bits = 16 * REGISTER_COUNT[type_]
    assert high - low + 1 == 1 << bits
    assert low == (-(1 << (bits - 1)) if type_.is_signed else 0)


def test_bcd_ranges_are_four_bits_a_digit_and_others_have_none() -> None:
    """bcd16 holds 4 digits, bcd32 holds 8; floats, bool and string have no raw range."""
    assert DataType.BCD16.raw_range == (0, 9999)
    assert DataType.BCD32.raw_range == (0, 99_999_999)
    assert [t for t in DataType if t.raw_range is None] == [
        DataType.BOOL,
        DataType.FLOAT32,
        DataType.FLOAT64,
        DataType.STRING,
    ]
