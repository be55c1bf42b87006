"""Read-planner benchmark: requests per cycle ÷ optimum, 02 replies, and planning time.

Run: `python -m tests.bench.planner [--devices N] [--seed S]`. Prints figures, asserts
nothing. Everything is pure and in-process: each device is a `FakeDevice` that answers
exception 02 on its holes and 03 on reads over its own (hidden) maximum, driven cycle by
cycle through `DeviceReadPlanner` exactly as the poller drives it.

Scenarios:
  (a) N devices × 200 contiguous registers (100 float32), max 125, gap fill 12.
  (b) N sparse random maps: gaps 1–40, holding/input/coil/discrete, 16/32/64-bit points,
      holes in gaps and on points, fills 12 (RTU 9600 auto) and 124 (TCP auto), some
      devices with a hidden maximum below 125.
  (c) (b) with per-point intervals 1/5/10 s on a 1 s device: only due points are read.

"optimum" is an exact dynamic programme over consecutive point groups (minimum number of
feasible runs, per table, with the device's true holes and the maximum the planner starts
the cycle with), written independently of the planner's greedy. Steady-state requests
count everything sent after cycle 1, retries and probes included; the target for the
"afterwards" line is 0 / 0 (holes and hidden maxima all settled in cycle 1). Planning time
is compared with a naive baseline (one request per point) measured in the same run.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field

from gatewayd.config.models import DataType, PointConfig, Table
from gatewayd.modbus.planner import DeviceReadPlanner, ReadRequest, plan_reads, select_due

WIDTH_TYPE = {1: DataType.UINT16, 2: DataType.FLOAT32, 4: DataType.FLOAT64}
Hole = tuple[Table, int]


@dataclass
class FakeDevice:
    """Answers 02 on bad addresses and 03 on reads longer than its maxima; counts replies."""

    bad: set[Hole]
    max_registers: int = 125
    max_bits: int = 2000
    replies: dict[int, int] = field(default_factory=dict)  # code (0 = data) → count

    def answer(self, r: ReadRequest) -> int:
        """0 for data, else the Modbus exception code."""
        if r.count > (self.max_bits if r.table.is_bit else self.max_registers):
            code = 3
        elif any((r.table, a) in self.bad for a in range(r.start, r.end)):
            code = 2
        else:
            code = 0
        self.replies[code] = self.replies.get(code, 0) + 1
        return code


@dataclass
class Site:
    """One benchmark device: its points, true holes, hidden limits, intervals and fill."""

    points: list[PointConfig]
    bad: set[Hole]
    gap_fill: int
    max_registers: int = 125


def run_cycle(planner: DeviceReadPlanner, device: FakeDevice, due: Sequence[int] | None) -> int:
    """One poll cycle as the poller runs it; returns the number of requests sent."""
    sent = 0
    pending = planner.plan(due)
    while pending:
        request = pending.pop(0)
        sent += 1
        code = device.answer(request)
        if code:
            pending[:0] = planner.on_rejected(request, code)
        else:
            planner.on_success(request)
        if not pending:
            pending = planner.probes()
    return sent


def readable_spans(
    points: Sequence[PointConfig], table: Table, holes: Collection[Hole]
) -> list[tuple[int, int]]:
    """(start, end) of the points of `table` that cover no hole, sorted by address."""
    return sorted(
        (p.address, p.address + p.register_count)
        for p in points
        if p.table is table
        and not any((table, a) in holes for a in range(p.address, p.address + p.register_count))
    )


def optimum(
    points: Sequence[PointConfig],
    *,
    max_registers: int,
    max_bits: int,
    gap_fill: int,
    holes: Collection[Hole],
) -> int:
    """Fewest requests by DP over consecutive groups of address-sorted readable points."""
    total = 0
    for table in Table:
        spans = readable_spans(points, table, holes)
        limit = min(2000, max_bits) if table.is_bit else min(125, max_registers)
        fill = gap_fill * 16 if table.is_bit else gap_fill
        best = [0] + [1 << 30] * len(spans)
        for i in range(1, len(spans) + 1):
            # Group spans[j:i]; extend j leftwards while the group stays feasible.
            end = spans[i - 1][1]
            start = spans[i - 1][0]
            for j in range(i - 1, -1, -1):
                start = spans[j][0]
                if end - start > limit:
                    break
                if j < i - 1:
                    gap_start, gap_end = spans[j][1], spans[j + 1][0]
                    if gap_end - gap_start > fill or any(
                        (table, a) in holes for a in range(gap_start, gap_end)
                    ):
                        break
                best[i] = min(best[i], best[j] + 1)
        total += best[-1]
    return total


def contiguous_site() -> Site:
    """100 contiguous float32 holding registers."""
    pts = [
        PointConfig(measurepoint=f"f{i}", table=Table.HOLDING, address=2 * i,
                    type=DataType.FLOAT32)
        for i in range(100)
    ]
    return Site(pts, set(), gap_fill=12)


def sparse_site(rng: random.Random, intervals: bool = False) -> Site:
    """A random sparse map with gaps 1–40, mixed tables and widths, and holes."""
    pts: list[PointConfig] = []
    bad: set[Hole] = set()
    for table in Table:
        address = rng.randrange(0, 100)
        for _ in range(rng.randint(5, 60)):
            width = 1 if table.is_bit else rng.choice([1, 2, 2, 4])
            interval = rng.choice(["1s", "5s", "10s"]) if intervals else None
            pts.append(PointConfig(
                measurepoint=f"{table.value}{address}", table=table, address=address,
                type=DataType.BOOL if table.is_bit else WIDTH_TYPE[width],
                poll_interval=interval))
            if rng.random() < 0.03:
                bad.add((table, address + rng.randrange(width)))  # an unreadable point
            address += width
            gap = rng.randint(1, 40)
            if rng.random() < 0.15:
                bad.add((table, address + rng.randrange(gap)))  # a hole in the gap
            address += gap
    hidden_max = rng.choice([125, 125, 125, 60, 32])
    return Site(pts, bad, gap_fill=rng.choice([12, 124]), max_registers=hidden_max)


@dataclass
class Tally:
    """Requests and replies summed over the devices of a scenario."""

    steady_requests: int = 0
    steady_optimum: int = 0
    first_cycle_02: int = 0
    later_02: int = 0
    later_03: int = 0
    naive: int = 0


def run_scenario(sites: Sequence[Site], cycles: int, use_intervals: bool) -> Tally:
    """Poll every site `cycles` times; tally steady-state requests against the optimum."""
    tally = Tally()
    for site in sites:
        device = FakeDevice(site.bad, max_registers=site.max_registers)
        planner = DeviceReadPlanner(site.points, max_registers=125, gap_fill=site.gap_fill)
        last: dict[int, float] = {}
        for cycle in range(cycles):
            now = float(cycle)
            due = select_due(site.points, now, last, 1.0) if use_intervals else None
            before = dict(device.replies)
            limits = planner.max_registers, planner.max_bits  # what this cycle starts with
            sent = run_cycle(planner, device, due)
            for i in due if due is not None else range(len(site.points)):
                last[i] = now
            delta = {k: device.replies.get(k, 0) - before.get(k, 0) for k in device.replies}
            if cycle == 0:
                tally.first_cycle_02 += delta.get(2, 0)
                continue
            tally.later_02 += delta.get(2, 0)
            tally.later_03 += delta.get(3, 0)
            subset = site.points if due is None else [site.points[i] for i in due]
            tally.steady_requests += sent
            tally.steady_optimum += optimum(
                subset, max_registers=limits[0], max_bits=limits[1],
                gap_fill=site.gap_fill, holes=site.bad)
            tally.naive += len(subset) - len(
                [p for p in subset if any((p.table, a) in site.bad
                                          for a in range(p.address,
                                                         p.address + p.register_count))])
    return tally


def naive_plan(points: Sequence[PointConfig]) -> list[ReadRequest]:
    """Baseline: one request per point."""
    return [ReadRequest(p.table, p.address, p.register_count, (i,)) for i, p in enumerate(points)]


def per_call(fn: Callable[[], object], budget: float = 0.3) -> float:
    """Seconds per call of `fn`, timed over about `budget` seconds."""
    calls, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < budget or calls < 3:
        fn()
        calls += 1
    return elapsed / calls


def report(name: str, tally: Tally) -> None:
    """Print one scenario's figures."""
    ratio = tally.steady_requests / tally.steady_optimum if tally.steady_optimum else 1.0
    print(f"{name}")
    print(f"  requests/cycle ÷ optimum      {ratio:.3f}  "
          f"({tally.steady_requests} vs {tally.steady_optimum} over the steady cycles)")
    print(f"  naive (1 per point) ÷ optimum {tally.naive / max(1, tally.steady_optimum):.2f}")
    print(f"  exception 02 in cycle 1       {tally.first_cycle_02} (hole discovery)")
    print(f"  exception 02 / 03 afterwards  {tally.later_02} / {tally.later_03}")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the three scenarios and the timing comparison; print the figures."""
    parser = argparse.ArgumentParser(prog="python -m tests.bench.planner")
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--cycles", type=int, default=12)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)

    contiguous = [contiguous_site() for _ in range(args.devices)]
    sparse = [sparse_site(rng) for _ in range(args.devices)]
    mixed = [sparse_site(rng, intervals=True) for _ in range(args.devices)]
    print(f"read planner benchmark: {args.devices} devices per scenario, {args.cycles} cycles")
    report("(a) 200 contiguous registers (100 float32)",
           run_scenario(contiguous, args.cycles, use_intervals=False))
    report("(b) sparse maps, gaps 1-40, mixed tables/widths, holes, hidden maxima",
           run_scenario(sparse, args.cycles, use_intervals=False))
    report("(c) sparse maps with 1/5/10 s point intervals (due points only)",
           run_scenario(mixed, max(args.cycles, 21), use_intervals=True))

    print("planning time per device (same run, same maps)")
    for name, sites in (("contiguous", contiguous), ("sparse", sparse)):
        naive = sum(per_call(lambda s=s: naive_plan(s.points)) for s in sites[:10])  # type: ignore[misc]
        full = sum(per_call(lambda s=s: plan_reads(s.points, max_registers=125, max_bits=2000,  # type: ignore[misc]
                                                   gap_fill=s.gap_fill, holes=s.bad))
                   for s in sites[:10])
        planners = [DeviceReadPlanner(s.points, max_registers=125, gap_fill=s.gap_fill)
                    for s in sites[:10]]
        for p in planners:
            p.plan()
        cached = sum(per_call(p.plan) for p in planners)
        print(f"  {name:10s} plan_reads {full / 10 * 1e6:8.1f} µs = {full / naive:5.2f}× naive; "
              f"cached plan {cached / 10 * 1e6:6.1f} µs = {cached / naive:5.2f}× naive "
              f"(naive {naive / 10 * 1e6:.1f} µs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
