"""gatewayd's `Daemon` in its own process, recording every committed poll cycle.

    python -m tests.bench.daemon_proc CONFIG STATS.json

Exactly what `gatewayd run` runs (the same `Daemon`), plus an observer that keeps one
small tuple per committed cycle; on SIGTERM the daemon stops as usual and the tuples are
written to STATS.json: ``{"cycles": [[tick_ms, duration_s, requests, failed, good, total,
committed_ms], ...], "ready_ms": ..., "per_second": {second: good samples}}``. The
observer costs a tuple and a counter update per sample, so the process's CPU is the
daemon's.
"""

from __future__ import annotations

import asyncio
import cProfile
import json
import os
import sys
import time
from collections import Counter
from pathlib import Path

from tests.bench.box import as_on_a_box

as_on_a_box()  # before gatewayd is imported: measure what a box runs (tests/bench/box.py)

from gatewayd.app import Daemon  # noqa: E402
from gatewayd.config.loader import load_config  # noqa: E402
from gatewayd.modbus.poller import CycleResult  # noqa: E402
from gatewayd.samples import Quality  # noqa: E402
from gatewayd.systemd import Notifier  # noqa: E402


async def run(config_path: Path, stats_path: Path) -> int:
    """Run the daemon until SIGTERM, then write the cycle log."""
    config = load_config(config_path)
    cycles: list[tuple[int, float, int, int, int, int, int]] = []
    # Good samples per second of their read time: a slow cycle's samples can fall in the
    # next second, and the cloud only sees sample times.
    per_second: Counter[int] = Counter()

    def observe(result: CycleResult) -> None:
        good = 0
        for block in result.blocks:  # GOOD by construction; counted without expanding
            good += block.points
            per_second[block.ts_ms // 1000] += block.points
        for s in result.point_samples:
            if s.quality is Quality.GOOD:
                good += 1
                per_second[s.ts_ms // 1000] += 1
        cycles.append((result.tick_ms, result.duration, result.requests, result.failed_requests,
                       good, result.points, int(time.time() * 1000)))  # fmt: skip

    daemon = Daemon(config_path, config, notifier=Notifier(environ={}), observer=observe)
    task = asyncio.create_task(daemon.run())
    await daemon.ready.wait()
    ready_ms = int(time.time() * 1000)
    Path(f"{stats_path}.ready").write_text(str(ready_ms))  # noqa: ASYNC240 - once
    status = await task
    stats_path.write_text(  # noqa: ASYNC240 - at exit
        json.dumps({"cycles": cycles, "ready_ms": ready_ms, "per_second": per_second})
    )
    return status


def main() -> None:
    """Run; with $GWBENCH_PROFILE set, write a cProfile of the whole run to that path."""
    profile_path = os.environ.get("GWBENCH_PROFILE")
    if not profile_path:
        sys.exit(asyncio.run(run(Path(sys.argv[1]), Path(sys.argv[2]))))
    with cProfile.Profile() as profile:
        status = asyncio.run(run(Path(sys.argv[1]), Path(sys.argv[2])))
    profile.dump_stats(profile_path)
    sys.exit(status)


if __name__ == "__main__":
    main()
