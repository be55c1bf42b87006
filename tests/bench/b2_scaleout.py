"""B2 scale-out: step the load up until a deadline is missed; max sustained points/s.

    python -m tests.bench b2_scaleout [--full]

Steps (devices x float32 points per device, @ 1 s): 50 x 100 (B1), 100 x 500, 200 x 1000.
Each step runs the floor and gatewayd once (B1's machinery: simulator process, emulator
here, the pipeline in its own process) for 8 s (quick) or 40 s (full). In quick mode the
first step reuses B1's measurement of the same load when B1 ran before in the same suite
(`b1_fleet.MEASURED`). A step is *sustained* when every cycle ended
within its interval and every committed value was accepted. Reported: the largest
sustained step's points/s, CPU % of one core and RSS there, the largest message the
cloud received at any step (< 512 KiB), and the first step that failed, with why.
"""

from __future__ import annotations

import argparse
import asyncio

from tests.bench.b1_fleet import MEASURED, Phase, fleet_site, phase_json, run_phase
from tests.bench.common import Report

STEPS = [(50, 100), (100, 500), (200, 1000)]


def sustained(phase: Phase) -> bool:
    """Every deadline met and every committed value accepted."""
    return phase.missed_deadlines == 0 and phase.cycles > 0 and phase.completeness >= 0.999


async def bench(report: Report, quick: bool) -> None:
    """Run the steps; add rows."""
    seconds = 8.0 if quick else 40.0
    best: tuple[int, Phase, Phase] | None = None
    biggest_message = 0
    failed = ""
    details = []
    for devices, points in STEPS:
        rate = devices * points
        reused = MEASURED.get((devices, points)) if quick else None
        if reused is not None:
            ours, floor = reused
            print(f"    {rate:7d} points/s: B1's measurement of this load, reused", flush=True)
        else:
            async with fleet_site(devices, points=points) as site:
                floor = await run_phase(site, "floor", seconds)
                ours = await run_phase(site, "gatewayd", seconds)
        biggest_message = max(biggest_message, ours.max_message)
        details.append({"points_per_s": rate, "gatewayd": phase_json(ours),
                        "floor": phase_json(floor)})  # fmt: skip
        print(f"    {rate:7d} points/s: gatewayd cpu {ours.process.cpu_percent:5.1f} % "
              f"cycle p99 {ours.cycle_p99_ms:7.1f} ms, completeness {ours.completeness:.4f}; "
              f"floor cpu {floor.process.cpu_percent:5.1f} % cycle p99 "
              f"{floor.cycle_p99_ms:7.1f} ms", flush=True)  # fmt: skip
        if not sustained(ours):
            failed = (f"{rate} points/s: {ours.cycles - ours.missed_deadlines} of "
                      f"{round(seconds)} cycles in time, "
                      f"{ours.missed_deadlines} over 1 s (p99 "
                      f"{ours.cycle_p99_ms:.0f} ms, floor p99 {floor.cycle_p99_ms:.0f} ms), "
                      f"completeness {100 * ours.completeness:.2f} %")  # fmt: skip
            break
        best = (rate, ours, floor)
    report.details["B2"] = details
    if best is None:
        report.add("B2", "max sustained", 0, "points/s", target="200000", ok=False, note=failed)
        return
    rate, ours, floor = best
    cpu = ours.process.cpu_percent
    report.add("B2", "max sustained", rate, "points/s", target="200000", ok=rate >= 200_000,
               note=f"first failing step: {failed}" if failed else "every step")  # fmt: skip
    report.add("B2", f"CPU at {rate} points/s", cpu, "% core",
               target="≤ 50 % (at 200k)", ok=cpu <= 50 if rate >= 200_000 else None,
               note=f"floor {floor.process.cpu_percent:.1f} %, "
                    f"ratio {cpu / floor.process.cpu_percent:.2f}x")  # fmt: skip
    rss = ours.process.rss_kib / 1024
    report.add("B2", f"RSS at {rate} points/s", rss, "MiB", target="≤ 80 MiB", ok=rss <= 80,
               note=f"floor {floor.process.rss_kib / 1024:.1f} MiB")  # fmt: skip
    report.add("B2", "largest message", biggest_message / 1024, "KiB", target="< 512 KiB",
               ok=biggest_message < 512 * 1024)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true")
    args = parser.parse_args()
    report = Report("bench-b2", "full" if args.full else "quick")
    asyncio.run(bench(report, quick=not args.full))
    report.write(None)


if __name__ == "__main__":
    main()
