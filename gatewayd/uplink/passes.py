"""When a per-sub-device sync (attributes, tags) passes over a device again.

A device is due at each new login (its `online_since_ms` changed), after a reload (the
whole schedule is reset), and at the time its last pass asked for. Pure: the caller
gives the clock.
"""

from __future__ import annotations

from collections.abc import Iterable

#: Shortest wait between two looks, so a pass that is due "now" cannot spin.
MIN_SLEEP_S = 0.05


class PassSchedule:
    """Per device name: the login the last pass served, and when to pass again."""

    def __init__(self) -> None:
        self._login: dict[str, int] = {}
        self._next_at: dict[str, float] = {}

    def due(self, name: str, login_ms: int, now: float) -> bool:
        """`name` needs a pass: a login it has not served yet, or its time has come."""
        if self._login.get(name) != login_ms:
            return True
        return now >= self._next_at.get(name, 0.0)

    def done(self, name: str, login_ms: int, next_at: float) -> None:
        """A pass for login `login_ms` ended; the next one is at `next_at` (monotonic)."""
        self._login[name] = login_ms
        self._next_at[name] = next_at

    def reset(self) -> None:
        """Everything is due now (a reload changed what should be in the cloud)."""
        self._next_at.clear()
        self._login.clear()

    def sleep_s(self, names: Iterable[str], now: float, longest: float) -> float:
        """How long until one of `names` is due by time (logins wake the caller)."""
        waits = [self._next_at[n] - now for n in names if n in self._next_at]
        return max(MIN_SLEEP_S, min(waits, default=longest))
