"""Planner state machines: hole discovery, limit lowering, due selection and plan caching."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewayd.config.models import DataType, PointConfig, Table
from gatewayd.modbus.planner import (
    LIMIT_RETRY_CYCLES,
    DeviceReadPlanner,
    PlanCache,
    PlanError,
    ReadRequest,
    lowered_limit,
    plan_reads,
    select_due,
    split_failed_request,
)

H, C = Table.HOLDING, Table.COIL
WIDTH_TYPE = {1: DataType.UINT16, 2: DataType.FLOAT32, 4: DataType.FLOAT64}


def point(address: int, width: int = 1, table: Table = H, interval: str | None = None
          ) -> PointConfig:
    """A point of `width` registers at `address` (a bool on bit tables)."""
    type_ = DataType.BOOL if table.is_bit else WIDTH_TYPE[width]
    return PointConfig(measurepoint=f"p{table.value}{address}", table=table, address=address,
                       type=type_, poll_interval=interval)


@dataclass
class FakeDevice:
    """A pure stand-in for a device: 02 on bad addresses, 03 on reads over its maxima."""

    bad: set[tuple[Table, int]]
    max_len: int = 125
    max_bits: int = 2000
    log: list[tuple[ReadRequest, int]] = field(default_factory=list)  # (request, 0 or code)

    def answer(self, r: ReadRequest) -> int:
        """0 for data, else the exception code."""
        if r.count > (self.max_bits if r.table.is_bit else self.max_len):
            code = 3
        elif any((r.table, a) in self.bad for a in range(r.start, r.end)):
            code = 2
        else:
            code = 0
        self.log.append((r, code))
        return code


def run_cycle(planner: DeviceReadPlanner, device: FakeDevice, due: list[int] | None = None
              ) -> set[int]:
    """Drive one poll cycle like the poller does; return the point indices read."""
    pending = planner.plan(due)
    read: set[int] = set()
    while pending:
        request = pending.pop(0)
        code = device.answer(request)
        if code:
            pending[:0] = planner.on_rejected(request, code)
        else:
            planner.on_success(request)
            read.update(request.points)
        if not pending:
            pending = planner.probes()
    return read


# ---------------------------------------------------------------------------- splitting


def test_split_bisects_points_and_probes_the_gap() -> None:
    """A failed merged request splits into left half, gap probe, right half."""
    pts = [point(0), point(1), point(5), point(6, 2)]
    request = plan_reads(pts, max_registers=125, max_bits=2000, gap_fill=10)[0]
    assert request == ReadRequest(H, 0, 8, (0, 1, 2, 3))
    pieces, holes = split_failed_request(request, pts)
    assert pieces == [ReadRequest(H, 0, 2, (0, 1)), ReadRequest(H, 2, 3, ()),
                      ReadRequest(H, 5, 3, (2, 3))]
    assert holes == frozenset()


def test_split_single_point_and_probes_down_to_holes() -> None:
    """A lone point range is unreadable; probes halve down to single registers."""
    pts = [point(4, 2)]
    assert split_failed_request(ReadRequest(H, 4, 2, (0,)), pts) == ([], {(H, 4), (H, 5)})
    assert split_failed_request(ReadRequest(H, 2, 5, ()), pts) == (
        [ReadRequest(H, 2, 2, ()), ReadRequest(H, 4, 3, ())], frozenset())
    assert split_failed_request(ReadRequest(H, 9, 1, ()), pts) == ([], {(H, 9)})
    # A point inside a wider range: the extras around it become probes.
    assert split_failed_request(ReadRequest(H, 2, 6, (0,)), pts) == (
        [ReadRequest(H, 2, 2, ()), ReadRequest(H, 4, 2, (0,)), ReadRequest(H, 6, 2, ())],
        frozenset())


def test_hole_in_a_gap_is_found_once_and_never_read_again() -> None:
    """A bad register inside a read-through gap: found in cycle 1, no 02 afterwards."""
    pts = [point(a) for a in (0, 1, 2, 10, 11, 12)]
    device = FakeDevice(bad={(H, 6)})
    planner = DeviceReadPlanner(pts, max_registers=125, gap_fill=10)
    assert run_cycle(planner, device) == set(range(6))
    assert planner.holes == {(H, 6)}
    assert planner.unreadable == []
    device.log.clear()
    for _ in range(3):
        assert run_cycle(planner, device) == set(range(6))
    assert [r for r, code in device.log] == [ReadRequest(H, 0, 3, (0, 1, 2)),
                                            ReadRequest(H, 10, 3, (3, 4, 5))] * 3


def test_unreadable_point_is_dropped_from_later_plans() -> None:
    """A point on a bad register becomes unreadable; its neighbours keep being read."""
    pts = [point(a) for a in range(8)]
    device = FakeDevice(bad={(H, 3)})
    planner = DeviceReadPlanner(pts, max_registers=125, gap_fill=0)
    assert run_cycle(planner, device) == set(range(8)) - {3}
    assert planner.unreadable == [3]
    device.log.clear()
    assert run_cycle(planner, device) == set(range(8)) - {3}
    assert [r for r, _ in device.log] == [ReadRequest(H, 0, 3, (0, 1, 2)),
                                         ReadRequest(H, 4, 4, (4, 5, 6, 7))]


@st.composite
def sparse_devices(
    draw: st.DrawFn, max_points: int = 25, max_gap: int = 12, max_fill: int = 12
) -> tuple[list[PointConfig], set[tuple[Table, int]], int]:
    """A random sparse map with bad registers in gaps and on points, and a gap fill."""
    pts: list[PointConfig] = []
    bad: set[tuple[Table, int]] = set()
    for table in (H, Table.INPUT, C):
        address = 0
        for _ in range(draw(st.integers(0, max_points))):
            width = 1 if table.is_bit else draw(st.sampled_from([1, 2, 4]))
            pts.append(point(address, width, table))
            if draw(st.integers(0, 15)) == 0:
                bad.add((table, address + draw(st.integers(0, width - 1))))
            address += width
            gap = draw(st.integers(0, max_gap))
            if gap and draw(st.integers(0, 4)) == 0:
                bad.add((table, address + draw(st.integers(0, gap - 1))))
            address += gap
    if not pts:
        pts.append(point(0))
    return pts, bad, draw(st.integers(0, max_fill))


@settings(max_examples=150, deadline=None)
@given(sparse_devices(), st.integers(8, 125))
def test_discovery_converges_in_the_first_cycle(
    case: tuple[list[PointConfig], set[tuple[Table, int]], int], max_registers: int
) -> None:
    """After cycle 1: every readable point is read, no more 02, and the plan is optimal."""
    pts, bad, gap_fill = case
    device = FakeDevice(bad=bad)
    planner = DeviceReadPlanner(pts, max_registers=max_registers, gap_fill=gap_fill)
    readable = {i for i, p in enumerate(pts)
                if not any((p.table, a) in bad for a in range(p.address,
                                                              p.address + p.register_count))}
    assert run_cycle(planner, device) == readable
    assert set(planner.unreadable) == set(range(len(pts))) - readable
    # Every learnt hole is a bad register, or part of a point that has one.
    dead = {(p.table, a) for i, p in enumerate(pts) if i not in readable
            for a in range(p.address, p.address + p.register_count)}
    assert planner.holes <= bad | dead
    device.log.clear()
    assert run_cycle(planner, device) == readable
    assert all(code == 0 for _, code in device.log)
    # With what it learnt, the plan is as short as planning with the true holes.
    assert len(device.log) == len(plan_reads(pts, max_registers=planner.max_registers,
                                             max_bits=planner.max_bits, gap_fill=gap_fill,
                                             holes=bad))


@settings(max_examples=200, deadline=None)
@given(sparse_devices(max_points=60, max_gap=40, max_fill=124), st.integers(8, 125))
def test_holes_and_a_hidden_limit_are_both_settled_in_the_first_cycle(
    case: tuple[list[PointConfig], set[tuple[Table, int]], int], cap: int
) -> None:
    """A device that refuses reads over `cap` registers and has holes: after cycle 1 it
    never answers 02 or 03 again, and the plan is as short as one made knowing both.

    (The limit search needs a long run of registers known readable; the first cycle's gap
    probes can make one only after the search first looked, so it must look again.)
    """
    pts, bad, gap_fill = case
    device = FakeDevice(bad=bad, max_len=cap)
    planner = DeviceReadPlanner(pts, max_registers=125, gap_fill=gap_fill)
    readable = run_cycle(planner, device)
    for _ in range(3):
        device.log.clear()
        assert run_cycle(planner, device) == readable
        assert [(r, code) for r, code in device.log if code] == []
    assert len(device.log) == len(plan_reads(pts, max_registers=planner.max_registers,
                                             max_bits=planner.max_bits, gap_fill=gap_fill,
                                             holes=bad))


def test_holes_on_every_due_subset_stay_quiet() -> None:
    """Per-point due subsets re-pack differently; cycle-1 probes keep them free of 02."""
    rng = random.Random(3)
    pts = [point(a * 3) for a in range(40)]
    bad = {(H, a * 3 + 1) for a in range(0, 40, 7)} | {(H, a * 3) for a in range(0, 40, 7)}
    device = FakeDevice(bad=bad)
    planner = DeviceReadPlanner(pts, max_registers=20, gap_fill=4)
    assert run_cycle(planner, device) == set(range(40)) - set(range(0, 40, 7))
    device.log.clear()
    for _ in range(30):
        due = sorted(rng.sample(range(40), rng.randint(1, 40)))
        assert run_cycle(planner, device, due) == set(due) - set(range(0, 40, 7))
    assert device.log
    assert all(code == 0 for _, code in device.log)


# ---------------------------------------------------------------------------- limits


def test_exception_03_halves_the_maximum_and_replans() -> None:
    """A device refusing reads over 30 registers: 125 → 62 → 31, then the exact 30 is found."""
    pts = [point(2 * i, 2) for i in range(100)]
    device = FakeDevice(bad=set(), max_len=30)
    planner = DeviceReadPlanner(pts, max_registers=125, gap_fill=0)
    assert run_cycle(planner, device) == set(range(100))
    assert planner.max_registers == 30
    device.log.clear()
    run_cycle(planner, device)
    assert all(code == 0 for _, code in device.log)
    assert len(device.log) == 7  # 15 float32 (30 registers) per request: ceil(100 / 15)


@pytest.mark.parametrize("cap", [7, 28, 29, 64, 100, 124])
@pytest.mark.parametrize("width", [1, 2])
def test_the_exact_register_limit_is_learnt_in_the_first_cycle(cap: int, width: int) -> None:
    """After cycle 1 the maximum is the device's real limit (rounded down to whole points),
    every later cycle needs the fewest requests and never sees exception 03 again."""
    pts = [point(width * i, width) for i in range(200 // width)]
    device = FakeDevice(bad=set(), max_len=cap)
    planner = DeviceReadPlanner(pts, max_registers=125, gap_fill=0)
    assert run_cycle(planner, device) == set(range(len(pts)))
    if any(code == 3 for _, code in device.log):
        assert cap - width < planner.max_registers <= cap
    else:  # whole points never needed a longer read than the device takes
        assert planner.max_registers == 125
    device.log.clear()
    assert run_cycle(planner, device) == set(range(len(pts)))
    assert all(code == 0 for _, code in device.log)
    per_request = cap // width
    assert len(device.log) == -(-len(pts) // per_request)  # ceil: the optimum at this cap


def test_limit_never_drops_below_the_widest_point() -> None:
    """Lowering stops at the widest point; a short read refused is not a length problem."""
    assert lowered_limit(125, 100, 4) == 50
    assert lowered_limit(10, 100, 4) == 5
    assert lowered_limit(5, 5, 4) == 4
    planner = DeviceReadPlanner([point(0, 4), point(4, 4)], max_registers=125, gap_fill=0)
    assert planner.on_rejected(ReadRequest(H, 0, 8, (0, 1)), 3) == [
        ReadRequest(H, 0, 4, (0,)), ReadRequest(H, 4, 4, (1,))]
    assert planner.max_registers == 4
    assert planner.on_rejected(ReadRequest(H, 0, 4, (0,)), 3) == []
    assert planner.max_registers == 4


def test_the_planner_has_no_timeout_hook() -> None:
    """A timeout is no evidence of a read limit: the planner offers no way to learn from one
    (it used to halve the maximum on a timeout after any answer, for good)."""
    assert not hasattr(DeviceReadPlanner, "on_timeout")


def cycles_until_optimal(planner: DeviceReadPlanner, device: FakeDevice, optimum: int,
                         limit: int = 100) -> int:
    """Healthy cycles run until one needs only `optimum` requests, all answered."""
    for cycle in range(1, limit + 1):
        device.log.clear()
        run_cycle(planner, device)
        planner.end_cycle(healthy=True)
        if len(device.log) == optimum and all(code == 0 for _, code in device.log):
            return cycle
    raise AssertionError(f"still not optimal after {limit} cycles: {device.log}")


@pytest.mark.parametrize("code", [3, 4])
def test_a_transient_refusal_lowers_the_limit_for_a_few_cycles_only(code: int) -> None:
    """One refusal (04 device busy, or even 03) of a read that the device takes again
    later: after LIMIT_RETRY_CYCLES healthy cycles one probe re-tries the plan's longest
    read at the configured maximum, and from the next cycle on the plan is one request."""
    pts = [point(i) for i in range(100)]
    device = FakeDevice(bad=set())
    planner = DeviceReadPlanner(pts, max_registers=125, gap_fill=0)
    (request,) = planner.plan()
    assert [r.count for r in planner.on_rejected(request, code)] == [50, 50]
    assert planner.max_registers == 50
    assert cycles_until_optimal(planner, device, optimum=1) == LIMIT_RETRY_CYCLES + 2
    assert planner.max_registers == 125
    assert [r for r, _ in device.log] == [ReadRequest(H, 0, 100, tuple(range(100)))]
    assert cycles_until_optimal(planner, device, optimum=1) == 1  # and it stays there


def test_a_true_limit_comes_back_at_once_and_is_tried_ever_more_rarely() -> None:
    """A device that really refuses reads over 30: each re-try costs one refused probe
    (no point is read less for it), the maximum stays 30 with no new search, and the waits
    double: 8, 16, 32 ... healthy cycles."""
    pts = [point(2 * i, 2) for i in range(100)]
    device = FakeDevice(bad=set(), max_len=30)
    planner = DeviceReadPlanner(pts, max_registers=125, gap_fill=0)
    assert run_cycle(planner, device) == set(range(100))
    planner.end_cycle(healthy=True)
    assert planner.max_registers == 30
    refusals_at: list[int] = []
    for cycle in range(2, 1 + 8 + 16 + 32 + 1):
        device.log.clear()
        assert run_cycle(planner, device) == set(range(100))
        assert planner.max_registers == 30
        planner.end_cycle(healthy=True)
        refused = [r.count for r, code in device.log if code]
        if refused:
            refusals_at.append(cycle)
            assert refused == [124]  # 62 float32: the longest read at the configured 125
            assert len(device.log) == 7 + 1
        else:
            assert len(device.log) == 7  # ceil(100 / 15): the optimum at 30
    # Cycle 1 (the one that learnt 30) counts as the first healthy cycle of the wait.
    assert refusals_at == [8 + 1, 8 + 1 + 16, 8 + 1 + 16 + 32]


def test_unhealthy_cycles_do_not_count_towards_a_retry() -> None:
    """Cycles that ended in a timeout or without answers do not bring the re-try closer."""
    pts = [point(i) for i in range(100)]
    planner = DeviceReadPlanner(pts, max_registers=125, gap_fill=0)
    (request,) = planner.plan()
    planner.on_rejected(request, 4)
    for _ in range(5 * LIMIT_RETRY_CYCLES):
        planner.end_cycle(healthy=False)
    assert planner.max_registers == 50
    assert planner.probes() == []
    for _ in range(LIMIT_RETRY_CYCLES):
        planner.end_cycle(healthy=True)
    assert planner.probes() == [ReadRequest(H, 0, 100, ())]


def test_a_search_stalled_by_a_timeout_resumes_at_the_next_retry() -> None:
    """A limit probe that times out gives no verdict and the search stops there (the
    maximum stays at what was answered); the re-try, refused, lets the search step again."""
    pts = [point(i) for i in range(100)]
    device = FakeDevice(bad=set(), max_len=70)
    planner = DeviceReadPlanner(pts, max_registers=125, gap_fill=0)
    (request,) = planner.plan()
    assert device.answer(request) == 3
    for piece in planner.on_rejected(request, 3):  # 50 + 50, both answered
        planner.on_success(piece)
    (search,) = planner.probes()
    assert search == ReadRequest(H, 0, 75, ())
    assert planner.probes() == []  # it timed out: no verdict, no repeat
    assert planner.max_registers == 50
    for _ in range(LIMIT_RETRY_CYCLES):
        planner.end_cycle(healthy=True)
    (retry,) = planner.probes()
    assert retry == ReadRequest(H, 0, 100, ())
    assert planner.on_rejected(retry, 3) == []
    assert planner.probes() == [search]  # the search steps again
    assert planner.on_rejected(search, device.answer(search)) == []  # 75 > 70: refused
    assert cycles_until_optimal(planner, device, optimum=2) == 2  # its steps, then 70 + 30
    assert planner.max_registers == 70


def test_a_lowered_bit_limit_is_tried_again_too() -> None:
    """A refused 1000-coil read halves max_bits; the re-try probe reads all 1000 coils:
    refused, max_bits stays 500; answered, it is 2000 again."""
    pts = [point(i, table=C) for i in range(1000)]
    planner = DeviceReadPlanner(pts, max_registers=125, gap_fill=0)
    (request,) = planner.plan()
    planner.on_rejected(request, 4)
    assert planner.max_bits == 500
    for _ in range(LIMIT_RETRY_CYCLES):
        planner.end_cycle(healthy=True)
    (retry,) = planner.probes()
    assert retry == ReadRequest(C, 0, 1000, ())
    assert planner.is_limit_probe(retry)
    assert planner.on_rejected(retry, 3) == []
    assert planner.max_bits == 500
    for _ in range(2 * LIMIT_RETRY_CYCLES):  # refused once: the next try waits twice as long
        assert planner.probes() == []
        planner.end_cycle(healthy=True)
    assert planner.probes() == [retry]
    planner.on_success(retry)
    assert planner.max_bits == 2000
    assert [r.count for r in planner.plan()] == [1000]


def test_coil_reads_lower_max_bits() -> None:
    """03 on a long coil read lowers the bit maximum, not the register one."""
    pts = [point(i, table=C) for i in range(1000)]
    planner = DeviceReadPlanner(pts, max_registers=125, gap_fill=0)
    (request,) = planner.plan()
    assert [r.count for r in planner.on_rejected(request, 4)] == [500, 500]
    assert (planner.max_bits, planner.max_registers) == (500, 125)
    assert planner.on_rejected(request, 1) == []  # illegal function: nothing to retry


def test_point_too_wide_fails_at_construction() -> None:
    """A device maximum below a point's width is a PlanError up front."""
    with pytest.raises(PlanError, match="exceed the read limit 2"):
        DeviceReadPlanner([point(0, 4)], max_registers=2, gap_fill=0)


# ---------------------------------------------------------------------------- scheduling


def test_select_due_follows_each_points_grid() -> None:
    """5 s device: 10 s points every other cycle, 7 s points at the right average rate."""
    pts = [point(0), point(1, interval="10s"), point(2, interval="7s"), point(3, interval="1s")]
    last: dict[int, float] = {}
    reads = dict.fromkeys(range(4), 0)
    for cycle in range(84):  # 420 s
        now = 1000.0 + 5 * cycle + (0.003 if cycle % 2 else -0.002)  # jitter
        for i in select_due(pts, now, last, 5.0):
            reads[i] += 1
            last[i] = now
    assert reads == {0: 84, 1: 42, 2: 60, 3: 84}


def test_select_due_first_cycle_reads_everything() -> None:
    """Never-polled points are due at once."""
    pts = [point(0, interval="1h"), point(1)]
    assert select_due(pts, 0.0, {}, 5.0) == [0, 1]
    assert select_due(pts, 5.0, {0: 0.0, 1: 0.0}, 5.0) == [1]


def test_plan_cache_maps_indices_and_reuses_plans() -> None:
    """Cached plans index the full list and are reused per (due, holes, limit)."""
    pts = [point(0), point(1), point(2), point(50)]
    cache = PlanCache(pts, gap_fill=0)
    plan = cache.plan([3, 2, 0], max_registers=125)
    assert plan == [ReadRequest(H, 0, 1, (0,)), ReadRequest(H, 2, 1, (2,)),
                    ReadRequest(H, 50, 1, (3,))]
    assert cache.plan({0, 2, 3}, max_registers=125) == plan
    assert cache.plan([0, 1, 2], max_registers=2) == [ReadRequest(H, 0, 2, (0, 1)),
                                                     ReadRequest(H, 2, 1, (2,))]
    assert cache.plan([0, 1, 2], max_registers=125, holes={(H, 1)}) == [
        ReadRequest(H, 0, 1, (0,)), ReadRequest(H, 2, 1, (2,))]


def test_limit_search_stops_when_no_readable_run_is_long_enough() -> None:
    """Sparse points leave no 12-register readable run: the search gives up, no probe loops."""
    pts = [point(40 * i, 2) for i in range(4)]  # 2-register points 40 apart, gap fill 0
    planner = DeviceReadPlanner(pts, max_registers=125, gap_fill=0)
    device = FakeDevice(bad=set(), max_len=125)
    run_cycle(planner, device)
    planner.on_rejected(ReadRequest(H, 0, 24, (0,)), 3)  # pretend a 24-long read was refused
    assert planner.probes() == []  # only 2-register runs are known readable
    assert planner.probes() == []
    assert planner.max_registers == 12


def test_a_read_that_keeps_failing_is_checked_once_not_every_cycle() -> None:
    """A plan read longer than any answered one, failing with exception 06 (busy) every
    time: `probes()` checks it once; later cycles send only the plan."""
    pts = [point(0), point(10, 2), point(30, 4)]
    planner = DeviceReadPlanner(pts, max_registers=125, gap_fill=0)
    assert [r.count for r in planner.plan()] == [1, 2, 4]
    planner.on_success(ReadRequest(H, 0, 1, (0,)))
    planner.on_success(ReadRequest(H, 10, 2, (1,)))
    busy = ReadRequest(H, 30, 4, (2,))
    assert planner.on_rejected(busy, 6) == []
    check = ReadRequest(H, 30, 4, ())
    assert planner.probes() == [check]
    assert planner.is_limit_probe(check)
    assert planner.on_rejected(check, 6) == []
    for _ in range(3):  # later cycles: the same failure, no second check
        assert planner.on_rejected(busy, 6) == []
        assert planner.probes() == []
    assert planner.max_registers == 125  # 06 says nothing about read length
