"""Pure bookkeeping of cloud commands: which ids ran (and their reply), and what is admitted.

`CommandLedger` answers "has this command been seen?" for the dispatcher. A key is the
command topic and the id *with its JSON type* (``5`` and ``"5"`` are two commands,
PROTOCOL.md §2.2). The first delivery of a key runs; a delivery while it runs waits for its
outcome; one after it is answered with the stored reply. Only finished outcomes are forgotten
(oldest first, beyond `remember`), so a command in flight can never run twice.

`Admission` bounds what waits for a device: at most `per_device` commands pending per
target device and `total` in all. Nothing here does I/O or knows about asyncio.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from enum import Enum
from typing import Generic, TypeVar

K = TypeVar("K", bound=Hashable)
W = TypeVar("W")


class Arrival(Enum):
    """What to do with a delivery that has no stored reply yet."""

    RUN = "run"  # first delivery: execute it, then `finish`
    WAIT = "wait"  # the same command is running: its outcome answers this delivery too


@dataclass(slots=True)
class _Entry(Generic[W]):
    reply: bytes | None = None
    waiters: list[W] = field(default_factory=list)


class CommandLedger(Generic[K, W]):
    """Seen commands by key: running ones with the deliveries waiting, finished with reply."""

    def __init__(self, remember: int) -> None:
        if remember < 1:
            raise ValueError("remember at least one finished command")
        self._remember = remember
        self._entries: OrderedDict[K, _Entry[W]] = OrderedDict()
        self._finished = 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def running(self) -> int:
        """Commands started and not finished."""
        return len(self._entries) - self._finished

    def arrive(self, key: K, waiter: W) -> Arrival | bytes:
        """A delivery of `key`: its stored reply, or whether to run it or wait (`waiter` kept)."""
        entry = self._entries.get(key)
        if entry is None:
            self._entries[key] = _Entry(waiters=[waiter])
            return Arrival.RUN
        if entry.reply is not None:
            self._entries.move_to_end(key)  # asked again: keep it longest
            return entry.reply
        entry.waiters.append(waiter)
        return Arrival.WAIT

    def finish(self, key: K, reply: bytes) -> list[W]:
        """`key` ran and is answered with `reply`: the deliveries waiting for it, in order."""
        entry = self._entries[key]
        waiters, entry.waiters, entry.reply = entry.waiters, [], reply
        self._entries.move_to_end(key)
        self._finished += 1
        while self._finished > self._remember:
            self._evict_oldest_finished()
        return waiters

    def abandon(self, key: K) -> list[W]:
        """`key` did not run (refused, or cancelled before an outcome): forget it."""
        entry = self._entries.pop(key, None)
        if entry is None:
            return []
        if entry.reply is not None:
            self._finished -= 1
        return entry.waiters

    def _evict_oldest_finished(self) -> None:
        for key, entry in self._entries.items():
            if entry.reply is not None:
                del self._entries[key]
                self._finished -= 1
                return


class Admission(Generic[K]):
    """Bounded pending commands: `per_device` per target and `total` in all."""

    def __init__(self, *, per_device: int, total: int) -> None:
        if not 0 < per_device <= total:
            raise ValueError("need 0 < per_device <= total")
        self.per_device = per_device
        self.total = total
        self._pending: dict[K, int] = {}
        self._count = 0

    @property
    def pending(self) -> int:
        """Commands admitted and not yet released."""
        return self._count

    def pending_for(self, device: K) -> int:
        """Commands pending for `device`."""
        return self._pending.get(device, 0)

    def admit(self, device: K) -> bool:
        """Take a slot for `device`; False (nothing taken) when it or the total is full."""
        held = self._pending.get(device, 0)
        if held >= self.per_device or self._count >= self.total:
            return False
        self._pending[device] = held + 1
        self._count += 1
        return True

    def release(self, device: K) -> None:
        """Give back a slot taken by `admit` (empty devices are dropped: memory stays bounded)."""
        held = self._pending[device] - 1
        if held:
            self._pending[device] = held
        else:
            del self._pending[device]
        self._count -= 1
