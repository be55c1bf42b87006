"""Jittered exponential backoff, as a pure function of the failure count and a random source."""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays `initial`, `initial*factor`, ... capped at `maximum`, each shortened by jitter.

    Jitter only ever shortens a delay (by up to `jitter` of it), so the cap is a true cap
    and many devices failing together (a bus cut) spread their retries instead of
    hammering the bus in lock-step.
    """

    initial: float = 1.0
    maximum: float = 300.0
    factor: float = 2.0
    jitter: float = 0.2

    def delay(self, failures: int, rng: random.Random) -> float:
        """The wait after the `failures`-th consecutive failure (1 = first failure)."""
        exponent = max(0, failures - 1)
        # Cap the exponent so a long outage cannot overflow the float.
        base = min(self.maximum, self.initial * self.factor ** min(exponent, 64))
        return base * (1.0 - self.jitter * rng.random())


#: Retrying a device that stopped answering: 1 s up to 5 min.
DEVICE_BACKOFF = Backoff(initial=1.0, maximum=300.0)


def bus_backoff(reconnect_max: float) -> Backoff:
    """Reconnecting a bus: 0.5 s doubling up to the bus' `reconnect_max`."""
    return Backoff(initial=min(0.5, reconnect_max), maximum=reconnect_max)
