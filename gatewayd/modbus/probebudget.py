"""How much of a bus's time probing devices that stopped answering may take.

A dead device costs one timeout per probe, and its backoff (1 s, 2 s, 4 s, ... up to
5 min) keeps that rare in the long run. In the first minutes after devices die, though, a
line with several dead units can spend a tenth of its time waiting for answers that never
come, and the healthy devices' cycles stretch. `ProbeBudget` caps that: a probe of a
device already known to be failing is allowed while the budget holds what the probe may
cost (its timeout), every timed-out read is charged what it cost, and the budget refills
at `share` seconds per second of bus time, holding at most `capacity` seconds. With the
defaults, timeouts take at most 5 % of the bus plus one timeout, and a recovered device
is noticed at most about timeout / share seconds late (20 s for a 1 s timeout) on top of
its own backoff.

Pure: the caller passes the monotonic time; nothing here reads a clock.
"""

from __future__ import annotations

from gatewayd.tokenbucket import TokenBucket

#: Fraction of bus time that timeouts of failing devices may take in the long run.
PROBE_SHARE = 0.05


class ProbeBudget:
    """A token bucket in seconds of bus time, for probes of failing devices."""

    def __init__(self, capacity: float, now: float, share: float = PROBE_SHARE) -> None:
        if capacity <= 0 or not 0 < share <= 1:
            raise ValueError("capacity must be > 0 and share in (0, 1]")
        self.capacity = capacity
        self.share = share
        self._bucket = TokenBucket(rate=share, burst=capacity)
        self._bucket.level(now)  # full from `now` on

    def seconds(self, now: float) -> float:
        """The budget left at `now` (negative while a charge is being paid back)."""
        return self._bucket.level(now)

    def allows_probe(self, cost: float, now: float) -> bool:
        """May a failing device whose probe can cost `cost` seconds be probed now?"""
        return self.seconds(now) >= min(cost, self.capacity)

    def charge(self, spent: float, now: float) -> None:
        """A read timed out: take the `spent` seconds it cost out of the budget."""
        self._bucket.take(max(0.0, spent), now)
