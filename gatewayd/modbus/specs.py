"""What the pure Modbus cores read of a point and of a device (standard library only).

The codec, the planner and the block decoder take points and order defaults by these
shapes, not by the pydantic config classes: the validated `PointConfig`, `DeviceConfig`
and `DeviceModel` fit them as they are (no copy on the poll path), and a test or a tool
can hand over a plain frozen dataclass instead. The cores thus import no pydantic.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from gatewayd.config.enums import DataType, Order, Table


class PointSpec(Protocol):
    """One register range (or coil) mapped to one measurepoint, as the cores read it."""

    @property
    def measurepoint(self) -> str: ...
    @property
    def table(self) -> Table: ...
    @property
    def address(self) -> int: ...
    @property
    def type(self) -> DataType: ...
    @property
    def count(self) -> int | None: ...  # registers of a string
    @property
    def bit(self) -> int | None: ...  # bool inside a register
    @property
    def byte_order(self) -> Order | None: ...  # None: the device's
    @property
    def word_order(self) -> Order | None: ...
    @property
    def scale(self) -> float: ...
    @property
    def offset(self) -> float: ...
    @property
    def enum(self) -> Mapping[int, str] | None: ...
    @property
    def poll_interval(self) -> float | None: ...  # seconds; None: the device's
    @property
    def register_count(self) -> int: ...  # registers (or bits) the point spans


class DeviceOrders(Protocol):
    """A device's (or its model's) byte and word order overrides."""

    @property
    def byte_order(self) -> Order | None: ...
    @property
    def word_order(self) -> Order | None: ...


class ModelOrders(Protocol):
    """A model's byte and word order: the last default."""

    @property
    def byte_order(self) -> Order: ...
    @property
    def word_order(self) -> Order: ...
