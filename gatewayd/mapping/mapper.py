"""Decoded point values → quality-tagged `Sample`s for one device (pure: no clock, no I/O).

What the mapping stage hands over, per device and cycle, once it has decoded the poller's
responses (indices are positions in the model's point list; times are Unix epoch
milliseconds taken by the caller):

- `good(values_by_index, ts_ms)`: the values the codec decoded this cycle;
- `good_block(indices, measurepoints, values, ts_ms, nonfinite)`: the same for one
  response's values in ascending index order, at a fraction of the cost; `block(...)`
  gives such a response as one `SampleBlock` instead (the hot path);
- `failed(indices, ts_ms)`: points whose read failed (timeout, exception, codec error);
- `stale(indices, now_ms)`: points not read this cycle (device backing off, not due).

What comes back: `Sample`s, and `DeviceMapper.last_good` remembers each point's last good
(value, ts_ms). Rules:

- A finite value is GOOD. A non-finite float (NaN/±inf from the device) is BAD: EnOS JSON
  cannot carry it, so the sample repeats the last good value with quality BAD.
- A failed read is BAD with the last good value; a point whose last good reading is older
  than its poll interval is STALE with that value (`is_stale`).
- BAD/STALE samples need a value to carry: with no good reading yet, nothing is emitted.
- Only points with ``quality: true`` get BAD/STALE samples. Without the quality field EnOS
  would take the repeated value for a fresh good reading, so for those points the honest
  signal is silence.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from itertools import repeat
from typing import Protocol

from gatewayd.samples import Quality, Sample, SampleBlock, Value

__all__ = ["DeviceMapper", "MappedPoint", "is_finite", "is_stale", "map_values"]


class MappedPoint(Protocol):
    """What the mapper reads of a point (the config's `PointConfig` fits as it is)."""

    @property
    def measurepoint(self) -> str: ...
    @property
    def quality(self) -> bool: ...  # BAD/STALE samples only for points with the indicator
    @property
    def poll_interval(self) -> float | None: ...  # seconds; None: the device's


def is_finite(value: Value) -> bool:
    """False only for NaN and ±inf floats."""
    return not (isinstance(value, float) and not math.isfinite(value))


def is_stale(last_good_ms: int, now_ms: int, interval_s: float) -> bool:
    """Whether a reading taken at `last_good_ms` is older than `interval_s` at `now_ms`."""
    return now_ms - last_good_ms > interval_s * 1000


def map_values(
    device: str,
    points: Sequence[MappedPoint],
    values_by_index: Mapping[int, Value],
    ts_ms: int,
    *,
    last_good: Mapping[int, Value] | None = None,
) -> list[Sample]:
    """Samples for one cycle's decoded values, in point order.

    Finite values are GOOD; a non-finite float becomes a BAD sample with the point's
    `last_good` value (none at all without one, or if the point has no quality field).
    """
    samples: list[Sample] = []
    for index in sorted(values_by_index):
        point = points[index]
        value = values_by_index[index]
        if is_finite(value):
            samples.append(Sample(device, point.measurepoint, value, ts_ms))
        elif point.quality and last_good is not None and index in last_good:
            samples.append(Sample(device, point.measurepoint, last_good[index], ts_ms,
                                  Quality.BAD))
    return samples


class _LastValues(Mapping[int, Value]):
    """index → last good value, over the mapper's position-indexed tables.

    The tables are two lists as long as the model's points (a time of None: no good
    reading yet): two pointers per point per device, where two dicts cost about 70 bytes
    per point per device (14 MiB at 200 devices x 1000 points).
    """

    def __init__(self, values: list[Value | None], times: list[int | None]) -> None:
        self._values = values
        self._times = times

    def __getitem__(self, index: int) -> Value:
        if index not in self:
            raise KeyError(index)
        value = self._values[index]
        assert value is not None  # a time was stored with it
        return value

    def __contains__(self, index: object) -> bool:
        times = self._times
        return isinstance(index, int) and 0 <= index < len(times) and times[index] is not None

    def __iter__(self) -> Iterator[int]:
        return (index for index, ts in enumerate(self._times) if ts is not None)

    def __len__(self) -> int:
        return len(self._times) - self._times.count(None)


class _LastGood(Mapping[int, tuple[Value, int]]):
    """index → (value, ts_ms) view over the mapper's two last-good tables.

    Values and times live in two tables so a poll stores two refs per point instead of
    allocating a (value, ts_ms) tuple per point (the hot path); this view keeps the pair API.
    """

    def __init__(self, values: _LastValues, times: list[int | None]) -> None:
        self._values = values
        self._times = times

    def __getitem__(self, index: int) -> tuple[Value, int]:
        value = self._values[index]
        ts = self._times[index]
        assert ts is not None  # `_values` raised KeyError otherwise
        return value, ts

    def __contains__(self, index: object) -> bool:
        return index in self._values

    def __iter__(self) -> Iterator[int]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


class DeviceMapper:
    """One device's mapping state: the last good (value, ts_ms) of each point."""

    def __init__(
        self, device: str, points: Sequence[MappedPoint], *, default_interval: float
    ) -> None:
        self.device = device
        self.points = tuple(points)
        self.default_interval = default_interval
        # Indexed by position in `points`; a time of None: no good reading yet.
        self._last_value: list[Value | None] = [None] * len(self.points)
        self._last_ts: list[int | None] = [None] * len(self.points)
        self._values = _LastValues(self._last_value, self._last_ts)
        #: index → (value, ts_ms) of each point's last good reading (read-only view).
        self.last_good: Mapping[int, tuple[Value, int]] = _LastGood(self._values, self._last_ts)

    def interval_of(self, index: int) -> float:
        """The poll interval of point `index` in seconds (its own, else the device's)."""
        return self.points[index].poll_interval or self.default_interval

    def good(self, values_by_index: Mapping[int, Value], ts_ms: int) -> list[Sample]:
        """Samples for freshly decoded values; remembers the finite ones as last good."""
        samples = map_values(
            self.device, self.points, values_by_index, ts_ms, last_good=self._values
        )
        for index, value in values_by_index.items():
            if is_finite(value):
                self._last_value[index] = value
                self._last_ts[index] = ts_ms
        return samples

    def good_block(
        self,
        indices: Sequence[int],
        measurepoints: Sequence[str],
        values: Sequence[Value],
        ts_ms: int,
        nonfinite: Sequence[int] = (),
    ) -> list[Sample]:
        """`good` for one response: `indices` strictly ascending, with their measurepoints.

        `nonfinite` are the positions in `values` holding NaN or ±inf (the decoder knows
        them). Without any, no Python code runs per point; the result and the last-good
        table are exactly what `good(dict(zip(indices, values)), ts_ms)` gives.
        """
        if nonfinite:
            return self.good(dict(zip(indices, values, strict=True)), ts_ms)
        return self.block(indices, measurepoints, values, ts_ms).samples()

    def block(
        self,
        indices: Sequence[int],
        measurepoints: Sequence[str],
        values: Sequence[Value],
        ts_ms: int,
    ) -> SampleBlock:
        """`good_block` for a response without NaN/±inf, as one `SampleBlock`.

        No Python code runs per point: the poll hot path.
        """
        # Stored by C loops (no Python code per point): `map` over the lists' __setitem__.
        if len(indices) != len(values):
            raise ValueError("a block needs one value per index")
        _consume(map(self._last_value.__setitem__, indices, values))
        _consume(map(self._last_ts.__setitem__, indices, repeat(ts_ms)))
        return SampleBlock(self.device, measurepoints, values, ts_ms)

    def failed(self, indices: Iterable[int], ts_ms: int) -> list[Sample]:
        """BAD samples (last good value) for points whose read failed."""
        return self._degraded(sorted(set(indices)), ts_ms, Quality.BAD)

    def stale(self, indices: Iterable[int], now_ms: int) -> list[Sample]:
        """STALE samples for those of `indices` whose last good reading outlived its interval."""
        old = [
            i
            for i in sorted(set(indices))
            if (ts := self._last_ts[i]) is not None and is_stale(ts, now_ms, self.interval_of(i))
        ]
        return self._degraded(old, now_ms, Quality.STALE)

    def _degraded(self, indices: Sequence[int], ts_ms: int, quality: Quality) -> list[Sample]:
        values = self._values
        return [
            Sample(self.device, self.points[i].measurepoint, values[i], ts_ms, quality)
            for i in indices
            if self.points[i].quality and i in values
        ]


def _consume(iterator: Iterator[object]) -> None:
    """Run `iterator` to its end in C, keeping nothing."""
    deque(iterator, maxlen=0)
