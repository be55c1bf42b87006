"""The token bucket: a rate with a bounded saving, pure (the caller passes the time).

Users: the uplink's backlog pace (`gatewayd.uplink.ratelimit`: points and bytes per
second), the Modbus probe budget (`gatewayd.modbus.probebudget`: seconds of bus time), and
the emulator's link rate cap.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TokenBucket:
    """`rate` tokens per second, at most `burst` saved up; full at its first use.

    `reserve` spends first and tells how long to wait: a message larger than the burst
    borrows from the future instead of waiting forever, and the long-run rate stays exact.
    The level may go negative (a debt paid back at `rate`).
    """

    rate: float
    burst: float
    _tokens: float = 0.0
    _stamp: float | None = None

    def level(self, now: float) -> float:
        """The tokens held at `now` (negative while a debt is being paid back)."""
        if self._stamp is None:
            self._tokens = self.burst
            self._stamp = now
        elif now > self._stamp:
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
        return self._tokens

    def take(self, amount: float, now: float) -> float:
        """Spend `amount` tokens at `now` (into debt if need be); the level left."""
        self._tokens = self.level(now) - amount
        return self._tokens

    def reserve(self, amount: float, now: float) -> float:
        """Spend `amount` tokens; return the seconds to wait before using them."""
        left = self.take(amount, now)
        return 0.0 if left >= 0 else -left / self.rate
