"""When to try the next CONNECT: jittered exponential backoff under EnOS' connect throttle.

EnOS locks a device out for five minutes when it sees more than four CONNECT attempts in two
minutes (enos-protocol.md §5). A gateway that reconnects eagerly after a network blip would
lock itself out exactly when the site needs it back, so every attempt is planned here:
exponential backoff with jitter, then pushed later if it would be the fifth in any 120 s
window. Pure: the caller passes the time and the random source.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

#: EnOS connect throttle (enos-protocol.md §5): at most this many attempts per window.
THROTTLE_ATTEMPTS = 4
THROTTLE_WINDOW_S = 120.0
#: Seconds kept clear of the window edge, against clock skew between us and the broker.
THROTTLE_MARGIN_S = 2.0
#: Quick retries (1 s, 2 s, 4 s, jittered) catch a blip or a broker restart. After them,
#: attempts are at least `SPREAD_S` apart: the 4 attempts EnOS allows per 120 s then span
#: the window instead of being spent in the first seconds of an outage, so a cloud that
#: comes back is reached within ~40 s, not after the throttle's 2-minute wait.
QUICK_RETRIES = 3
SPREAD_S = THROTTLE_WINDOW_S / 3


@dataclass
class ConnectThrottle:
    """Remembers recent attempts; says when the next one may start."""

    max_attempts: int = THROTTLE_ATTEMPTS
    window_s: float = THROTTLE_WINDOW_S
    margin_s: float = THROTTLE_MARGIN_S
    _attempts: deque[float] = field(default_factory=deque)

    def record(self, now: float) -> None:
        """Note an attempt started at `now`."""
        self._attempts.append(now)
        while len(self._attempts) > self.max_attempts:
            self._attempts.popleft()

    def earliest(self, now: float) -> float:
        """The earliest time >= `now` at which an attempt keeps within the throttle."""
        if len(self._attempts) < self.max_attempts:
            return now
        # The oldest of the last `max_attempts` attempts must leave the window first.
        return max(now, self._attempts[0] + self.window_s + self.margin_s)

    def attempts_within(self, start: float, end: float) -> int:
        """Recorded attempts in [start, end] (for tests and status)."""
        return sum(1 for t in self._attempts if start <= t <= end)


@dataclass
class ReconnectPolicy:
    """Plans connect attempts: `next_attempt(now)`, then `attempted(now)`, then the outcome."""

    rng: random.Random
    base_s: float = 1.0
    cap_s: float = 300.0
    # After the broker refused CONNECT (bad credentials, disabled device, lock-out) retrying
    # quickly cannot help and may extend a lock-out: wait at least this long.
    refused_floor_s: float = 60.0
    quick_retries: int = QUICK_RETRIES
    spread_s: float = SPREAD_S
    throttle: ConnectThrottle = field(default_factory=ConnectThrottle)
    failures: int = 0
    _refused: bool = False

    def next_attempt(self, now: float) -> float:
        """Absolute time of the next CONNECT attempt."""
        if self.failures == 0:
            delay = 0.0
        else:
            ceiling = min(self.cap_s, self.base_s * 2 ** (self.failures - 1))
            spread = self.failures > self.quick_retries
            if spread:
                ceiling = max(ceiling, self.spread_s)
            # "Equal jitter": keep half the backoff, randomise the other half, so a fleet
            # that lost the same uplink does not reconnect in lockstep.
            delay = ceiling / 2 + self.rng.uniform(0, ceiling / 2)
            if spread:
                delay = max(delay, self.spread_s)
            if self._refused:
                delay = max(delay, self.refused_floor_s)
        return self.throttle.earliest(now + delay)

    def attempted(self, now: float) -> None:
        """Record that an attempt started at `now`."""
        self.throttle.record(now)

    def succeeded(self) -> None:
        self.failures = 0
        self._refused = False

    def failed(self, *, refused: bool = False) -> None:
        """The attempt failed; `refused` when the broker answered CONNACK with an error."""
        self.failures += 1
        self._refused = refused
