"""The arithmetic the benchmark and chaos suites report with: statistics, bounds, accounting."""

from __future__ import annotations

import itertools
import json
import math
import os
import random
import sys
from pathlib import Path

import pytest

from gatewayd.config.models import DataType, PointConfig, Table
from tests.bench.b3_sparse import REPLY_OVERHEAD, REQUEST_BYTES, data_bytes, optimum_bytes
from tests.bench.b4_rtu import wire_bound
from tests.bench.b9_footprint import slope_per_hour
from tests.bench.common import Report, cpu_seconds, median, percentile, rss_kib, tree_cpu_seconds
from tests.chaos.delivery import _oldest_dropped, tally
from tests.chaos.fuzz_config import mutate


def test_percentile_is_nearest_rank() -> None:
    """p50/p99 pick actual samples by nearest rank; no samples give NaN."""
    values = list(range(1, 101))
    assert percentile(values, 50) == 50
    assert percentile(values, 99) == 99
    assert percentile(values, 100) == 100
    assert percentile([7.0], 99) == 7.0
    assert math.isnan(percentile([], 50))
    assert median([3, 1, 2]) == 2


def test_slope_per_hour_of_a_straight_line() -> None:
    """1 MiB per 600 s is 6 MiB/h; a flat series is 0."""
    assert slope_per_hour([(t, 50 + t / 600) for t in range(0, 600, 5)]) == pytest.approx(6.0)
    assert slope_per_hour([(t, 50.0) for t in range(10)]) == 0.0
    assert math.isnan(slope_per_hour([(0, 1.0)]))


def test_wire_bound_counts_chars_and_two_gaps_per_request() -> None:
    """At 9600 baud an 8 + 255 byte exchange is 263 chars of 11 bits plus two 3.5-char gaps."""
    char = 11 / 9600
    expected = 263 * char + 2 * 3.5 * char
    assert wire_bound(9600, 1, [(8, 255)]) == pytest.approx(expected)
    # Above 19200 the gap is fixed at 1.75 ms; the bound scales with devices.
    assert wire_bound(115200, 8, [(8, 5)]) == pytest.approx(8 * (13 * 11 / 115200 + 0.0035))


def _points(addresses: list[int]) -> list[PointConfig]:
    return [PointConfig(measurepoint=f"p{a}", table=Table.HOLDING, address=a, type=DataType.UINT16)
            for a in addresses]  # fmt: skip


def _brute_force_bytes(addresses: list[int], limit: int, holes: set[int]) -> int:
    """Every split of the sorted points into consecutive runs; the cheapest feasible."""
    best = 1 << 40
    n = len(addresses)
    for cuts in itertools.product([False, True], repeat=n - 1):
        groups, current = [], [addresses[0]]
        for cut, a in zip(cuts, addresses[1:], strict=True):
            if cut:
                groups.append(current)
                current = [a]
            else:
                current.append(a)
        groups.append(current)
        cost = 0
        for g in groups:
            span = g[-1] + 1 - g[0]
            if span > limit or any(h in holes for h in range(g[0], g[-1] + 1)):
                cost = 1 << 40
                break
            cost += REQUEST_BYTES + REPLY_OVERHEAD + 2 * span
        best = min(best, cost)
    return best


def test_optimum_bytes_matches_brute_force() -> None:
    """The fewest-bytes DP equals an exhaustive search on small random maps."""
    rng = random.Random(4)
    for _ in range(40):
        addresses = sorted(rng.sample(range(60), rng.randint(1, 8)))
        holes = {a for a in range(60) if a not in addresses and rng.random() < 0.1}
        limit = rng.choice([5, 20, 125])
        got = optimum_bytes(_points(addresses), max_registers=limit, max_bits=2000,
                            holes={(Table.HOLDING, h) for h in holes})  # fmt: skip
        assert got == _brute_force_bytes(addresses, limit, holes)
    assert data_bytes(Table.COIL, 9) == 2


def test_tally_counts_frames_lost_duplicated_and_excess() -> None:
    """Frames: lost = committed − dropped (points ÷ mean frame size) − distinct accepted
    (device, time); repeated points are duplicates."""
    # Frames (d, 1) with points p, q and (d, 2) with p: 3 points in 2 frames, 1.5 a frame.
    keys = [("d", "p", 1), ("d", "p", 2), ("d", "p", 2), ("d", "q", 1)]
    counts = {"committed": 10, "pending": 0, "dropped_points": 6, "dead_letters": 0}
    outcome = tally(counts, keys)
    assert (outcome.offered, outcome.delivered, outcome.duplicated) == (10, 2, 1)
    assert outcome.dropped == 4
    assert outcome.lost == 4
    assert outcome.extra["delivered_points"] == 3
    assert tally({**counts, "committed": 5}, keys).extra["excess_delivered"] == 1
    assert tally({**counts, "dropped_points": 0}, keys).lost == 8


def test_oldest_dropped_detects_a_hole_in_the_middle() -> None:
    """Missing values before the first accepted one are fine; a hole after it is not."""
    tail = [("d", "p", t) for t in range(10_000, 20_000, 200)]
    assert _oldest_dropped(tail)
    holed = [k for k in tail if not 14_000 <= k[2] < 16_000]
    assert not _oldest_dropped(holed)


def test_mutate_is_deterministic_and_changes_text() -> None:
    """The same seed gives the same mutants; most mutants differ from the original."""
    text = Path("config/gatewayd.yaml").read_text()
    first = [mutate(text, random.Random(n)) for n in range(50)]
    again = [mutate(text, random.Random(n)) for n in range(50)]
    assert first == again
    assert sum(m != text for m in first) >= 45


def test_proc_figures_of_this_process(tmp_path: Path) -> None:
    """CPU seconds grow with work, RSS is positive, and a report writes valid JSON."""
    before = cpu_seconds(os.getpid())
    sum(i * i for i in range(300_000))
    assert cpu_seconds(os.getpid()) >= before
    assert tree_cpu_seconds(os.getpid()) >= cpu_seconds(os.getpid())
    assert rss_kib(os.getpid()) > 1000
    report = Report("unit", "quick")
    report.add("B0", "ratio", 1.23456, "x", target="≤ 2", ok=True)
    out = report.write(tmp_path / "r.json")
    body = json.loads(out.read_text())
    assert body["rows"][0]["value"] == 1.2346
    assert "cpu_steal_percent" in body["environment"]
    assert "ratio" in report.table()


def test_control_character_error_has_a_position(tmp_path: Path) -> None:
    """A NUL byte in a config (found by the config fuzzer) is reported at file:line:col."""
    from gatewayd.config.errors import ConfigError
    from gatewayd.config.loader import load_config

    path = tmp_path / "gatewayd.yaml"
    path.write_text("gateway:\n  product_key: a\x00b\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    assert [i.render() for i in caught.value.issues] == [
        f"{path}:2:17: control character #x0000 is not allowed in YAML"
    ]


def test_memory_profile_walk_counts_data_once_and_skips_code() -> None:
    """`deep_size` sums each reachable object once (a shared one is not counted twice)
    and leaves classes, modules and functions out: they are code, not the walked data."""
    from tests.bench.memory_profile import deep_size

    shared = "x" * 1000
    data = [shared, shared, {"key": 12345678901234}, json, deep_size, int]
    size, count = deep_size(data)
    nested = data[2]
    expected = (sys.getsizeof(data) + sys.getsizeof(shared) + sys.getsizeof(nested)
                + sys.getsizeof("key") + sys.getsizeof(12345678901234))  # fmt: skip
    assert (size, count) == (expected, 5)

