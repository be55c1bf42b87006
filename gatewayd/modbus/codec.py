"""Register codec: 16-bit Modbus words ⇄ point values, in both directions (pure, no I/O).

Layout conventions (the Modbus spec only fixes big-endian bytes inside one register;
everything wider is vendor convention, hence the two knobs):

- `byte_order` is the order of the two bytes inside each register. `big` is the Modbus
  standard (high byte first on the wire); `little` swaps the bytes of every register.
- `word_order` is the order of registers in a multi-register value. `big` puts the most
  significant register at the lowest address; `little` reverses the registers.
  float32 1.0 (0x3F800000) is ``[0x3F80, 0x0000]`` big/big, ``[0x0000, 0x3F80]`` with
  little word order and ``[0x803F, 0x0000]`` with little byte order.
- Strings are `count` registers of two characters each, in address order (`word_order`
  does not apply: text is not a number). `byte_order` big puts the first character in the
  high byte. Characters are Latin-1 (one byte each, so every register content decodes and
  round-trips). Decoding stops at the first NUL and strips trailing spaces; encoding pads
  with NUL and rejects text that does not fit.
- BCD16/BCD32 hold 4/8 decimal digits, one per nibble; a nibble above 9 is a `CodecError`.
- Bool: a coil/discrete input is ``[0]``/``[1]``; a bool with `bit` is that bit of one
  register; a bool without `bit` in a register is "register != 0".

Value conversion after the raw decode:

- Numeric points: ``value = raw * scale + offset``. With ``scale == 1`` and ``offset == 0``
  integers stay `int`; otherwise the result is a `float`, cleaned of binary noise to 15
  significant digits (``123 * 0.1`` gives ``12.3``, not ``12.300000000000001``).
- float32 decodes to the shortest decimal that maps back to the same float32 bits (the
  register holding 1.1f gives ``1.1``, not ``1.100000023841858``); float64 is exact.
- NaN and ±inf decode to the float NaN/inf unchanged: the codec reports what the device
  says; the mapper turns non-finite values into quality BAD (EnOS JSON cannot carry them).
  Encoding a non-finite value is a `CodecError` (a cloud write of NaN is never meant).
- Enum points: the enum keys are the device's raw codes, so the lookup uses the raw
  value (an integral float counts as its int) and `scale`/`offset` are not applied. A raw
  code missing from the map decodes to the raw value (the operator sees the unknown code
  instead of a crash). Encoding accepts a label (case-sensitive) or a raw int.

`encode` is the inverse: the value is un-scaled (``raw = (value - offset) / scale``),
rounded to the nearest integer for integer types, and range-checked against the type. A
bool with `bit` needs the register's `current` content and returns it with the bit set or
cleared (read-modify-write; the caller reads the register first).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

from gatewayd.config.enums import DataType, Order
from gatewayd.modbus.specs import DeviceOrders, ModelOrders, PointSpec
from gatewayd.samples import Value

__all__ = [
    "FLOAT32_MAX",
    "CodecError",
    "convert_raw",
    "decode",
    "encode",
    "point_orders",
    "register_range",
    "shortest_float32",
]


class CodecError(ValueError):
    """Registers that cannot be decoded, or a value that cannot be encoded for a point."""


#: The largest finite float32.
FLOAT32_MAX: float = struct.unpack(">f", b"\x7f\x7f\xff\xff")[0]
_FLOAT32 = struct.Struct(">f")


def point_orders(
    point: PointSpec, device: DeviceOrders, model: ModelOrders
) -> tuple[Order, Order]:
    """The (byte_order, word_order) for a point: point override > device override > model."""
    byte_order = point.byte_order or device.byte_order or model.byte_order
    word_order = point.word_order or device.word_order or model.word_order
    return byte_order, word_order


def register_range(type_: DataType) -> tuple[int, int] | None:
    """Inclusive raw integer range of an integer/BCD type, None for the others."""
    return type_.raw_range


# ---------------------------------------------------------------------------- decode


def decode(
    point: PointSpec, words: Sequence[int], *, byte_order: Order, word_order: Order
) -> Value:
    """Decode one point from its registers (or ``[0]``/``[1]`` for a coil/discrete input)."""
    _check_words(point, words)
    if point.table.is_bit:
        return bool(words[0])
    if point.type is DataType.BOOL:
        if point.bit is None:
            return words[0] != 0
        return bool((words[0] >> point.bit) & 1)
    if point.type is DataType.STRING:
        return _decode_string(words, byte_order)

    data = _words_to_bytes(words, byte_order, word_order)
    raw: int | float
    if point.type.is_float:
        raw = _unpack_float(point.type, data)
    elif point.type.is_bcd:
        raw = _bcd_to_int(data)
    else:
        raw = int.from_bytes(data, "big", signed=point.type.is_signed)

    return convert_raw(point, raw)


def convert_raw(point: PointSpec, raw: int | float) -> Value:
    """A numeric point's value from its raw number: the enum label, else scaled/offset.

    This is what `decode` does after the raw decode (a float32 raw is already the
    shortest decimal); the block decoder calls it for the points that need it.
    """
    if point.enum is not None:
        code = _enum_code(raw)
        if code is not None:
            return point.enum.get(code, raw)
    return _scale(point, raw)


def _enum_code(raw: int | float) -> int | None:
    """The enum key a raw value stands for: itself if int, an integral float as int."""
    if isinstance(raw, int):
        return raw
    return int(raw) if math.isfinite(raw) and raw.is_integer() else None


def _check_words(point: PointSpec, words: Sequence[int]) -> None:
    expected = point.register_count
    if len(words) != expected:
        raise CodecError(
            f"{point.measurepoint}: expected {expected} register(s) for {point.type}, "
            f"got {len(words)}"
        )
    limit = 1 if point.table.is_bit else 0xFFFF
    for word in words:
        if not 0 <= word <= limit:
            raise CodecError(f"{point.measurepoint}: register value {word} out of 0..{limit}")


def _words_to_bytes(words: Sequence[int], byte_order: Order, word_order: Order) -> bytes:
    """Bytes of a multi-register value, most significant first."""
    ordered = words if word_order is Order.BIG else list(reversed(words))
    return b"".join(w.to_bytes(2, byte_order.value) for w in ordered)


def _unpack_float(type_: DataType, data: bytes) -> float:
    if type_ is DataType.FLOAT64:
        value: float = struct.unpack(">d", data)[0]
        return value
    return shortest_float32(struct.unpack(">f", data)[0])


def shortest_float32(value: float) -> float:
    """The shortest decimal (6-9 significant digits) that is still the float32 `value`.

    `value` is a float32 held in a float (e.g. from ``struct.unpack(">f", ...)``); NaN and
    ±inf come back unchanged. This is what the device meant: 1.1f gives ``1.1``.
    """
    if not math.isfinite(value):
        return value
    data = _FLOAT32.pack(value)
    # A float32 holds 6-9 significant digits, and `g` drops trailing zeros, so `.6g` already
    # gives any shorter spelling (1.1, not 1.10000): start there (this runs for every float).
    for digits in range(6, 10):
        candidate = float(f"{value:.{digits}g}")
        if abs(candidate) <= FLOAT32_MAX and _FLOAT32.pack(candidate) == data:
            return candidate
    return value  # pragma: no cover - 9 significant digits always round-trip a float32


def _bcd_to_int(data: bytes) -> int:
    result = 0
    for byte in data:
        for nibble in (byte >> 4, byte & 0x0F):
            if nibble > 9:
                raise CodecError(f"invalid BCD digit 0x{nibble:X} in 0x{data.hex().upper()}")
            result = result * 10 + nibble
    return result


def _decode_string(words: Sequence[int], byte_order: Order) -> str:
    data = b"".join(w.to_bytes(2, byte_order.value) for w in words)
    return data.split(b"\x00", 1)[0].decode("latin-1").rstrip(" ")


def _scale(point: PointSpec, raw: int | float) -> int | float:
    if point.scale == 1 and point.offset == 0:
        return raw
    value = raw * point.scale + point.offset
    if not math.isfinite(value):
        return value
    # Strip the binary noise of decimal scales (123 * 0.1) without losing real digits.
    return float(f"{value:.15g}")


# ---------------------------------------------------------------------------- encode


def encode(
    point: PointSpec,
    value: Value,
    *,
    byte_order: Order,
    word_order: Order,
    current: int | None = None,
) -> list[int]:
    """Encode `value` into the registers (or ``[0]``/``[1]`` coil state) of `point`.

    For a bool with `bit`, `current` is the register's present content; the result is that
    register with the bit changed. Raises `CodecError` with a message fit for a cloud reply.
    """
    name = point.measurepoint
    if point.table.is_bit or point.type is DataType.BOOL:
        state = _as_bool(name, value)
        if point.table.is_bit or point.bit is None:
            return [int(state)]
        if current is None:
            raise CodecError(f"{name}: writing bit {point.bit} needs the register's current value")
        if not 0 <= current <= 0xFFFF:
            raise CodecError(f"{name}: current register value {current} out of 0..65535")
        mask = 1 << point.bit
        return [(current | mask) if state else (current & ~mask)]
    if point.type is DataType.STRING:
        return _encode_string(point, value, byte_order)

    if point.enum is not None:
        code = _enum_raw(point, value)
        if point.type.is_float:
            return _float_words(point, code, byte_order, word_order)
        return _int_words(point, code, byte_order, word_order)
    number = _as_number(name, value)
    if point.type.is_float:
        return _float_words(point, _unscale(point, number), byte_order, word_order)
    raw = _unscale(point, number)
    return _int_words(point, _round_to_int(name, raw), byte_order, word_order)


def _as_bool(name: str, value: Value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    raise CodecError(f"{name}: expected a bool (true/false or 0/1), got {value!r}")


def _as_number(name: str, value: Value) -> float | int:
    if isinstance(value, str):
        raise CodecError(f"{name}: expected a number, got the string {value!r}")
    if isinstance(value, float) and not math.isfinite(value):
        raise CodecError(f"{name}: cannot write the non-finite value {value!r}")
    return int(value) if isinstance(value, bool) else value


def _unscale(point: PointSpec, number: float | int) -> float | int:
    if point.scale == 1 and point.offset == 0:
        return number
    if point.scale == 0:
        raise CodecError(f"{point.measurepoint}: scale 0 cannot be inverted")
    return (number - point.offset) / point.scale


def _round_to_int(name: str, raw: float | int) -> int:
    if isinstance(raw, int):
        return raw
    if not math.isfinite(raw):
        raise CodecError(f"{name}: value is not finite after scaling")
    return round(raw)


def _enum_raw(point: PointSpec, value: Value) -> int:
    assert point.enum is not None
    if isinstance(value, str):
        for code, label in point.enum.items():
            if label == value:
                return code
        labels = ", ".join(repr(label) for label in point.enum.values())
        raise CodecError(f"{point.measurepoint}: unknown label {value!r} (one of {labels})")
    if isinstance(value, bool) or not isinstance(value, int):
        raise CodecError(f"{point.measurepoint}: expected an enum label or raw int, got {value!r}")
    return value


def _int_words(point: PointSpec, raw: int, byte_order: Order, word_order: Order) -> list[int]:
    raw_range = point.type.raw_range
    assert raw_range is not None, point.type  # the caller passes integer types only
    low, high = raw_range
    if not low <= raw <= high:
        raise CodecError(
            f"{point.measurepoint}: raw value {raw} out of range {low}..{high} for {point.type}"
        )
    size = 2 * point.register_count
    if point.type.is_bcd:
        data = bytes.fromhex(f"{raw:0{2 * size}d}")
    else:
        data = raw.to_bytes(size, "big", signed=point.type.is_signed)
    return _bytes_to_words(data, byte_order, word_order)


def _float_words(
    point: PointSpec, raw: float | int, byte_order: Order, word_order: Order
) -> list[int]:
    raw = float(raw)
    if not math.isfinite(raw):
        raise CodecError(f"{point.measurepoint}: value is not finite after scaling")
    if point.type is DataType.FLOAT32:
        if abs(raw) > FLOAT32_MAX:
            raise CodecError(f"{point.measurepoint}: {raw!r} out of float32 range")
        data = struct.pack(">f", raw)
    else:
        data = struct.pack(">d", raw)
    return _bytes_to_words(data, byte_order, word_order)


def _bytes_to_words(data: bytes, byte_order: Order, word_order: Order) -> list[int]:
    words = [int.from_bytes(data[i : i + 2], byte_order.value) for i in range(0, len(data), 2)]
    return words if word_order is Order.BIG else words[::-1]


def _encode_string(point: PointSpec, value: Value, byte_order: Order) -> list[int]:
    name = point.measurepoint
    if not isinstance(value, str):
        raise CodecError(f"{name}: expected a string, got {value!r}")
    if "\x00" in value:
        raise CodecError(f"{name}: a string cannot contain NUL")
    try:
        data = value.encode("latin-1")
    except UnicodeEncodeError as exc:
        raise CodecError(f"{name}: {value!r} has characters outside Latin-1") from exc
    size = 2 * point.register_count
    if len(data) > size:
        raise CodecError(f"{name}: {len(data)} characters do not fit in {size}")
    data = data.ljust(size, b"\x00")
    return [int.from_bytes(data[i : i + 2], byte_order.value) for i in range(0, size, 2)]
