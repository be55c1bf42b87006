"""B4/B5 figures from a cycle log: split frames, first minute, steady state (pure)."""

from __future__ import annotations

import pytest

from tests.bench.b1_fleet import _Arrivals
from tests.bench.b4_rtu import STEADY_PROBE_PERIOD, LineRun, b5_figures, wire_bound

FRAMES = [(8, 255), (8, 155)]  # 125 + 75 registers: (request, response) bytes


def _cycle(tick_s: float, duration: float, failed: int = 0) -> list[float]:
    """A daemon_proc cycle tuple: tick_ms, duration_s, requests, failed, good, total, at."""
    return [tick_s * 1000, duration, 12 + failed, failed, 600, 800, tick_s * 1000 + 1]


def _run(log: list[list[float]], sizes: dict[int, int] | None = None) -> LineRun:
    return LineRun(19200, (7, 8), log, FRAMES, sizes or {8: 10, 255: 5, 155: 5}, 3.0)


def test_split_frames_are_sizes_no_request_or_response_has() -> None:
    """Frames of the plan's sizes are whole; any other size is a frame cut by a pause."""
    assert _run([]).split_frames() == 0
    assert _run([], {8: 10, 255: 4, 155: 5, 200: 1, 55: 1}).split_frames() == 2


def test_b5_first_minute_counts_every_cycle_and_steady_state_is_derived() -> None:
    """First minute: total bound over total time of the cycles of the first 60 s; steady:
    the probe-free median plus the measured per-probe cost at the 5 min cap's rate."""
    log = [_cycle(0, 2.7, failed=4), _cycle(3, 1.8, failed=1)]  # first attempt + a probe
    log += [_cycle(t, 1.5) for t in range(6, 60, 3)]  # 18 probe-free cycles
    log += [_cycle(60, 1.8, failed=1), _cycle(63, 1.5)]  # after the first minute
    figures = b5_figures(_run(log), 60.0)
    bound = wire_bound(19200, 6, FRAMES)
    assert figures["first_minute_cycles"] == 20
    assert figures["first_minute_probes"] == 5
    assert figures["first_minute_efficiency"] == pytest.approx(
        bound * 20 / (2.7 + 1.8 + 18 * 1.5)
    )
    assert figures["cycle_free_s"] == 1.5
    assert figures["probes"] == 6
    # (1.2/4 + 0.3 + 0.3) / 3 probe cycles = 0.3 s per probe.
    assert figures["probe_cost_s"] == pytest.approx(0.3)
    steady_cycle = 1.5 + 0.3 * 2 * 3.0 / STEADY_PROBE_PERIOD
    assert figures["steady_efficiency"] == pytest.approx(bound / steady_cycle)
    assert figures["after_2_min_efficiency"] is None  # a one-minute run has no such cycles


def test_arrivals_tracks_how_long_a_count_has_not_grown() -> None:
    """The quiet time restarts whenever the count changes."""
    values = iter([1, 1, 2, 2])
    arrivals = _Arrivals(lambda: next(values))
    assert arrivals.count() == 1
    assert arrivals.quiet_for() >= 0  # reads 1 again: unchanged
    assert arrivals.count() == 2
    assert arrivals.quiet_for() < 1.0  # just changed
