"""Test helper: spool frames expanded into one tuple per point, for assertions."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, NamedTuple

from gatewayd.spool.frames import parse_body
from gatewayd.spool.rows import SpooledFrame
from gatewayd.spool.store import SpoolStore
from gatewayd.uplink.frames import split_value


class Point(NamedTuple):
    """One point of a taken frame; `id` is the frame's id (what ack/release take)."""

    id: int
    device: str
    measurepoint: str
    value: Any
    quality: int
    ts_ms: int


def points_of(frames: Iterable[SpooledFrame]) -> list[Point]:
    """Every point of `frames`, in frame order and, within a frame, in body order."""
    return [
        Point(frame.id, frame.device, name, *split_value(shaped), frame.ts_ms)
        for frame in frames
        for name, shaped in parse_body(frame.body).items()
    ]


def take_points(store: SpoolStore, limit: int, **filters: Any) -> list[Point]:
    """`take_frames(limit)` (in flight now), as points."""
    return points_of(store.take_frames(limit, **filters))
