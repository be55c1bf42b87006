"""What the spool hands out and how a dead-lettered point value is stored in one column.

Values are stored natively (INTEGER, REAL, TEXT) so a row stays small and needs no
parsing. Three values SQLite cannot keep apart or cannot hold go in as short BLOBs:
booleans (the sqlite3 module binds `True` as the integer 1, but EnOS distinguishes
`true` from `1`), integers outside the signed 64-bit range (uint64 registers) and NaN
(SQLite turns a NaN REAL into NULL). A BLOB of one byte is a boolean; any other BLOB is
the ASCII text of an int or a float.
"""

from __future__ import annotations

import math
from enum import StrEnum
from typing import NamedTuple

from gatewayd.samples import Value

_I64_MIN = -(1 << 63)
_I64_MAX = (1 << 63) - 1
_TRUE = b"\x01"
_FALSE = b"\x00"


class Kind(StrEnum):
    """The two kinds of spooled rows, one table each (samples live in `frames`)."""

    SAMPLES = "samples"
    EVENTS = "events"


class SpooledFrame(NamedTuple):
    """A frame as taken from the spool (see `frames.py`); `id` is what `ack`/`release`/
    `dead_letter`/`rewrite_frame` take."""

    id: int
    device: str
    ts_ms: int
    points: int  # how many measurepoints `body` holds
    body: str  # JSON object text, point → value as the uplink's shapes wrote it


class SpooledEvent(NamedTuple):
    """An event as taken from the spool; `id` is what `ack`/`release`/`dead_letter` take."""

    id: int
    device: str
    event_id: str
    params: dict[str, Value]
    ts_ms: int


class DeadLetter(NamedTuple):
    """A row EnOS rejected for good, with the reply that rejected it."""

    id: int  # id in the dead-letter table (oldest first)
    kind: Kind
    row_id: int  # the row's id in its own table when it was rejected
    device: str
    name: str  # measurepoint id for samples, event id for events
    value: Value | None  # samples only
    quality: int | None  # samples only
    params: dict[str, Value] | None  # events only
    ts_ms: int
    code: int
    message: str
    failed_ms: int


def encode_value(value: Value) -> int | float | str | bytes:
    """The column value for a point value (see the module docstring for the BLOB cases)."""
    kind = type(value)
    if kind is bool:
        return _TRUE if value else _FALSE
    if kind is int and not _I64_MIN <= value <= _I64_MAX:  # type: ignore[operator]
        return str(value).encode("ascii")
    if kind is float and math.isnan(value):  # type: ignore[arg-type]
        return b"nan"
    return value


def decode_value(stored: int | float | str | bytes) -> Value:
    """The point value for a column value; inverse of `encode_value`."""
    if type(stored) is not bytes:
        return stored  # type: ignore[return-value]
    if len(stored) == 1:
        return stored == _TRUE
    text = stored.decode("ascii")
    try:
        return int(text)
    except ValueError:
        return float(text)
