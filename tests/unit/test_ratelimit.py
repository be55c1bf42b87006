"""Token bucket pacing in virtual time."""

from __future__ import annotations

import pytest

from gatewayd.uplink.ratelimit import TokenBucket


def test_full_burst_is_available_at_once() -> None:
    """A new bucket lets a full burst through without delay."""
    bucket = TokenBucket(rate=100, burst=50)
    assert bucket.reserve(50, now=0.0) == 0.0


def test_debt_is_paid_at_the_rate() -> None:
    """After the burst, 30 more tokens at 100/s mean a 0.3 s wait."""
    bucket = TokenBucket(rate=100, burst=50)
    bucket.reserve(50, now=0.0)
    assert bucket.reserve(30, now=0.0) == pytest.approx(0.3)
    assert bucket.reserve(10, now=0.3) == pytest.approx(0.1)


def test_long_run_throughput_equals_the_rate() -> None:
    """Messages larger than the burst, sent as fast as allowed, move burst + rate*t tokens."""
    bucket = TokenBucket(rate=1000, burst=100)
    now, sent = 0.0, 0
    while now < 100.0:
        now += bucket.reserve(250, now)
        sent += 250
    assert sent == pytest.approx(100 + 1000 * now, abs=1e-6)


def test_idle_time_does_not_accumulate_past_burst() -> None:
    """An hour idle still only allows one burst at once."""
    bucket = TokenBucket(rate=10, burst=20)
    bucket.reserve(20, now=0.0)
    assert bucket.reserve(21, now=3600.0) == pytest.approx(0.1)
