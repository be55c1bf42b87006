"""`make chaos`: run every chaos scenario, print counts (offered, delivered, duplicated, lost).

    python -m tests.chaos [--quick|--full] [--only kill9,fuzz] [--json out.json]

Quick mode (default) stays under 10 minutes on a 2-core machine: 20 emulator restarts,
50 kill -9, 20 s outages, 4 000 fuzzed configs. Full mode: 60 s outages, longer kill
intervals, 10 000 fuzzed configs. Needs root for the disk-full scenario (tmpfs mount).
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
    fuzz_config.run(report, quick, count=4_000 if quick else 10_000)


SCENARIOS: dict[str, Callable[[Report, bool], Any]] = {
    "fuzz": _fuzz,
    "emulator": delivery.emulator_restarts,
    "kill9": delivery.kill9,
    "spoolcap": delivery.spool_cap,
    "diskfull": delivery.disk_full,
    "tcpdevice": devices.misbehaving_tcp_device,
    "rtuline": devices.noisy_rtu_line,
}


def main() -> None:
    """Run the scenarios and write the report."""
    parser = argparse.ArgumentParser(prog="python -m tests.chaos",
                                     description=__doc__.splitlines()[0])  # fmt: skip
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="the default: under 10 minutes")
    mode.add_argument("--full", action="store_true")
    parser.add_argument("--only", help=f"comma-separated, of: {', '.join(SCENARIOS)}")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    quick = not args.full
    wanted = args.only.split(",") if args.only else list(SCENARIOS)
    report = Report("chaos", "quick" if quick else "full")
    for name in wanted:
        started = time.monotonic()
        print(f"\n=== {name}", flush=True)
        try:
            result = SCENARIOS[name](report, quick)
            if asyncio.iscoroutine(result):
                asyncio.run(result)
        except Exception as exc:  # one broken scenario must not hide the others' counts
            traceback.print_exc()
            report.add(name, "run", f"FAILED: {exc!r}"[:200], ok=False)
        report.details.setdefault("durations_s", {})[name] = round(time.monotonic() - started, 1)
    report.write(args.json)


if __name__ == "__main__":
    main()
