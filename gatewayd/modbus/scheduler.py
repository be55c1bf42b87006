"""When each point of a device is due: interval-aligned ticks, no drift (pure; time is an argument).

Points are grouped by poll interval. Each group ticks at the multiples of its interval on
the wall clock (so a 5 s point is read at :00, :05, ... and a 1 s and a 5 s point of the
same device land in one merged read every fifth second), but deadlines are kept on the
monotonic clock as `phase + index * interval` with an integer tick index: a deadline is
computed afresh from the index every time, so errors never accumulate (no drift), and a
wall-clock step (NTP at boot on a box without RTC) cannot make the scheduler burst or
stall. A late wake-up skips the missed ticks instead of catching up with a burst.
"""

from __future__ import annotations

import functools
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

#: Deadlines closer than this are the same instant (float noise of `phase + k * interval`).
TICK_TOLERANCE = 1e-6


@functools.lru_cache(maxsize=64)
def _by_interval(intervals: tuple[float, ...]) -> tuple[tuple[float, tuple[int, ...]], ...]:
    """(interval, point indices) groups, ascending; memoised, so the devices of one model
    share one tuple of indices per group instead of a copy each."""
    by_interval: dict[float, list[int]] = defaultdict(list)
    for index, interval in enumerate(intervals):
        if interval <= 0:
            raise ValueError(f"point {index}: poll interval must be positive")
        by_interval[interval].append(index)
    return tuple((interval, tuple(points)) for interval, points in sorted(by_interval.items()))


@dataclass(slots=True)
class _IntervalGroup:
    interval: float
    phase: float
    index: int
    points: tuple[int, ...]

    @property
    def due(self) -> float:
        return self.phase + self.index * self.interval


def _first_index_at_or_after(t: float, interval: float, phase: float) -> int:
    return math.ceil((t - phase) / interval - TICK_TOLERANCE)


class DeviceSchedule:
    """The due ticks of one device's points, grouped by interval.

    `intervals[i]` is the poll interval of point `i` (seconds). `wall_offset` is
    wall time minus monotonic time, used once to put ticks on wall-clock multiples.
    The first tick of each group is the first aligned instant at or after `now`.
    """

    def __init__(self, intervals: Sequence[float], *, now: float, wall_offset: float) -> None:
        self._groups = []
        for interval, points in _by_interval(tuple(intervals)):
            phase = (-wall_offset) % interval
            self._groups.append(
                _IntervalGroup(
                    interval=interval,
                    phase=phase,
                    index=_first_index_at_or_after(now, interval, phase),
                    points=tuple(points),
                )
            )

    @property
    def shortest_interval(self) -> float:
        """The shortest poll interval among the device's points (inf when it has none)."""
        return min((group.interval for group in self._groups), default=math.inf)

    def next_due(self) -> float:
        """Monotonic time of the next tick of any group (inf when there are no points)."""
        return min((group.due for group in self._groups), default=math.inf)

    def take_due(self, now: float) -> tuple[int, ...]:
        """Points due at `now` (sorted); their groups move to their next tick after `now`.

        Ticks missed because `now` is late are skipped, not replayed.
        """
        groups: list[tuple[int, ...]] = []
        for group in self._groups:
            if group.due <= now + TICK_TOLERANCE:
                groups.append(group.points)
                after_now = math.floor((now - group.phase) / group.interval + TICK_TOLERANCE) + 1
                group.index = max(group.index + 1, after_now)
        if len(groups) == 1:
            # The common case (one interval due): the group's own tuple, ascending already
            # and shared by the devices of the model, not a sorted copy per device and tick.
            return groups[0]
        return tuple(sorted(index for points in groups for index in points))
