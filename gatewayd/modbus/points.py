"""Points as the running daemon reads them: frozen, slotted specs compiled from the config.

The validated pydantic `PointConfig` is the loader's: it checks the YAML and says where a
mistake is. The pollers read a point thousands of times a second and keep it for the
daemon's life, so each model's points are compiled once, at load time, into `Point`s: plain
frozen dataclasses with slots (no per-instance dict, no validator behind each attribute,
the register count computed once), shared by every device of the model (`layout.py`).
A `Point` satisfies the cores' structural `specs.PointSpec` and the mapper's
`MappedPoint`; it imports nothing but the standard library and the config's enums.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING

from gatewayd.config.enums import DataType, Order, Table

if TYPE_CHECKING:
    from gatewayd.config.models import PointConfig


@dataclass(frozen=True, slots=True)
class Point:
    """One register range (or coil) mapped to one measurepoint (see `PointConfig`)."""

    measurepoint: str
    table: Table
    address: int
    type: DataType
    register_count: int  # registers (or bits) the point spans
    count: int | None = None  # registers of a string
    bit: int | None = None  # bool inside a register
    byte_order: Order | None = None  # None: the device's
    word_order: Order | None = None
    scale: float = 1.0
    offset: float = 0.0
    enum: Mapping[int, str] | None = None
    poll_interval: float | None = None  # seconds; None: the device's
    writable: bool = False
    min: float | None = None
    max: float | None = None
    quality: bool = False  # send {"value", "quality"} to EnOS
    unit: str | None = None


def compile_point(point: PointConfig) -> Point:
    """The frozen spec of a validated config point (names interned: many devices, one
    model, and the spool and uplink see the same measurepoint strings)."""
    return Point(
        measurepoint=sys.intern(point.measurepoint),
        table=point.table,
        address=point.address,
        type=point.type,
        register_count=point.register_count,
        count=point.count,
        bit=point.bit,
        byte_order=point.byte_order,
        word_order=point.word_order,
        scale=point.scale,
        offset=point.offset,
        enum=None if point.enum is None else MappingProxyType(dict(point.enum)),
        poll_interval=point.poll_interval,
        writable=point.writable,
        min=point.min,
        max=point.max,
        quality=point.quality,
        unit=point.unit,
    )
