"""Read planner: hand-computed plans, and planner == exact optimum on random maps."""

from __future__ import annotations

import random
from collections.abc import Collection, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewayd.config.models import DataType, PointConfig, Table
from gatewayd.modbus.planner import (
    PlanError,
    ReadRequest,
    plan_reads,
    unreadable_points,
)

H, IR, C, D = Table.HOLDING, Table.INPUT, Table.COIL, Table.DISCRETE
WIDTH_TYPE = {1: DataType.UINT16, 2: DataType.FLOAT32, 4: DataType.FLOAT64}


def point(address: int, width: int = 1, table: Table = H, bit: int | None = None) -> PointConfig:
    """A point of `width` registers (1, 2 or 4) at `address` (a bool on bit tables)."""
    if table.is_bit:
        return PointConfig(measurepoint=f"b{address}", table=table, address=address,
                           type=DataType.BOOL)
    if bit is not None:
        return PointConfig(measurepoint=f"r{address}_{bit}", table=table, address=address,
                           type=DataType.BOOL, bit=bit)
    return PointConfig(measurepoint=f"p{address}", table=table, address=address,
                       type=WIDTH_TYPE[width])


def spans(plan: Sequence[ReadRequest]) -> list[tuple[str, int, int]]:
    """(table, start, count) of each request."""
    return [(r.table.value, r.start, r.count) for r in plan]


# ---------------------------------------------------------------------------- by hand


def test_contiguous_floats_fill_to_the_limit() -> None:
    """100 contiguous float32 (200 registers) take 2 requests: 124 + 76 registers."""
    pts = [point(2 * i, 2) for i in range(100)]
    plan = plan_reads(pts, max_registers=125, max_bits=2000, gap_fill=0)
    assert spans(plan) == [("holding", 0, 124), ("holding", 124, 76)]
    assert plan[0].points == tuple(range(62))
    assert plan[1].points == tuple(range(62, 100))


def test_gap_fill_bridges_only_small_gaps() -> None:
    """Gaps up to gap_fill are read through; a larger gap starts a new request."""
    pts = [point(0), point(5), point(20)]  # gaps of 4 and 14 registers
    assert spans(plan_reads(pts, max_registers=125, max_bits=2000, gap_fill=4)) == [
        ("holding", 0, 6), ("holding", 20, 1)]
    assert spans(plan_reads(pts, max_registers=125, max_bits=2000, gap_fill=3)) == [
        ("holding", 0, 1), ("holding", 5, 1), ("holding", 20, 1)]
    assert spans(plan_reads(pts, max_registers=125, max_bits=2000, gap_fill=14)) == [
        ("holding", 0, 21)]


def test_device_maximum_caps_requests() -> None:
    """The device maximum (below 125) bounds each request."""
    pts = [point(i) for i in range(10)]
    assert spans(plan_reads(pts, max_registers=4, max_bits=2000, gap_fill=0)) == [
        ("holding", 0, 4), ("holding", 4, 4), ("holding", 8, 2)]
    # A configured maximum above the protocol cap is clamped to 125.
    many = [point(i) for i in range(130)]
    assert spans(plan_reads(many, max_registers=1000, max_bits=2000, gap_fill=0)) == [
        ("holding", 0, 125), ("holding", 125, 5)]


def test_holes_are_never_inside_a_request() -> None:
    """A hole splits an otherwise mergeable run; a point on a hole is left out."""
    pts = [point(0), point(2), point(4, 2)]
    plan = plan_reads(pts, max_registers=125, max_bits=2000, gap_fill=10, holes={(H, 1)})
    assert spans(plan) == [("holding", 0, 1), ("holding", 2, 4)]
    plan = plan_reads(pts, max_registers=125, max_bits=2000, gap_fill=10, holes={(H, 5)})
    assert spans(plan) == [("holding", 0, 3)]
    assert unreadable_points(pts, {(H, 5)}) == [2]
    # A hole in another table changes nothing.
    plan = plan_reads(pts, max_registers=125, max_bits=2000, gap_fill=10, holes={(IR, 1)})
    assert spans(plan) == [("holding", 0, 6)]


def test_tables_are_planned_separately_and_bits_scale_fill() -> None:
    """Each table has its own requests; bit tables bridge gap_fill*16 bits, up to 2000."""
    pts = [point(0, table=C), point(32, table=C), point(33, table=C), point(0, table=IR),
           point(0), point(0, table=D), point(2000, table=D)]
    plan = plan_reads(pts, max_registers=125, max_bits=2000, gap_fill=2)
    assert spans(plan) == [("coil", 0, 34), ("discrete", 0, 1), ("discrete", 2000, 1),
                           ("holding", 0, 1), ("input", 0, 1)]
    plan = plan_reads(pts, max_registers=125, max_bits=2000, gap_fill=1)
    assert spans(plan)[:2] == [("coil", 0, 1), ("coil", 32, 2)]


def test_bits_of_one_register_travel_together() -> None:
    """Several bools on one register are one range and one request."""
    pts = [point(7, bit=3), point(7, bit=0), point(8)]
    plan = plan_reads(pts, max_registers=125, max_bits=2000, gap_fill=0)
    assert spans(plan) == [("holding", 7, 2)]
    assert sorted(plan[0].points) == [0, 1, 2]


def test_point_wider_than_limit_is_an_early_error() -> None:
    """A float64 cannot be read with a 3-register maximum: PlanError names it."""
    with pytest.raises(PlanError, match="p10: 4 registers exceed the read limit 3"):
        plan_reads([point(0), point(10, 4)], max_registers=3, max_bits=2000, gap_fill=0)


def test_points_index_the_given_list_in_address_order() -> None:
    """Request point indices refer to the caller's list, sorted by address."""
    pts = [point(9), point(1), point(5)]
    plan = plan_reads(pts, max_registers=125, max_bits=2000, gap_fill=10)
    assert plan == [ReadRequest(H, 1, 9, (1, 2, 0))]


# ---------------------------------------------------------------------------- optimum


def exact_optimum(
    points: Sequence[PointConfig],
    *,
    max_registers: int,
    max_bits: int,
    gap_fill: int,
    holes: Collection[tuple[Table, int]] = (),
) -> int:
    """Fewest requests by exhaustive set cover, with no assumption on request shapes.

    Candidates are all ranges [s, e) with s a point start and e a point end; a candidate
    serves the points fully inside it and is valid if it spans at most the limit, contains
    no hole, and every run of addresses not covered by a served point is at most the fill.
    The minimum cover is found by breadth-first search over sets of covered points.
    """
    total = 0
    for table in Table:
        idx = [i for i, p in enumerate(points) if p.table is table
               and not any((table, a) in holes
                           for a in range(p.address, p.address + p.register_count))]
        if not idx:
            continue
        limit = min(2000, max_bits) if table.is_bit else min(125, max_registers)
        fill = gap_fill * 16 if table.is_bit else gap_fill
        rng = {i: (points[i].address, points[i].address + points[i].register_count) for i in idx}
        masks: set[int] = set()
        for s in {a for a, _ in rng.values()}:
            for e in {b for _, b in rng.values()}:
                if e <= s or e - s > limit:
                    continue
                if any((table, a) in holes for a in range(s, e)):
                    continue
                served = [k for k, i in enumerate(idx) if s <= rng[i][0] and rng[i][1] <= e]
                covered = set()
                for k in served:
                    covered.update(range(*rng[idx[k]]))
                run = longest = 0
                for a in range(s, e):
                    run = 0 if a in covered else run + 1
                    longest = max(longest, run)
                if served and longest <= fill:
                    masks.add(sum(1 << k for k in served))
        goal = (1 << len(idx)) - 1
        frontier, seen, steps = {0}, {0}, 0
        while goal not in frontier:
            steps += 1
            frontier = {f | m for f in frontier for m in masks} - seen
            seen |= frontier
            assert frontier, "some point cannot be covered"
        total += steps
    return total


@st.composite
def random_maps(draw: st.DrawFn) -> tuple[list[PointConfig], set[tuple[Table, int]], int, int]:
    """Small random maps: non-overlapping points of width 1/2/4 or bits, gaps, holes."""
    pts: list[PointConfig] = []
    holes: set[tuple[Table, int]] = set()
    for table in draw(st.lists(st.sampled_from(list(Table)), min_size=1, max_size=2,
                               unique=True)):
        address = draw(st.integers(0, 3))
        for _ in range(draw(st.integers(1, 7))):
            if table.is_bit:
                pts.append(point(address, table=table))
                address += 1
            else:
                width = draw(st.sampled_from([1, 1, 2, 4]))
                if width == 1 and draw(st.booleans()):
                    pts.extend(point(address, table=table, bit=b) for b in (0, 5))
                else:
                    pts.append(point(address, width, table))
                address += width
            gap = draw(st.integers(0, 40 if table.is_bit else 6))
            if gap and draw(st.integers(0, 3)) == 0:
                holes.add((table, address + draw(st.integers(0, gap - 1))))
            address += gap
        if draw(st.integers(0, 5)) == 0:  # now and then a hole on a point
            victim = draw(st.sampled_from([p for p in pts if p.table is table]))
            holes.add((table, victim.address))
    max_registers = draw(st.integers(4, 16))
    gap_fill = draw(st.integers(0, 5))
    return pts, holes, max_registers, gap_fill


@settings(max_examples=300, deadline=None)
@given(random_maps())
def test_planner_matches_exact_optimum(
    case: tuple[list[PointConfig], set[tuple[Table, int]], int, int],
) -> None:
    """On random maps the plan is valid and has exactly the optimal number of requests."""
    pts, holes, max_registers, gap_fill = case
    max_bits = max_registers * 4
    plan = plan_reads(pts, max_registers=max_registers, max_bits=max_bits, gap_fill=gap_fill,
                      holes=holes)
    check_valid(pts, plan, holes, max_registers=max_registers, max_bits=max_bits,
                gap_fill=gap_fill)
    assert len(plan) == exact_optimum(pts, max_registers=max_registers, max_bits=max_bits,
                                      gap_fill=gap_fill, holes=holes)


def check_valid(
    pts: Sequence[PointConfig],
    plan: Sequence[ReadRequest],
    holes: Collection[tuple[Table, int]],
    *,
    max_registers: int,
    max_bits: int,
    gap_fill: int,
) -> None:
    """Every readable point is read exactly once, inside its request, within all limits."""
    unreadable = set(unreadable_points(pts, holes))
    served = sorted(i for r in plan for i in r.points)
    assert served == sorted(set(range(len(pts))) - unreadable)
    for r in plan:
        limit = max_bits if r.table.is_bit else max_registers
        fill = gap_fill * 16 if r.table.is_bit else gap_fill
        assert 1 <= r.count <= limit
        assert not any((r.table, a) in holes for a in range(r.start, r.end))
        covered: set[int] = set()
        for i in r.points:
            p = pts[i]
            assert p.table is r.table
            assert r.start <= p.address
            assert p.address + p.register_count <= r.end
            covered.update(range(p.address, p.address + p.register_count))
        assert min(covered) == r.start
        assert max(covered) == r.end - 1
        run = 0
        for a in range(r.start, r.end):
            run = 0 if a in covered else run + 1
            assert run <= fill


def test_exact_optimum_beats_naive_on_a_known_case() -> None:
    """Sanity check of the reference: a case where packing from the left is forced."""
    pts = [point(0), point(3), point(6), point(9)]
    assert exact_optimum(pts, max_registers=7, max_bits=2000, gap_fill=2) == 2
    assert exact_optimum(pts, max_registers=7, max_bits=2000, gap_fill=1) == 4


def test_large_random_maps_are_valid() -> None:
    """Seeded 300-point maps over all tables: every plan respects every constraint."""
    rng = random.Random(7)
    for _ in range(20):
        pts: list[PointConfig] = []
        holes: set[tuple[Table, int]] = set()
        for table in Table:
            address = 0
            for _ in range(75):
                width = 1 if table.is_bit else rng.choice([1, 2, 4])
                pts.append(point(address, width, table))
                address += width
                gap = rng.randint(0, 40)
                if gap and rng.random() < 0.1:
                    holes.add((table, address + rng.randrange(gap)))
                address += gap
        max_registers = rng.randint(8, 125)
        gap_fill = rng.randint(0, 30)
        plan = plan_reads(pts, max_registers=max_registers, max_bits=2000, gap_fill=gap_fill,
                          holes=holes)
        check_valid(pts, plan, holes, max_registers=max_registers, max_bits=2000,
                    gap_fill=gap_fill)
