"""The values that flow through the pipeline: samples and events, with their quality."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from enum import IntEnum
from itertools import repeat
from typing import NamedTuple

#: A decoded point value as EnOS receives it.
Value = int | float | str | bool


class Quality(IntEnum):
    """Sample quality, sent as EnOS' integer `quality` field where a point enables it.

    EnOS documents quality as an integer 0-9 without fixing meanings; gatewayd uses
    0 = good, 1 = bad (the read failed; the value is the last good one), 2 = stale (no
    fresh reading within the point's interval). The README documents this mapping.
    """

    GOOD = 0
    BAD = 1
    STALE = 2


class _SampleFields(NamedTuple):
    device: str  # the gatewayd device name (config `devices[].name`)
    measurepoint: str
    value: Value
    ts_ms: int
    quality: Quality = Quality.GOOD


class Sample(_SampleFields):
    """One measurepoint value of one sub-device at one instant (Unix epoch milliseconds).

    Immutable, with the equality and hash of a frozen dataclass of these fields: equal only
    to another `Sample` with equal fields, hashed by the field tuple, not ordered. It is a
    tuple underneath because the poller builds thousands per second and a tuple is built
    in C (`good_samples`), where a frozen dataclass runs Python code per field.
    """

    __slots__ = ()

    def __eq__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            return tuple.__eq__(self, other)
        # A plain tuple would compare equal field by field: a dataclass never does.
        return False if isinstance(other, tuple) else NotImplemented

    def __ne__(self, other: object) -> bool:
        if other.__class__ is self.__class__:
            return tuple.__ne__(self, other)
        return True if isinstance(other, tuple) else NotImplemented

    __hash__ = tuple.__hash__

    # A dataclass without `order` refuses <, <=, >, >=: so does a Sample.
    def __lt__(self, other: object) -> bool:
        return NotImplemented

    __le__ = __gt__ = __ge__ = __lt__


def good_samples(
    device: str, measurepoints: Iterable[str], values: Iterable[Value], ts_ms: int
) -> list[Sample]:
    """GOOD samples of one device at one instant, pairing `measurepoints` with `values`.

    The same as ``[Sample(device, m, v, ts_ms) for m, v in zip(measurepoints, values)]``,
    built without running Python code per sample (the poller's hot path).
    """
    fields = zip(repeat(device), measurepoints, values, repeat(ts_ms), repeat(Quality.GOOD))
    return list(map(tuple.__new__, repeat(Sample), fields))


class SampleBlock(NamedTuple):
    """GOOD values of one device read at one instant (one response), kept as columns.

    The poll hot path makes one block per response instead of a `Sample` per point; the
    spool encodes a block into a frame straight from its columns. `samples()` gives the
    equivalent samples. Values are finite (NaN/±inf take the per-point path) and shared
    with later cycles: read-only.
    """

    device: str
    measurepoints: Sequence[str]
    values: Sequence[Value]
    ts_ms: int

    @property
    def points(self) -> int:
        """How many points the block holds."""
        return len(self.values)

    def samples(self) -> list[Sample]:
        """The block as GOOD `Sample`s, in its order."""
        return good_samples(self.device, self.measurepoints, self.values, self.ts_ms)


@dataclass(frozen=True, slots=True)
class Event:
    """One event of one sub-device, fired once per transition of its rule."""

    device: str
    event_id: str
    ts_ms: int
    params: dict[str, Value] = field(default_factory=dict)
