"""When to try the next connect: cheap TCP retries, CONNECT backoff, EnOS' connect throttle.

EnOS locks a device out for five minutes when it sees more than four CONNECTs in two
minutes (PROTOCOL.md §5). What counts is MQTT CONNECT packets in a sliding 2-minute
window, nothing else, so the policy tells two kinds of failure apart:

- *unreachable*: the TCP (or TLS) connection never came up, so no CONNECT was sent. Nothing
  is spent from the budget; the next try comes a few jittered seconds later (0.5-1, 1-2,
  2-4, then 2.5-5 s), so a cloud that accepts TCP again is reached within seconds.
- *CONNECT sent* (`attempted`), then refused or lost: exponential backoff with jitter as
  before (three quick retries, then at least `SPREAD_S` apart, at most 5 minutes; a refused
  CONNECT waits at least a minute), and never a fifth CONNECT inside any 120 s window.

The CONNECTs of the last window survive a restart (`ConnectThrottle.restore` with the wall
times `gatewayd.enos.connect_history` persists), so a crash loop cannot exceed the budget.
Pure: the caller passes the time and the random source.
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from gatewayd.backoff import Backoff

#: EnOS connect throttle (PROTOCOL.md §5): at most this many CONNECTs per window.
THROTTLE_ATTEMPTS = 4
THROTTLE_WINDOW_S = 120.0
#: Seconds kept clear of the window edge, against clock skew between us and the broker.
THROTTLE_MARGIN_S = 2.0
#: Quick retries (1 s, 2 s, 4 s, jittered) after a failed CONNECT catch a broker restart.
#: After them, CONNECTs are at least `SPREAD_S` apart: the 4 EnOS allows per 120 s then span
#: the window instead of being spent in the first seconds of a broker fault.
QUICK_RETRIES = 3
SPREAD_S = THROTTLE_WINDOW_S / 3
#: Retrying a TCP connect that was refused or timed out costs no CONNECT: the delay doubles
#: from ~1 s to this cap (jittered), so the cloud's return is noticed within ~5 s.
PROBE_BASE_S = 1.0
PROBE_CAP_S = 5.0
#: Half of each delay kept, half random: a fleet that lost the same uplink does not
#: reconnect in lockstep.
EQUAL_JITTER = 0.5


@dataclass
class ConnectThrottle:
    """Remembers recent CONNECTs (monotonic seconds); says when the next one may be sent."""

    max_attempts: int = THROTTLE_ATTEMPTS
    window_s: float = THROTTLE_WINDOW_S
    margin_s: float = THROTTLE_MARGIN_S
    _attempts: deque[float] = field(default_factory=deque)

    def record(self, now: float) -> None:
        """Note a CONNECT sent at `now`."""
        self._attempts.append(now)
        while len(self._attempts) > self.max_attempts:
            self._attempts.popleft()

    def earliest(self, now: float) -> float:
        """The earliest time >= `now` at which a CONNECT keeps within the throttle."""
        if len(self._attempts) < self.max_attempts:
            return now
        # The oldest of the last `max_attempts` CONNECTs must leave the window first.
        return max(now, self._attempts[0] + self.window_s + self.margin_s)

    def attempts_within(self, start: float, end: float) -> int:
        """Recorded CONNECTs in [start, end] (for tests and status)."""
        return sum(1 for t in self._attempts if start <= t <= end)

    def wall_times(self, now_mono: float, now_wall: float) -> list[float]:
        """The remembered CONNECTs as wall-clock times, to persist across a restart."""
        return [now_wall - (now_mono - t) for t in self._attempts]

    def restore(self, wall_times: Iterable[float], now_mono: float, now_wall: float) -> None:
        """Take over CONNECTs a previous run persisted (wall-clock seconds). A time in the
        future (the wall clock went back since) counts as now: never less safe."""
        for wall in sorted(wall_times):
            self.record(now_mono - max(0.0, now_wall - wall))


@dataclass
class ReconnectPolicy:
    """Plans connects: `next_attempt(now)`, `attempted(now)` when a CONNECT goes out, then
    `succeeded()`, `failed(now)` or, when no CONNECT could be sent, `unreachable(now)`."""

    rng: random.Random
    base_s: float = 1.0
    cap_s: float = 300.0
    # After the broker refused CONNECT (bad credentials, disabled device, lock-out) retrying
    # quickly cannot help and may extend a lock-out: wait at least this long.
    refused_floor_s: float = 60.0
    quick_retries: int = QUICK_RETRIES
    spread_s: float = SPREAD_S
    probe_base_s: float = PROBE_BASE_S
    probe_cap_s: float = PROBE_CAP_S
    throttle: ConnectThrottle = field(default_factory=ConnectThrottle)
    #: CONNECTs in a row that did not give a lasting session (reset by `succeeded`).
    failures: int = 0
    #: TCP/TLS connects in a row that failed before a CONNECT could be sent.
    unreachable_count: int = 0
    _not_before: float = float("-inf")

    def next_attempt(self, now: float) -> float:
        """Absolute (monotonic) time of the next connect: after the backoff, and such
        that the CONNECT it sends keeps within the throttle."""
        return self.throttle.earliest(max(now, self._not_before))

    def attempted(self, now: float) -> None:
        """A CONNECT packet was sent at `now`: it counts against EnOS' budget."""
        self.throttle.record(now)

    def succeeded(self) -> None:
        """CONNACK accepted: the next failure starts the backoff afresh."""
        self.failures = 0
        self.unreachable_count = 0
        self._not_before = float("-inf")

    def failed(self, now: float, *, refused: bool = False) -> None:
        """A CONNECT went out and got no session, or the session was lost, at `now`;
        `refused` when the broker answered CONNACK with an error."""
        self.failures += 1
        self.unreachable_count = 0
        backoff = Backoff(initial=self.base_s, maximum=self.cap_s, jitter=EQUAL_JITTER)
        ceiling = backoff.ceiling(self.failures)
        spread = self.failures > self.quick_retries
        if spread:
            ceiling = max(ceiling, self.spread_s)
        delay = backoff.jittered(ceiling, self.rng)
        if spread:
            delay = max(delay, self.spread_s)
        if refused:
            delay = max(delay, self.refused_floor_s)
        self._not_before = now + delay

    def unreachable(self, now: float) -> None:
        """The TCP/TLS connect failed at `now` (refused, timed out): no CONNECT was sent,
        so nothing is counted; try again in a few jittered seconds (an earlier CONNECT
        backoff still holds)."""
        self.unreachable_count += 1
        probe = Backoff(initial=self.probe_base_s, maximum=self.probe_cap_s, jitter=EQUAL_JITTER)
        delay = probe.delay(self.unreachable_count, self.rng)
        self._not_before = max(self._not_before, now + delay)
