"""The backlog's pace: resent history never starves live data or exceeds EnOS' rate.

Two token buckets (`gatewayd.tokenbucket`): points per second, which only the backlog
spends, and bytes per second, which live data spends too without ever waiting, so the
backlog gets what live traffic leaves of the link. Pure: the caller passes the time.
"""

from __future__ import annotations

from gatewayd.tokenbucket import TokenBucket


class BacklogPace:
    """Seconds a backlog message waits; bytes live messages take from the same link."""

    def __init__(self, points_per_s: float, bytes_per_s: float, max_message_bytes: int) -> None:
        self._points = TokenBucket(rate=points_per_s, burst=points_per_s)
        # A burst above one message would let a resume open with several at once.
        self._bytes = TokenBucket(rate=bytes_per_s, burst=min(bytes_per_s, max_message_bytes))

    def backlog(self, points: int, size: int, now: float) -> float:
        """Book a backlog message of `points` points and `size` bytes; the wait it needs."""
        return max(self._points.reserve(points, now), self._bytes.reserve(size, now))

    def live(self, size: int, now: float) -> None:
        """Book a live message of `size` bytes: it never waits, the backlog pays for it."""
        self._bytes.reserve(size, now)
