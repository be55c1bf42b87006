"""Command bursts: 3 x 5,000 `measurepoint.set` at once, answered exactly once, session kept.

    python -m tests.bench commands_burst [--burst N] [--rounds R] [--latency S]

`gatewayd run` (as `tests.bench.commands_daemon`, its own process, so its RSS is its own)
on the two-device command site (`tests/integration/commands_site.py`), the Modbus
simulator in this process, a Debian mosquitto, and the spec-written cloud
(`tests/integration/mqtt_cloud.SpecCloud`). Each round publishes N commands with distinct
integer ids (alternating the two devices) as fast as paho takes them, then waits for the
replies. Figures per round: replies, duplicates, missing, done (200) and overloaded (2016)
counts, seconds to the last reply; overall: device writes against done replies, new
sessions (batch logins after the first: a dropped session logs in again), and the
daemon's RSS before the first burst, at its peak and after the last (ratio to the start).
`--latency S` puts the gateway behind a link that delivers the broker's bytes (commands,
acknowledgements) S seconds late: a far broker.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from gatewayd.sim.device import DeviceSimulator
from tests.bench.common import Report, rss_kib
from tests.integration.commands_site import model, write_site
from tests.integration.modbus_fixtures import still_units
from tests.integration.mosquitto_fixtures import start_mosquitto
from tests.integration.mqtt_cloud import (
    BROKER_OPTIONS,
    GatewayLink,
    SpecCloud,
    set_topic,
    typed_id,
)
from tests.support import async_wait_until

FC_WRITE_REGISTER, FC_WRITE_REGISTERS = 6, 16
BENCH = "CMD"


async def _wait_replies(cloud: SpecCloud, count: int, timeout: float, pid: int) -> int:
    """Wait for `count` replies; the peak RSS (KiB) of `pid` seen meanwhile."""
    peak = 0
    deadline = time.monotonic() + timeout
    while cloud.reply_count() < count and time.monotonic() < deadline:
        peak = max(peak, rss_kib(pid))
        await asyncio.sleep(0.05)  # sampling RSS, not synchronising
    return max(peak, rss_kib(pid))


async def run(report: Report, burst: int, rounds: int, latency: float = 0.0) -> None:
    """The benchmark (see the module docstring)."""
    with tempfile.TemporaryDirectory(prefix="gwcmd-") as name:
        tmp = Path(name)
        broker = start_mosquitto(tmp, extra=BROKER_OPTIONS)
        (tmp / "site").mkdir()
        async with DeviceSimulator(still_units(model(), 1, 2)) as sim:
            link = GatewayLink(broker.port, latency=latency)
            await link.start()
            config = write_site(tmp / "site", sim.port, link.port)
            cloud = await asyncio.to_thread(SpecCloud, broker.port)
            log = (tmp / "gatewayd.log").open("wb")
            proc = subprocess.Popen(  # noqa: ASYNC220 - started once
                [sys.executable, "-m", "tests.bench.commands_daemon", str(config)],
                stdout=log,
                stderr=log,
            )
            try:
                await async_wait_until(
                    lambda: cloud.requests["combine.login.batch"] >= 1, 30, "the batch login"
                )
                # One command answered: the daemon is up and serving commands.
                cloud.send(set_topic(1), "warm-up", {"u16": 1})
                await async_wait_until(lambda: cloud.reply_count() == 1, 30, "warm-up reply")
                await asyncio.sleep(2)  # let start-up allocations settle before the baseline
                rss_start = rss_kib(proc.pid)
                peak = rss_start
                sim.stats(1).reset()
                sim.stats(2).reset()
                sent = 1
                codes: Counter[int] = Counter()
                for round_ in range(rounds):
                    first = round_ * burst
                    started = time.monotonic()
                    for n in range(burst):
                        cloud.send(set_topic(1 + n % 2), first + n, {"u16": (first + n) % 60000})
                    sent += burst
                    peak = max(peak, await _wait_replies(cloud, sent, 600, proc.pid))
                    took = time.monotonic() - started
                    got = cloud.replies()[sent - burst :]
                    ids = Counter(typed_id(r.raw) for r in got)
                    round_codes = Counter(json.loads(r.raw)["code"] for r in got)
                    codes.update(round_codes)
                    missing = sum(1 for n in range(burst) if ids[first + n] == 0)
                    dupes = sum(c - 1 for c in ids.values() if c > 1)
                    tag = f"round {round_ + 1}"
                    report.add(BENCH, f"{tag}: replies", len(got), f"of {burst}",
                               target="= sent", ok=len(got) == burst and missing == 0)  # fmt: skip
                    report.add(BENCH, f"{tag}: answered twice", dupes, target="0", ok=dupes == 0)
                    others = {c: k for c, k in round_codes.items() if c not in (200, 2016)}
                    report.add(BENCH, f"{tag}: done / overloaded",
                               f"{round_codes[200]} / {round_codes[2016]}",
                               note=f"other codes: {others}")  # fmt: skip
                    report.add(BENCH, f"{tag}: seconds to the last reply", took, "s")
                await asyncio.sleep(5)  # the burst's garbage returned: measuring, not syncing
                rss_end = rss_kib(proc.pid)
                writes = sim.stats(1).requests[FC_WRITE_REGISTER]
                writes += sim.stats(2).requests[FC_WRITE_REGISTERS]
                done = codes[200]
                report.add(BENCH, "device writes / done replies", f"{writes} / {done}",
                           target="equal", ok=writes == done)  # fmt: skip
                sessions = cloud.requests["combine.login.batch"]
                report.add(BENCH, "sessions (batch logins)", sessions, target="1",
                           ok=sessions == 1)  # fmt: skip
                report.add(BENCH, "RSS before first burst", rss_start / 1024, "MiB")
                report.add(BENCH, "RSS peak", peak / 1024, "MiB")
                ratio = rss_end / rss_start
                report.add(BENCH, "RSS after / before", ratio, target="<= 1.10", ok=ratio <= 1.10,
                           note=f"{rss_end / 1024:.1f} MiB after")  # fmt: skip
            finally:
                proc.terminate()
                await asyncio.to_thread(proc.wait, 60)
                log.close()
                cloud.close()
                await link.stop()
                broker.stop()


async def bench(report: Report, quick: bool) -> None:
    """3 x 5,000 in both modes (the issue's figure); it takes well under a minute."""
    await run(report, 5000, 3)


def main() -> None:
    """Command line: run and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--burst", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--latency", type=float, default=0.0)
    args = parser.parse_args()
    report = Report("commands_burst", "run")
    asyncio.run(run(report, args.burst, args.rounds, args.latency))
    print(report.table())


if __name__ == "__main__":
    main()
