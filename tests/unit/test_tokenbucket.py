"""The one token bucket, and the two paces built on it, in virtual time."""

from __future__ import annotations

import pytest

from gatewayd.modbus.probebudget import ProbeBudget
from gatewayd.tokenbucket import TokenBucket
from gatewayd.uplink.ratelimit import BacklogPace


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


def test_level_goes_into_debt_and_refills_at_the_rate() -> None:
    """take may overdraw; the level then climbs back at `rate` and stops at `burst`."""
    bucket = TokenBucket(rate=0.05, burst=1.0)
    assert bucket.level(10.0) == 1.0  # full at first use
    assert bucket.take(1.5, now=10.0) == pytest.approx(-0.5)
    assert bucket.level(20.0) == pytest.approx(0.0)
    assert bucket.level(5.0) == pytest.approx(0.0)  # time never runs backwards
    assert bucket.level(1000.0) == 1.0


def test_backlog_pace_waits_for_the_scarcer_budget_and_live_bytes_count() -> None:
    """The backlog waits for whichever of points and bytes runs out first; live bytes
    never wait but leave less for the backlog."""
    pace = BacklogPace(points_per_s=100, bytes_per_s=1000, max_message_bytes=500)
    assert pace.backlog(100, 500, now=0.0) == 0.0  # both bursts spent
    assert pace.backlog(10, 0, now=0.0) == pytest.approx(0.1)  # points are short
    assert pace.backlog(0, 200, now=1.0) == 0.0  # bytes refilled to their 500 burst
    pace.live(300, now=1.0)  # live takes the rest of the byte burst
    assert pace.backlog(0, 100, now=1.0) == pytest.approx(0.1)


def test_probe_budget_is_a_bucket_of_bus_seconds() -> None:
    """ProbeBudget is full from its start, charged by timeouts, refilled at its share."""
    budget = ProbeBudget(capacity=1.0, now=100.0, share=0.05)
    assert budget.seconds(100.0) == 1.0
    budget.charge(1.0, now=100.0)
    assert not budget.allows_probe(1.0, now=110.0)
    assert budget.seconds(110.0) == pytest.approx(0.5)
    assert budget.allows_probe(1.0, now=120.0)
