"""Unit tests of the pure scheduling parts: aligned ticks, backoff, the virtual clock."""

from __future__ import annotations

import asyncio
import random

import pytest

from gatewayd.backoff import Backoff
from gatewayd.clock import VirtualClock
from gatewayd.modbus.backoff import DEVICE_BACKOFF
from gatewayd.modbus.scheduler import DeviceSchedule


def test_ticks_land_on_wall_multiples_without_drift_over_many_cycles() -> None:
    """10 000 cycles of 0.1 s stay exactly on the wall-clock grid (no accumulated error)."""
    wall_offset = 1_700_000_000.123 - 1000.0
    schedule = DeviceSchedule([0.1], now=1000.0, wall_offset=wall_offset)
    for n in range(10_000):
        due_at = schedule.next_due()
        wall = due_at + wall_offset
        assert abs(wall * 10 - round(wall * 10)) < 1e-4, (n, wall)
        assert schedule.take_due(due_at) == (0,)
    # 0.123 s past a grid point at start: first tick 0.077 s later, then 9 999 more.
    assert schedule.next_due() == pytest.approx(1000.077 + 10_000 * 0.1, abs=1e-6)


def test_mixed_intervals_merge_on_common_ticks() -> None:
    """A 1 s and a 5 s point are due together every fifth second, the 1 s one alone otherwise."""
    schedule = DeviceSchedule([1.0, 5.0, 1.0], now=100.0, wall_offset=0.0)
    seen = []
    for _ in range(10):
        t = schedule.next_due()
        seen.append((t, schedule.take_due(t)))
    assert seen[0] == (100.0, (0, 1, 2))
    assert [due for _, due in seen[1:5]] == [(0, 2)] * 4
    assert seen[5] == (105.0, (0, 1, 2))


def test_late_wakeup_skips_missed_ticks_instead_of_bursting() -> None:
    """Waking 3.5 intervals late runs one cycle and resumes on the grid."""
    schedule = DeviceSchedule([1.0], now=10.0, wall_offset=0.0)
    assert schedule.take_due(13.5) == (0,)
    assert schedule.next_due() == 14.0
    assert schedule.take_due(13.9) == ()


def test_nothing_due_before_the_tick() -> None:
    """take_due before the next tick returns nothing and does not move the schedule."""
    schedule = DeviceSchedule([2.0], now=10.5, wall_offset=0.0)
    assert schedule.next_due() == 12.0
    assert schedule.take_due(11.99) == ()
    assert schedule.next_due() == 12.0


def test_backoff_grows_from_one_second_to_five_minutes_with_jitter() -> None:
    """Device backoff: ~1 s, ~2 s, ... capped at 300 s, jitter only shortens."""
    rng = random.Random(7)
    delays = [DEVICE_BACKOFF.delay(n, rng) for n in range(1, 15)]
    assert 0.8 <= delays[0] <= 1.0
    assert 1.6 <= delays[1] <= 2.0
    assert all(240.0 <= d <= 300.0 for d in delays[9:])
    assert max(delays) <= 300.0
    assert len({round(d, 6) for d in delays[9:]}) > 1  # jittered, not lock-step


def test_backoff_without_jitter_is_exact() -> None:
    """Zero jitter gives the plain doubling sequence."""
    backoff = Backoff(initial=0.5, maximum=4.0, jitter=0.0)
    assert [backoff.delay(n, random.Random()) for n in range(1, 6)] == [0.5, 1, 2, 4, 4]


async def test_virtual_clock_wakes_sleepers_in_deadline_order() -> None:
    """Sleepers wake in deadline order with time set to their deadline."""
    clock = VirtualClock(monotonic=0.0, wall=100.0)
    woke: list[tuple[str, float]] = []

    async def sleeper(name: str, seconds: float) -> None:
        await clock.sleep(seconds)
        woke.append((name, clock.monotonic()))

    tasks = [asyncio.create_task(sleeper(n, s)) for n, s in (("b", 2.0), ("a", 1.0), ("c", 5))]
    await clock.advance(3.0)
    assert woke == [("a", 1.0), ("b", 2.0)]
    assert clock.time() == 103.0
    await clock.advance(2.0)
    assert woke[-1] == ("c", 5.0)
    await asyncio.gather(*tasks)
