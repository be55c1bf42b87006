"""EnOS value shaping for spool frames: the quality indicator (PROTOCOL.md §3.5).

A point whose model enables the quality indicator goes out as ``{"value": v, "quality": q}``
(0 good, 1 bad, 2 stale: `gatewayd.samples.Quality`); any other point as its plain value,
and only while good (EnOS could not tell a repeated value from a fresh one). The spool's
frame encoder asks `EnosQuality` which points are shaped and how, so frames are written
once, already in the form a `measurepoints` object of a batch record takes.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import cast

from gatewayd.config.models import Config
from gatewayd.samples import Quality, Value

__all__ = ["EnosQuality", "quality_points", "split_value"]


def quality_points(config: Config) -> frozenset[tuple[str, str]]:
    """The (device, measurepoint) pairs whose model enables EnOS' quality indicator."""
    return frozenset(
        (device.name, point.measurepoint)
        for device in config.devices
        if device.model in config.models
        for point in config.models[device.model].points
        if point.quality
    )


def split_value(shaped: object) -> tuple[Value, int]:
    """(value, quality) of a frame value; a plain value was sent as good."""
    if isinstance(shaped, dict):
        return shaped["value"], int(shaped["quality"])
    return cast(Value, shaped), int(Quality.GOOD)


class EnosQuality:
    """`ValueShapes` for EnOS: ``{"value", "quality"}`` objects for the quality points."""

    def __init__(self, points: Collection[tuple[str, str]] = ()) -> None:
        """`points`: the (device, measurepoint) pairs with the indicator (`quality_points`)."""
        self.points = frozenset(points)

    @classmethod
    def from_config(cls, config: Config) -> EnosQuality:
        """The shapes of the configured models' quality points."""
        return cls(quality_points(config))

    def shape(self, value: Value, quality: int) -> object:
        """The value with its quality, as EnOS takes it."""
        return {"value": value, "quality": int(quality)}

    def split(self, shaped: object) -> tuple[Value, int]:
        """(value, quality) of a frame value (see `split_value`)."""
        return split_value(shaped)
