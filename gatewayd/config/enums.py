"""The Modbus vocabulary of the configuration: tables, data types, orders (standard library only).

`gatewayd.config.models` validates these; the pure cores (codec, planner, block decoder)
use them without importing pydantic.
"""

from __future__ import annotations

from enum import StrEnum


class Table(StrEnum):
    """Modbus data tables."""

    COIL = "coil"
    DISCRETE = "discrete"
    HOLDING = "holding"
    INPUT = "input"

    @property
    def is_bit(self) -> bool:
        # A set look-up: this runs several times per request on the poll hot path.
        return self in _BIT_TABLES


_BIT_TABLES = frozenset({Table.COIL, Table.DISCRETE})


class DataType(StrEnum):
    """Point data types and how many 16-bit registers each occupies (see `REGISTER_COUNT`)."""

    BOOL = "bool"  # a coil/discrete input, or bit `bit` of a register
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    STRING = "string"  # `count` registers, two characters each
    BCD16 = "bcd16"
    BCD32 = "bcd32"

    # The groups are set look-ups: the codec asks them for every point it decodes.
    @property
    def is_float(self) -> bool:
        """float32 and float64."""
        return self in _FLOAT_TYPES

    @property
    def is_integer(self) -> bool:
        """Whole raw numbers: the signed, unsigned and BCD types (enums need one)."""
        return self in _RAW_RANGES

    @property
    def is_numeric(self) -> bool:
        """Integers and floats: what thresholds, scale and offset apply to."""
        return self in _RAW_RANGES or self in _FLOAT_TYPES

    @property
    def is_signed(self) -> bool:
        """Two's-complement integers."""
        return self in _SIGNED_TYPES

    @property
    def is_bcd(self) -> bool:
        """Binary-coded decimal: four bits per decimal digit."""
        return self in _BCD_TYPES

    @property
    def raw_range(self) -> tuple[int, int] | None:
        """The inclusive raw range of an integer type; None for the others."""
        return _RAW_RANGES.get(self)


_FLOAT_TYPES = frozenset({DataType.FLOAT32, DataType.FLOAT64})
_SIGNED_TYPES = frozenset({DataType.INT16, DataType.INT32, DataType.INT64})
_BCD_TYPES = frozenset({DataType.BCD16, DataType.BCD32})
_RAW_RANGES: dict[DataType, tuple[int, int]] = {
    DataType.INT16: (-(1 << 15), (1 << 15) - 1),
    DataType.UINT16: (0, (1 << 16) - 1),
    DataType.INT32: (-(1 << 31), (1 << 31) - 1),
    DataType.UINT32: (0, (1 << 32) - 1),
    DataType.INT64: (-(1 << 63), (1 << 63) - 1),
    DataType.UINT64: (0, (1 << 64) - 1),
    DataType.BCD16: (0, 9999),
    DataType.BCD32: (0, 99_999_999),
}


#: Registers occupied by each fixed-size type; `string` takes its `count`.
REGISTER_COUNT: dict[DataType, int] = {
    DataType.BOOL: 1,
    DataType.INT16: 1,
    DataType.UINT16: 1,
    DataType.BCD16: 1,
    DataType.INT32: 2,
    DataType.UINT32: 2,
    DataType.FLOAT32: 2,
    DataType.BCD32: 2,
    DataType.INT64: 4,
    DataType.UINT64: 4,
    DataType.FLOAT64: 4,
}


class Order(StrEnum):
    """Byte order inside a register, or word order across registers."""

    BIG = "big"
    LITTLE = "little"


class Timestamps(StrEnum):
    """How a device's readings of one poll cycle are stamped."""

    CYCLE = "cycle"  # one stamp per device and cycle: when its first request was sent
    REQUEST = "request"  # each response stamped with its own arrival time
