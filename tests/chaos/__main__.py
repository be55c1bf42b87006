"""`make chaos`: run every chaos scenario, print counts (offered, delivered, duplicated, lost).

    python -m tests.chaos [--quick|--full] [--only kill9,fuzz] [--serial] [--json out.json]

Quick mode (the default) takes about 2.5 minutes on a 2-core machine: 2 000 fuzzed configs
(10 through the CLI), 10 emulator restarts, 25 kill -9, 10 s spool-cap outage, a disk-full
outage until the disk is full, 20 s windows for the misbehaving devices. Full mode: 10 000
fuzzed configs (30 through the CLI), 20 restarts, 50 kills, 60 s outages. Needs root for
the disk-full scenario (tmpfs mount).

The fuzzer runs first, alone (it is CPU-bound in this process). Most other scenarios run
in two concurrent lanes (`LANES`): every figure they report is a count (offered,
delivered, duplicated, lost, values accepted, liveness), not a timing, so sharing the
machine slows them down without changing what they must show; each lane pairs one heavy
(25 k points/s) or restart-heavy scenario with lighter ones. The noisy RTU line runs
alone at the end (`SOLO`): its line emulator keeps RS-485 timing on this process's event
loop. `--serial` runs everything one after the other. Each scenario's duration is
printed, and the total at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.bench.common import Report
from tests.chaos import delivery, devices, fuzz_config


def _fuzz(report: Report, quick: bool) -> None:
    if quick:
        fuzz_config.run(report, quick, count=2_000, cli_count=10)
    else:
        fuzz_config.run(report, quick, count=10_000, cli_count=30)


SCENARIOS: dict[str, Callable[[Report, bool], Any]] = {
    "fuzz": _fuzz,
    "emulator": delivery.emulator_restarts,
    "kill9": delivery.kill9,
    "spoolcap": delivery.spool_cap,
    "diskfull": delivery.disk_full,
    "tcpdevice": devices.misbehaving_tcp_device,
    "rtuline": devices.noisy_rtu_line,
}

#: Concurrent lanes after the fuzzer: the 25 k points/s outages and the rogue TCP device in
#: one, the restarts in the other, so the two CPU-heavy kinds never pile up in one lane.
LANES = (("diskfull", "spoolcap", "tcpdevice"), ("kill9", "emulator"))
#: Run alone after the lanes: the noisy RTU line is timed by a line emulator on this
#: process's event loop, which a concurrent scenario's cloud (B1 load) delays (healthy
#: completeness fell to 81 % when it shared the loop with the emulator restarts).
SOLO = ("rtuline",)


async def _scenario(name: str, report: Report, quick: bool, durations: dict[str, float]) -> None:
    """Run one scenario; a failure becomes a FAILED row, never hides the others."""
    started = time.monotonic()
    print(f"\n=== {name} (started)", flush=True)
    try:
        result = SCENARIOS[name](report, quick)
        if asyncio.iscoroutine(result):
            await result
    except Exception as exc:  # one broken scenario must not hide the others' counts
        traceback.print_exc()
        report.add(name, "run", f"FAILED: {exc!r}"[:200], ok=False)
    durations[name] = round(time.monotonic() - started, 1)
    print(f"=== {name} done in {durations[name]:.1f} s", flush=True)


async def run(wanted: list[str], quick: bool, serial: bool, report: Report) -> dict[str, float]:
    """Run `wanted`: the fuzzer first, then the rest in lanes (or one by one)."""
    durations: dict[str, float] = {}
    parts = {name: Report(report.suite, report.mode) for name in wanted}
    if "fuzz" in wanted:
        await _scenario("fuzz", parts["fuzz"], quick, durations)
    solo = [name for name in wanted if name in SOLO]
    rest = [name for name in wanted if name != "fuzz" and name not in SOLO]
    lanes = (
        [[name] for name in rest]
        if serial
        else [[name for name in lane if name in rest] for lane in LANES]
    )
    lanes += [[name] for name in rest if not any(name in lane for lane in lanes)]

    async def lane(names: list[str]) -> None:
        for name in names:
            await _scenario(name, parts[name], quick, durations)

    if serial:
        for names in lanes:
            await lane(names)
    else:
        async with asyncio.TaskGroup() as group:
            for names in lanes:
                group.create_task(lane(names))
    await lane(solo)
    for name in wanted:  # rows in scenario order, whatever order they finished in
        report.rows.extend(parts[name].rows)
        report.details.update(parts[name].details)
    return durations


def main() -> None:
    """Run the scenarios and write the report."""
    parser = argparse.ArgumentParser(prog="python -m tests.chaos",
                                     description=__doc__.splitlines()[0])  # fmt: skip
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="the default: about 2.5 minutes")
    mode.add_argument("--full", action="store_true")
    parser.add_argument("--only", help=f"comma-separated, of: {', '.join(SCENARIOS)}")
    parser.add_argument("--serial", action="store_true", help="one scenario at a time")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    quick = not args.full
    wanted = [w.strip() for w in args.only.split(",")] if args.only else list(SCENARIOS)
    unknown = [w for w in wanted if w not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario(s) {unknown}; known: {', '.join(SCENARIOS)}")
    report = Report("chaos", "quick" if quick else "full")
    started = time.monotonic()
    durations = asyncio.run(run(wanted, quick, args.serial, report))
    total = round(time.monotonic() - started, 1)
    report.details["durations_s"] = {**durations, "total": total}
    report.write(args.json)
    print("durations: " + ", ".join(f"{k} {v:.1f} s" for k, v in durations.items())
          + f"; total {total:.1f} s")  # fmt: skip


if __name__ == "__main__":
    main()
