"""Reconnect planning: backoff growth, jitter bounds, and the EnOS 4-per-2-minutes throttle."""

from __future__ import annotations

import itertools
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewayd.enos.reconnect import ConnectThrottle, ReconnectPolicy


def test_first_attempt_is_immediate() -> None:
    """A fresh policy connects at once."""
    policy = ReconnectPolicy(rng=random.Random(1))
    assert policy.next_attempt(100.0) == 100.0


def test_backoff_doubles_within_jitter_bounds_and_caps() -> None:
    """Three quick retries, then spread attempts: delays in [max(c/2, spread), max(c, spread)]."""
    policy = ReconnectPolicy(rng=random.Random(7), base_s=1.0, cap_s=300.0)
    policy.throttle = ConnectThrottle(max_attempts=10**6)  # isolate the backoff
    policy.failed(0.0)
    assert 0.5 <= policy.next_attempt(0.0) <= 1.0
    policy.failed(0.0)
    assert 1.0 <= policy.next_attempt(0.0) <= 2.0
    policy.failed(0.0)
    assert 2.0 <= policy.next_attempt(0.0) <= 4.0
    for failures in range(4, 15):
        policy.failed(0.0)
        ceiling = max(40.0, min(300.0, 2.0 ** (failures - 1)))
        delay = policy.next_attempt(0.0)
        assert max(40.0, ceiling / 2) <= delay <= ceiling


def test_failing_connects_back_off_within_the_budget() -> None:
    """CONNECTs that keep failing (TCP up, no session) long after the first connect: quick
    retries, then spread within the EnOS budget."""
    policy = ReconnectPolicy(rng=random.Random(5))
    policy.attempted(0.0)
    policy.succeeded()
    now = 1000.0  # the link drops long after the first connect
    attempts = []
    for _ in range(8):
        policy.failed(now)
        now = policy.next_attempt(now)
        policy.attempted(now)
        attempts.append(now - 1000.0)
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert attempts[0] <= 1.0
    assert 1.0 <= gaps[0] <= 2.0
    assert 2.0 <= gaps[1] <= 4.0
    assert 40.0 - 1e-9 <= gaps[2] <= 50.0
    # The 5th attempt waits for the 1st to leave the 120 s window; later ones are at least
    # spread apart while the exponential backoff grows towards its 300 s cap.
    assert attempts[4] == pytest.approx(attempts[0] + 122.0)
    assert all(40.0 - 1e-9 <= gap <= 300.0 for gap in gaps[4:]), gaps


def test_refused_connect_waits_at_least_the_floor() -> None:
    """A CONNACK refusal never retries sooner than the refusal floor."""
    policy = ReconnectPolicy(rng=random.Random(3), refused_floor_s=60.0)
    policy.failed(0.0, refused=True)
    assert policy.next_attempt(0.0) >= 60.0
    policy.succeeded()
    assert policy.next_attempt(0.0) == 0.0


def test_fifth_attempt_waits_for_the_window() -> None:
    """Four quick attempts, then the fifth is pushed past the first one's 120 s window."""
    throttle = ConnectThrottle()
    for t in (0.0, 1.0, 2.0, 3.0):
        assert throttle.earliest(t) == t
        throttle.record(t)
    assert throttle.earliest(4.0) == 122.0  # 0 + 120 s window + 2 s margin


@settings(max_examples=200)
@given(seed=st.integers(0, 2**32 - 1), outages=st.lists(st.floats(0, 50), min_size=1, max_size=60))
def test_reconnect_storm_never_exceeds_four_connects_in_two_minutes(
    seed: int, outages: list[float]
) -> None:
    """Whatever fails when, no 120 s window ever holds more than 4 attempts (virtual clock)."""
    policy = ReconnectPolicy(rng=random.Random(seed))
    now = 0.0
    attempts: list[float] = []
    for i, pause in enumerate(outages):
        at = policy.next_attempt(now)
        assert at >= now
        policy.attempted(at)
        attempts.append(at)
        if i % 3 == 2:
            policy.succeeded()  # an occasional short-lived success resets the backoff
            now = at + pause  # ...and the link drops again `pause` seconds later
        else:
            policy.failed(at, refused=i % 5 == 0)
            now = at
    for start in attempts:
        assert sum(1 for t in attempts if start <= t < start + 120.0) <= 4
