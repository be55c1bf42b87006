"""Injected clocks shared by the pollers and the uplink: the real one, and a virtual one for tests.

The poller never calls `time` or `asyncio.sleep` directly; it asks a `Clock`. In production
that is `SystemClock`. In unit tests it is `VirtualClock`, whose `sleep` parks the caller
until the test advances virtual time, so alignment, timeouts and backoff are checked
exactly and without real waiting (the "fakes shipped with the package" habit of httpx).
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import time
from typing import Protocol


class Clock(Protocol):
    """Monotonic time for scheduling, wall time for timestamps, and an awaitable sleep."""

    def monotonic(self) -> float:
        """Seconds on a clock that never jumps (scheduling, timeouts, backoff)."""
        ...

    def time(self) -> float:
        """Wall-clock Unix seconds (sample timestamps, cycle alignment phase)."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Suspend the caller for `seconds` of this clock's time."""
        ...


class SystemClock:
    """The real clocks: `time.monotonic`, `time.time` and `asyncio.sleep`."""

    def monotonic(self) -> float:
        """See `Clock.monotonic`."""
        return time.monotonic()

    def time(self) -> float:
        """See `Clock.time`."""
        return time.time()

    async def sleep(self, seconds: float) -> None:
        """See `Clock.sleep`."""
        await asyncio.sleep(max(0.0, seconds))


class VirtualClock:
    """A clock whose time moves only when a test calls `advance` / `advance_to`.

    Sleepers are kept in a heap and woken in deadline order; between wake-ups the clock
    lets the event loop run every ready task (`settle`) so that work triggered by one
    wake-up is done before time moves on. Only code that does no real I/O should run
    under it (fake clients that express delays with `clock.sleep`).
    """

    #: Loop iterations `settle` grants: enough for any chain of ready callbacks in tests.
    SETTLE_ROUNDS = 64

    def __init__(self, monotonic: float = 1000.0, wall: float = 1_700_000_000.0) -> None:
        self._now = monotonic
        self._wall_offset = wall - monotonic
        self._sleepers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def monotonic(self) -> float:
        """See `Clock.monotonic`."""
        return self._now

    def time(self) -> float:
        """See `Clock.time`: moves in lock-step with `monotonic`."""
        return self._now + self._wall_offset

    async def sleep(self, seconds: float) -> None:
        """Park until virtual time reaches now + `seconds` (a zero sleep just yields)."""
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + seconds, next(self._seq), future))
        await future

    @property
    def pending(self) -> int:
        """Sleepers not yet woken (cancelled ones excluded)."""
        return sum(1 for _, _, future in self._sleepers if not future.done())

    async def settle(self) -> None:
        """Let every ready task run until the loop has nothing left to do at this instant."""
        for _ in range(self.SETTLE_ROUNDS):
            await asyncio.sleep(0)

    async def advance(self, seconds: float) -> None:
        """Move time forward by `seconds`, waking sleepers in order on the way."""
        await self.advance_to(self._now + seconds)

    async def advance_to(self, target: float) -> None:
        """Move time forward to `target` (monotonic), waking sleepers in order on the way."""
        await self.settle()
        while self._sleepers and self._sleepers[0][0] <= target:
            deadline, _, future = heapq.heappop(self._sleepers)
            if future.done():  # the sleeper was cancelled
                continue
            self._now = max(self._now, deadline)
            future.set_result(None)
            await self.settle()
        self._now = max(self._now, target)
        await self.settle()
