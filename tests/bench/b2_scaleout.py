"""B2 scale-out: step the load up until a step is not sustained; the ceiling in points/s.

    python -m tests.bench b2_scaleout [--full]

Steps (devices x float32 points per device, @ 1 s, one Modbus TCP bus): 50 k, 100 k,
150 k, 200 k, 250 k, 300 k and 400 k points/s, until one is not sustained. The devices are
`fast_responder`, a raw-socket responder in its own process that answers from a fixed
register image: the pymodbus simulator costs about as much CPU per request as the daemon,
and on 2 cores it was the limit (5 k points/s), not the daemon. Its own CPU is reported
next to the daemon's.

Each step runs the floor and gatewayd once (B1's machinery: device process, emulator here,
the pipeline in its own process) for 8 s (quick) or 40 s (full). A step is *sustained*
when every cycle ended within its interval and ≥ 99.9 % of the committed values were
accepted by the cloud. Reported: the ceiling (the highest sustained step) with the
daemon's CPU % of one core and RSS there, the floor's, the device side's and the cloud's
(this process: amqtt broker and emulator) figures at that step, freshness p99 there, the
largest message the cloud received at any step (< 512 KiB), and the first step that
failed, with why.
"""

from __future__ import annotations

import argparse
import asyncio

from tests.bench.b1_fleet import FAST_RESPONDER, Phase, fleet_site, phase_json, run_phase
from tests.bench.common import Report

#: (devices, float32 points per device): 50 k .. 400 k points/s at 1 s. One bus holds at
#: most 255 unit ids, so the steps past 250 k grow the devices instead of their number.
STEPS = [(100, 500), (100, 1000), (150, 1000), (200, 1000), (250, 1000), (200, 1500), (200, 2000)]
TARGET = 200_000


def sustained(phase: Phase) -> bool:
    """Every deadline met and ≥ 99.9 % of the committed values accepted."""
    return phase.missed_deadlines == 0 and phase.cycles > 0 and phase.completeness >= 0.999


def why_not(phase: Phase, floor: Phase, rate: int) -> str:
    """One line on how a step fell short."""
    return (
        f"{rate} points/s: {phase.cycles - phase.missed_deadlines} of {phase.cycles} "
        f"cycles in time (p99 {phase.cycle_p99_ms:.0f} ms, floor p99 "
        f"{floor.cycle_p99_ms:.0f} ms), completeness {100 * phase.completeness:.2f} %"
    )


def devices_cpu(phase: Phase) -> float:
    """The device process' CPU % of one core during the phase's window."""
    return float(phase.extra.get("device_cpu_percent", float("nan")))


def cloud_cpu(phase: Phase) -> float:
    """The cloud's (this process': broker and emulator) CPU % of one core in the window."""
    return float(phase.extra.get("cloud_cpu_percent", float("nan")))


async def bench(report: Report, quick: bool) -> None:
    """Run the steps; add rows."""
    seconds = 8.0 if quick else 40.0
    best: tuple[int, Phase, Phase] | None = None
    biggest_message = 0
    failed = ""
    details: list[dict[str, object]] = []
    report.details["B2"] = details  # filled step by step: a failing step keeps the others
    for devices, points in STEPS:
        rate = devices * points
        async with fleet_site(devices, points=points, device_side=FAST_RESPONDER) as site:
            floor = await run_phase(site, "floor", seconds)
            ours = await run_phase(site, "gatewayd", seconds)
        biggest_message = max(biggest_message, ours.max_message)
        details.append({"points_per_s": rate, "gatewayd": phase_json(ours),
                        "floor": phase_json(floor)})  # fmt: skip
        print(f"    {rate:7d} points/s: gatewayd cpu {ours.process.cpu_percent:5.1f} % "
              f"rss {ours.process.rss_kib / 1024:5.1f} MiB cycle p99 {ours.cycle_p99_ms:6.1f} ms "
              f"delivered {100 * ours.completeness:6.2f} % fresh p99 {ours.fresh_p99_ms:5.0f} ms "
              f"(devices {devices_cpu(ours):4.1f} %, cloud {cloud_cpu(ours):4.1f} %); "
              f"floor cpu {floor.process.cpu_percent:5.1f} % rss "
              f"{floor.process.rss_kib / 1024:5.1f} MiB cycle p99 {floor.cycle_p99_ms:6.1f} ms "
              f"delivered {100 * floor.completeness:6.2f} % fresh p99 {floor.fresh_p99_ms:5.0f} ms "
              f"(devices {devices_cpu(floor):4.1f} %, cloud {cloud_cpu(floor):4.1f} %)",
              flush=True)  # fmt: skip
        if not sustained(ours):
            failed = why_not(ours, floor, rate)
            break
        best = (rate, ours, floor)
    if best is None:
        report.add("B2", "ceiling", 0, "points/s", target=str(TARGET), ok=False, note=failed)
        return
    rate, ours, floor = best
    cpu = ours.process.cpu_percent
    report.add("B2", "ceiling (max sustained)", rate, "points/s", target=str(TARGET),
               ok=rate >= TARGET,
               note=f"first failing step: {failed}" if failed else "every step")  # fmt: skip
    report.add("B2", f"CPU at {rate} points/s", cpu, "% core",
               target="≤ 50 % (at 200k)", ok=cpu <= 50 if rate >= TARGET else None,
               note=f"floor {floor.process.cpu_percent:.1f} %, "
                    f"ratio {cpu / floor.process.cpu_percent:.2f}x")  # fmt: skip
    rss = ours.process.rss_kib / 1024
    report.add("B2", f"RSS at {rate} points/s", rss, "MiB", target="≤ 60 MiB", ok=rss <= 60,
               note=f"floor {floor.process.rss_kib / 1024:.1f} MiB")  # fmt: skip
    report.add("B2", f"device side CPU at {rate} points/s", devices_cpu(ours), "% core",
               note=f"during the floor's window {devices_cpu(floor):.1f} %")  # fmt: skip
    report.add("B2", f"cloud side CPU at {rate} points/s", cloud_cpu(ours), "% core",
               note=f"broker, emulator; floor window {cloud_cpu(floor):.1f} %")  # fmt: skip
    report.add("B2", f"freshness p99 at {rate} points/s", ours.fresh_p99_ms, "ms",
               note=f"floor {floor.fresh_p99_ms:.0f} ms; seconds: cloud behind")  # fmt: skip
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
