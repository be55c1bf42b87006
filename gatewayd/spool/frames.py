"""Spool frames: one device's points of one poll instant, pre-encoded for EnOS (pure).

A frame is what one batch record carries: the exact JSON text of the record's
``measurepoints`` object, plus how many points it holds. The spool stores frames, not
points, so draining a backlog is concatenating text: the per-point work (grouping,
shaping values, JSON encoding) is done once, when the poll cycle is written.

Shaping follows EnOS (enos-protocol.md §3.5): a point whose model enables the quality
indicator goes out as ``{"value": v, "quality": q}``, any other point as its plain value.
A non-good value of a point without the indicator cannot be sent (EnOS cannot tell it
from a good one), nor can NaN or infinity (not JSON): the encoder leaves them out and
counts them, so the spool can say how many were not sendable.
"""

from __future__ import annotations

import json
import math
from collections.abc import Collection, Iterable, Mapping
from typing import Any, NamedTuple

from gatewayd.config.models import Config
from gatewayd.samples import Quality, Sample, SampleBlock, Value

#: Largest body one frame holds; a bigger poll cycle of one device is split into several
#: frames, so every frame fits a backlog message (128 KiB) with room to spare.
FRAME_MAX_BYTES = 32 * 1024

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


class Frame(NamedTuple):
    """One device's points at one instant, as the exact ``measurepoints`` JSON text."""

    device: str
    ts_ms: int
    points: int
    body: str


def quality_points(config: Config) -> frozenset[tuple[str, str]]:
    """The (device, measurepoint) pairs whose model enables EnOS' quality indicator."""
    return frozenset(
        (device.name, point.measurepoint)
        for device in config.devices
        if device.model in config.models
        for point in config.models[device.model].points
        if point.quality
    )


class FrameEncoder:
    """Groups samples into frames, shaping each value for EnOS once."""

    def __init__(self, quality_points: Collection[tuple[str, str]] = ()) -> None:
        """`quality_points`: see `quality_points(config)`."""
        self.quality_points = frozenset(quality_points)
        self._quality_devices = frozenset(device for device, _ in self.quality_points)

    def encode(
        self, samples: Iterable[Sample], blocks: Iterable[SampleBlock] = ()
    ) -> tuple[list[Frame], int]:
        """Frames for `blocks`, then `samples`, in first-seen (device, time) order, and
        the count of values left out as not sendable.

        A point repeated within one (device, time) - the same instant spooled twice - goes
        to a second frame, so no value is silently merged away.
        """
        groups: dict[tuple[str, int, int], dict[str, Any]] = {}
        quality = self.quality_points
        pending: list[Iterable[Sample]] = []
        for block in blocks:
            # A block's values are GOOD and finite: they go in from its columns while none
            # of its points is in its instant's frame yet and none repeats in it. Otherwise
            # it and every later block go point by point after the blocks (the order of
            # going one by one; blocks from the poller never repeat a point).
            if not pending:
                points = groups.setdefault((block.device, block.ts_ms, 0), {})
                if points.keys().isdisjoint(block.measurepoints):
                    before = len(points)
                    points.update(self._block_items(block))
                    if len(points) == before + block.points:
                        continue
                    for measurepoint in block.measurepoints:  # a point twice in the block
                        points.pop(measurepoint, None)
            pending.append(block.samples())
        unsendable = 0
        for sample in (sample for part in (*pending, samples) for sample in part):
            value: Any = sample.value
            if type(value) is float and not math.isfinite(value):
                unsendable += 1
                continue
            key = (sample.device, sample.measurepoint)
            if quality and key in quality:
                value = {"value": value, "quality": int(sample.quality)}
            elif sample.quality != Quality.GOOD:
                unsendable += 1
                continue
            generation = 0
            points = groups.setdefault((sample.device, sample.ts_ms, 0), {})
            while sample.measurepoint in points:
                generation += 1
                points = groups.setdefault((sample.device, sample.ts_ms, generation), {})
            points[sample.measurepoint] = value
        frames: list[Frame] = []
        for (device, ts_ms, _), points in groups.items():
            if points:
                frames.extend(_frames(device, ts_ms, points))
        return frames, unsendable

    def _block_items(self, block: SampleBlock) -> Iterable[tuple[str, Any]]:
        """(measurepoint, shaped value) of a block: GOOD values, quality-shaped where set."""
        pairs = zip(block.measurepoints, block.values, strict=True)
        if block.device not in self._quality_devices:
            return pairs
        quality, device, good = self.quality_points, block.device, int(Quality.GOOD)
        return [
            (point, {"value": value, "quality": good} if (device, point) in quality else value)
            for point, value in pairs
        ]


def _frames(device: str, ts_ms: int, points: dict[str, Any]) -> list[Frame]:
    """`points` as one frame, or several when the body would exceed `FRAME_MAX_BYTES`."""
    body = _dumps(points)
    if len(body) <= FRAME_MAX_BYTES or len(points) == 1:
        return [Frame(device, ts_ms, len(points), body)]
    items = list(points.items())
    middle = len(items) // 2
    return _frames(device, ts_ms, dict(items[:middle])) + _frames(
        device, ts_ms, dict(items[middle:])
    )


def parse_body(body: str) -> dict[str, Any]:
    """The points of a frame body, name → shaped value (the rare, per-point paths)."""
    points: dict[str, Any] = json.loads(body)
    return points


def encode_body(points: Mapping[str, Any]) -> str:
    """A frame body for already shaped values (inverse of `parse_body`)."""
    return _dumps(dict(points))


def split_value(shaped: Any) -> tuple[Value, int]:
    """(value, quality) of a shaped value; a plain value was sent as good."""
    if isinstance(shaped, dict):
        return shaped["value"], int(shaped["quality"])
    return shaped, int(Quality.GOOD)
