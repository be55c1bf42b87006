"""The values that flow through the pipeline: samples and events, with their quality."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum

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


@dataclass(frozen=True, slots=True)
class Sample:
    """One measurepoint value of one sub-device at one instant (Unix epoch milliseconds)."""

    device: str  # the gatewayd device name (config `devices[].name`)
    measurepoint: str
    value: Value
    ts_ms: int
    quality: Quality = Quality.GOOD


@dataclass(frozen=True, slots=True)
class Event:
    """One event of one sub-device, fired once per transition of its rule."""

    device: str
    event_id: str
    ts_ms: int
    params: dict[str, Value] = field(default_factory=dict)
