"""Spool frames: one device's points of one poll instant, as one JSON object (pure).

A frame is the JSON text of an object mapping each point's name to its value, plus how
many points it holds. The spool stores frames, not points, so draining a backlog is
concatenating text: the per-point work (grouping, shaping values, JSON encoding) is done
once, when the poll cycle is written.

How a value with a quality is written is not the spool's business: the uplink hands the
encoder `ValueShapes` (EnOS' are `gatewayd.uplink.frames.EnosQuality`) naming the points
whose values are shaped and how; every other point carries its plain value, and only
while it is good. NaN and infinity are not JSON. The encoder leaves such values out and
counts them, so the spool can say how many were not sendable.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple, Protocol, cast

from gatewayd.samples import Quality, Sample, SampleBlock, Value

#: Largest body one frame holds; a bigger poll cycle of one device is split into several
#: frames, so every frame fits an uplink message (EnOS' backlog ones: 128 KiB) with room.
FRAME_MAX_BYTES = 32 * 1024

_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode


class Frame(NamedTuple):
    """One device's points at one instant, as the exact JSON text of name → value."""

    device: str
    ts_ms: int
    points: int
    body: str


class ValueShapes(Protocol):
    """Which points carry their quality in the frame, and how (the uplink's protocol)."""

    #: The (device, point) pairs whose values are shaped; any other carries good values only.
    points: frozenset[tuple[str, str]]

    def shape(self, value: Value, quality: int) -> object:
        """The frame value of a shaped point (JSON-encodable)."""
        ...

    def split(self, shaped: object) -> tuple[Value, int]:
        """(value, quality) of a frame value, shaped or plain (a plain one was good)."""
        ...


class PlainValues:
    """No point is shaped: frames hold plain, good values."""

    points: frozenset[tuple[str, str]] = frozenset()

    def shape(self, value: Value, quality: int) -> object:
        """Not called (no point is shaped): the value itself."""
        return value

    def split(self, shaped: object) -> tuple[Value, int]:
        """A plain value was good."""
        return cast(Value, shaped), int(Quality.GOOD)


class FrameEncoder:
    """Groups samples into frames, shaping each value once (as `shapes` says)."""

    def __init__(self, shapes: ValueShapes | None = None) -> None:
        """`shapes`: the uplink's value shapes (default: plain values only)."""
        self.shapes: ValueShapes = shapes if shapes is not None else PlainValues()
        self._shaped_devices = frozenset(device for device, _ in self.shapes.points)

    def encode(
        self, samples: Iterable[Sample], blocks: Iterable[SampleBlock] = ()
    ) -> tuple[list[Frame], int]:
        """Frames for `blocks`, then `samples`, in first-seen (device, time) order, and
        the count of values left out as not sendable.

        A point repeated within one (device, time) - the same instant spooled twice - goes
        to a second frame, so no value is silently merged away.
        """
        groups: dict[tuple[str, int, int], dict[str, Any]] = {}
        shaped = self.shapes.points
        shape = self.shapes.shape
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
            if shaped and (sample.device, sample.measurepoint) in shaped:
                value = shape(value, sample.quality)
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
        """(measurepoint, frame value) of a block: GOOD values, shaped where set."""
        pairs = zip(block.measurepoints, block.values, strict=True)
        if block.device not in self._shaped_devices:
            return pairs
        shaped, shape, device = self.shapes.points, self.shapes.shape, block.device
        good = int(Quality.GOOD)
        return [
            (point, shape(value, good) if (device, point) in shaped else value)
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
    """The points of a frame body, name → frame value (the rare, per-point paths)."""
    points: dict[str, Any] = json.loads(body)
    return points


def encode_body(points: Mapping[str, Any]) -> str:
    """A frame body for frame values (inverse of `parse_body`)."""
    return _dumps(dict(points))
