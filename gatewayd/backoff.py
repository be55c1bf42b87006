"""Jittered exponential backoff: the one retry policy of the daemon, pure (the caller
passes the failure count and the random source).

Users: Modbus devices and buses (`gatewayd.modbus.backoff`), the supervisor restarting a
bus task, the EnOS reconnect policy (`gatewayd.enos.reconnect`, which adds the connect
throttle on top) and the uplink's retries of a refused or unanswered batch.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays `initial`, `initial*factor`, ... capped at `maximum`, each shortened by jitter.

    Jitter only ever shortens a delay (by up to `jitter` of it), so the cap is a true cap
    and many clients failing together (a bus cut, a fleet losing its uplink) spread their
    retries instead of hammering the peer in lock-step. `jitter=0.5` is "equal jitter"
    (half the delay kept, half random).
    """

    initial: float = 1.0
    maximum: float = 300.0
    factor: float = 2.0
    jitter: float = 0.2

    def ceiling(self, failures: int) -> float:
        """The un-jittered wait after the `failures`-th consecutive failure (1 = first)."""
        exponent = max(0, failures - 1)
        # Cap the exponent so a long outage cannot overflow the float.
        return min(self.maximum, self.initial * self.factor ** min(exponent, 64))

    def jittered(self, ceiling: float, rng: random.Random | None) -> float:
        """`ceiling` shortened by up to `jitter` of it (not at all without `rng`)."""
        if rng is None:
            return ceiling
        return ceiling * (1.0 - self.jitter * rng.random())

    def delay(self, failures: int, rng: random.Random | None) -> float:
        """The wait after the `failures`-th consecutive failure (1 = first failure)."""
        return self.jittered(self.ceiling(failures), rng)
