"""Trouble episodes: one line when one starts, one line when it is over, silence between.

The daemon's logging rule ("one warning per episode, one 'recovered' line") for anything
that can fail over and over: a device polled every second, a status file on a read-only
disk, a spool dropping rows, a crashing bus task, cloud commands refused as overloaded.
An episode is open from its first failure until its end; meanwhile it counts what it
cost (failures, rows, refusals), and its closing line says how much, and, if asked, for
how long. Keys are anything hashable (a device name, a kind of failure).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable
from typing import Any


class Episodes:
    """Open episodes by key, each with its start time and what it has cost so far."""

    def __init__(self, logger: Any, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._log = logger
        self._clock = clock
        self._open: dict[Hashable, tuple[float, int]] = {}  # key -> (since, count)

    def __contains__(self, key: Hashable) -> bool:
        """True between the start of `key`'s episode and its end."""
        return key in self._open

    @property
    def open(self) -> tuple[Hashable, ...]:
        """Keys with an open episode, oldest first."""
        return tuple(self._open)

    def count(self, key: Hashable) -> int:
        """What `key`'s open episode has cost so far (0 when none is open)."""
        state = self._open.get(key)
        return 0 if state is None else state[1]

    def start(self, key: Hashable, event: str, *, level: str = "warning", **fields: Any) -> bool:
        """Open `key`'s episode with `event` unless it is open already; True if it logged."""
        if key in self._open:
            return False
        self._open[key] = (self._clock(), 0)
        getattr(self._log, level)(event, **fields)
        return True

    def add(self, key: Hashable, count: int = 1) -> None:
        """Count `count` to `key`'s episode (opening it silently if it is not open)."""
        since, so_far = self._open.get(key, (self._clock(), 0))
        self._open[key] = (since, so_far + count)

    def set(self, key: Hashable, count: int) -> None:
        """Set the count of `key`'s episode (opening it silently if it is not open)."""
        since, _ = self._open.get(key, (self._clock(), 0))
        self._open[key] = (since, count)

    def failed(self, key: Hashable, event: str, *, level: str = "warning", **fields: Any) -> bool:
        """One more failure of `key`: `start` and count one. True if it logged."""
        started = self.start(key, event, level=level, **fields)
        self.add(key)
        return started

    def end(
        self,
        key: Hashable,
        event: str = "recovered",
        *,
        count_as: str | None = "failures",
        timed_as: str | None = None,
        **fields: Any,
    ) -> bool:
        """Close `key`'s episode with `event` at info, its count under `count_as` (None: no
        count) and its length in seconds under `timed_as` (None: not timed); True if one was
        open."""
        state = self._open.pop(key, None)
        if state is None:
            return False
        since, count = state
        summary: dict[str, Any] = {} if count_as is None else {count_as: count}
        if timed_as is not None:
            summary[timed_as] = round(self._clock() - since, 1)
        self._log.info(event, **summary, **fields)
        return True

    def ok(self, key: Hashable, event: str = "recovered", **fields: Any) -> bool:
        """A success of `key`: ends its episode with the failures and the downtime."""
        return self.end(key, event, timed_as="down_for_s", **fields)

    def forget(self, keys: Iterable[Hashable]) -> None:
        """Drop the episodes of `keys` without a line (devices a reload removed)."""
        for key in tuple(keys):
            self._open.pop(key, None)
