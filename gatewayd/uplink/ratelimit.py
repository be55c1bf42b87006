"""Token buckets that pace the backlog so it never starves live data or exceeds EnOS' rate."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up. Pure: the caller passes the time.

    `reserve` spends first and tells how long to wait: a message larger than the burst
    borrows from the future instead of waiting forever, and the long-run rate stays exact.
    """

    rate: float
    burst: float
    _tokens: float = 0.0
    _stamp: float | None = None

    def _refill(self, now: float) -> None:
        if self._stamp is None:
            self._tokens = self.burst
        elif now > self._stamp:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = max(now, self._stamp or now)

    def reserve(self, amount: float, now: float) -> float:
        """Spend `amount` tokens; return the seconds to wait before using them."""
        self._refill(now)
        self._tokens -= amount
        return 0.0 if self._tokens >= 0 else -self._tokens / self.rate
