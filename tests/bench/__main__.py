"""`make bench`: run the benchmark suite, print the table of figures, write JSON.

    python -m tests.bench [--quick|--full] [--only B1,B3] [--json out.json]

Quick mode (the default) takes about 6 minutes on a 2-core machine (with `python -m
tests.chaos` about 2.5 minutes: both suites together stay under 10 minutes); full mode runs
more and longer repeats for release figures. Each benchmark's duration is printed as it
ends, and all of them with the total at the end. Each benchmark is a module with an async
`bench(report, quick)` that adds rows (figure, value, target, verdict) to one `Report`.
The older single-purpose benchmarks (`python -m tests.bench.planner`,
`config_load`, `poll_cpu`, `stage_cpu`, `spool`, `line_emulator`) stay runnable on their
own, and ``python -m tests.bench NAME [ARGS...]`` still runs one of them by name, as before.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import pkgutil
import runpy
import sys
import time
import traceback
from pathlib import Path

from tests.bench.common import Report

#: Benchmark id → module with `async def bench(report, quick)`.
BENCHES = {
    "B1": "tests.bench.b1_fleet",
    "B2": "tests.bench.b2_scaleout",
    "B3": "tests.bench.b3_sparse",
    "B4": "tests.bench.b4_rtu",  # B4 and B5
    "B7": "tests.bench.b7_outage",
    "B9": "tests.bench.b9_footprint",
}


def run_named() -> bool:
    """`python -m tests.bench NAME [ARGS...]`: run one benchmark module as a script."""
    names = {m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)])
             if not m.name.startswith("_")}  # fmt: skip
    if len(sys.argv) < 2 or sys.argv[1] not in names:
        return False
    name = sys.argv.pop(1)
    sys.argv[0] = f"tests.bench.{name}"
    runpy.run_module(f"tests.bench.{name}", run_name="__main__", alter_sys=True)
    return True


def main() -> None:
    """Run the suite (or one named module) and write the report."""
    if run_named():
        return
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench", description=__doc__.splitlines()[0]
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="the default: under 10 minutes")
    mode.add_argument("--full", action="store_true", help="longer windows, more repeats")
    parser.add_argument("--only", help="comma-separated ids, e.g. B1,B3 (B5 runs with B4)")
    parser.add_argument("--json", type=Path, help="output file (default bench-results/...)")
    args = parser.parse_args()
    quick = not args.full
    wanted = [w.strip().upper() for w in args.only.split(",")] if args.only else list(BENCHES)
    wanted = ["B4" if w == "B5" else w for w in wanted]
    unknown = [w for w in wanted if w not in BENCHES]
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; known: {', '.join(BENCHES)} and B5")
    report = Report("bench", "quick" if quick else "full")
    for bench_id in dict.fromkeys(wanted):
        started = time.monotonic()
        print(f"\n=== {bench_id} ({BENCHES[bench_id]})", flush=True)
        try:
            module = importlib.import_module(BENCHES[bench_id])
            asyncio.run(module.bench(report, quick))
        except Exception as exc:  # one broken benchmark must not hide the others' figures
            traceback.print_exc()
            report.add(bench_id, "run", f"FAILED: {exc!r}"[:200], ok=False)
        took = round(time.monotonic() - started, 1)
        report.details.setdefault("durations_s", {})[bench_id] = took
        print(f"=== {bench_id} done in {took:.1f} s", flush=True)
    durations = report.details.get("durations_s", {})
    durations["total"] = round(sum(durations.values()), 1)
    report.write(args.json)
    print("durations: " + ", ".join(f"{k} {v:.1f} s" for k, v in durations.items()))


if __name__ == "__main__":
    main()
