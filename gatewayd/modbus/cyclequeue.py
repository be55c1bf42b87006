"""The poll cycles waiting for the spool writer, bounded by cycles and by points.

A cycle count alone does not bound memory: at 200 k points a cycle, 64 waiting cycles of a
stalled spool (a slow SD card, a disk-full episode) would hold hundreds of MiB. Bounded by
points too, a slow disk makes the pollers wait (their next cycles run late, which the
scheduler already handles) instead of piling samples up in RAM. One cycle is always taken
into an empty queue, however large, so a big bus cannot deadlock itself.
"""

from __future__ import annotations

import asyncio

from gatewayd.modbus.poller import CycleResult

__all__ = ["CycleQueue"]


class CycleQueue(asyncio.Queue[CycleResult]):
    """An asyncio queue of cycles that is also full at `max_points` waiting samples."""

    def __init__(self, max_cycles: int, max_points: int) -> None:
        super().__init__(max_cycles)
        self.max_points = max_points
        self.points = 0  #: samples in the cycles now waiting

    def full(self) -> bool:
        """Full by count, or by points unless empty (`put` waits on this)."""
        return super().full() or (self.points >= self.max_points and not self.empty())

    # asyncio.Queue's documented subclass hooks (PriorityQueue and LifoQueue use them).
    def _put(self, item: CycleResult) -> None:
        self.points += item.points
        super()._put(item)

    def _get(self) -> CycleResult:
        item = super()._get()
        self.points -= item.points
        return item
