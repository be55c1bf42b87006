"""B7 outage: 10 k points/s, the uplink cut, then restored: drain time, capped drain, loss.

    python -m tests.bench b7_outage [--full]

100 devices x 100 float32 points @ 1 s (10 k points/s) through `gatewayd run`; the cloud
(the EnOS emulator, in this process) is stopped for an outage and started again, twice:

1. Loopback drain: the emulator back without limits (timed from the first accepted value:
   the reconnect backoff is reported apart); the daemon's backlog pacing raised
   (`backlog_points_per_second` 1 M, `backlog_bytes_per_second` 1 GiB) so the pipeline
   itself is measured. Drain time = restore until the spool holds no more than two cycles
   of live data; drain rate = backlog ÷ drain time; an hour of 10 k points/s (36 M
   points) is extrapolated from that rate (the outage is compressed: quick 20 s, full
   5 min of real polling), and said so.
2. Capped drain: the emulator back with a 1 MB/s upstream cap and the daemon's default
   pacing (800 KiB/s for backlog, live first): upstream bytes/s while the backlog drains
   ÷ the cap, and live freshness p99 (accepted − sample time of `post` values sampled
   after the cloud came back; younger outage values also go out as `post`, but they are
   backlog, not live).

Zero loss is counted as in the chaos suite (spool sequence vs distinct accepted values,
after a final drain with polling stopped); the spool file's peak size is sampled against
its cap (256 MiB default).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import time
from typing import Any

from tests.bench.b1_fleet import Site
from tests.bench.common import ProcessMeter, Report, percentile
from tests.chaos.delivery import (
    Ledger,
    chaos_site,
    drain,
    restart_cloud,
    spool_counts,
    start_gatewayd,
    stop_gatewayd,
    tally,
)
from tests.support import async_wait_until

DEVICES, POINTS = 100, 100
RATE = DEVICES * POINTS
CAP = 1_000_000  # bytes/s


async def _pending(site: Site) -> int:
    return (await asyncio.to_thread(spool_counts, site.workdir / "spool.db"))["pending"]


async def _outage(site: Site, ledger: Ledger, seconds: float) -> int:
    """Stop the cloud for `seconds` (archiving what it held); return the backlog rows."""
    ledger.archive(site.cloud)
    await site.cloud.stop()
    ledger.archive(site.cloud)
    await asyncio.sleep(seconds)  # the outage itself: timing
    return await _pending(site)


async def _watch_drain(site: Site, timeout: float, peak: list[int]) -> float:
    """Seconds until the spool is back to live size (≤ 2 cycles), sampling file size."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        pending = await _pending(site)
        peak[0] = max(peak[0], _file_bytes(site))
        if pending <= 2 * RATE:
            return time.monotonic() - started
        await asyncio.sleep(0.5)  # sampling the spool twice a second
    return float("nan")


async def _reconnected(site: Site) -> float:
    """Seconds until the restored cloud accepts a first value. The daemon's reconnect
    backoff keeps to EnOS' 4 attempts per 120 s, counting its first connect at start-up,
    so a short outage early in a run can take up to ~2 minutes to recover from."""
    started = time.monotonic()
    await async_wait_until(lambda: site.cloud.emulator.records.points, 150, "a reconnect")
    return time.monotonic() - started


def _file_bytes(site: Site) -> int:
    return sum(p.stat().st_size for p in site.workdir.glob("spool.db*"))


async def bench(report: Report, quick: bool) -> None:
    """Run both outages; add rows."""
    outage = 20.0 if quick else 300.0
    uplink = {"backlog_points_per_second": 1_000_000, "backlog_bytes_per_second": "1GiB",
              "reply_timeout": "10s"}  # fmt: skip
    figures: dict[str, Any] = {"outage_s": outage}
    peak = [0]
    async with chaos_site(DEVICES, uplink=uplink) as site:
        ledger = Ledger()
        proc = start_gatewayd(site.config_path, site.workdir / "gatewayd.log")
        try:
            await asyncio.sleep(5)  # start-up, login, live data flowing
            backlog = await _outage(site, ledger, outage)
            await restart_cloud(site)
            reconnect_s = await _reconnected(site)
            backlog = await _pending(site)  # it grew while the daemon reconnected
            meter = ProcessMeter(proc.pid)
            meter.start()
            own = time.process_time()
            drain_s = await _watch_drain(site, 600, peak)
            daemon_cpu = meter.stop().cpu_percent
            cloud_cpu = 100 * (time.process_time() - own) / drain_s
            figures.update(backlog_rows=backlog, drain_s=drain_s, reconnect_s=reconnect_s,
                           drain_daemon_cpu=daemon_cpu, drain_cloud_cpu=cloud_cpu)  # fmt: skip
            # Second outage, restored behind a 1 MB/s cap with the default backlog pacing.
        finally:
            status = await stop_gatewayd(proc)
        ledger.archive(site.cloud)
        default_pacing = site.workdir / "capped.yaml"
        default_pacing.write_text(site.config_path.read_text().replace(
            "backlog_points_per_second: 1000000", "backlog_points_per_second: 20000").replace(
            "backlog_bytes_per_second: 1GiB", "backlog_bytes_per_second: 800KiB"))  # fmt: skip
        proc = start_gatewayd(default_pacing, site.workdir / "gatewayd.log")
        try:
            await asyncio.sleep(5)
            backlog2 = await _outage(site, ledger, outage)
            await restart_cloud(site)
            site.cloud.emulator.faults.limit_rate(CAP)
            reconnect2_s = await _reconnected(site)
            backlog2 = await _pending(site)
            emulator = site.cloud.emulator
            bytes_before = emulator.stats.bytes_in
            started = time.time()
            # Throughput while there is a backlog to send: until the spool is back to live
            # size (the cap, not the backlog's size, must be what limits it).
            window = await _watch_drain(site, 600, peak)
            throughput = (emulator.stats.bytes_in - bytes_before) / window
            # Live freshness of values measured after the cloud came back: outage values
            # younger than `live_window` also go out as `post`, but they are backlog.
            fresh = [r.received_at - r.time for r in emulator.records.points
                     if r.channel == "post" and r.time >= started * 1000]  # fmt: skip
            left = await _pending(site)
            peak[0] = max(peak[0], _file_bytes(site))
            site.cloud.emulator.faults.limit_rate(None)
            figures.update(backlog2_rows=backlog2, capped_bytes_per_s=throughput,
                           capped_fresh_p99_ms=percentile(fresh, 99),
                           capped_left_rows=left, reconnect2_s=reconnect2_s)  # fmt: skip
        finally:
            status2 = await stop_gatewayd(proc)
        counts = await drain(site, ledger, site.workdir / "spool.db", timeout=600)
        outcome = tally(counts, ledger.keys(site.cloud))
    figures.update(outcome=outcome.__dict__, exits=[status, status2], peak_file_bytes=peak[0])
    report.details["B7"] = figures
    rate = backlog / drain_s if drain_s > 0 else math.nan  # NaN (timed out) stays NaN
    hour = 3600 * RATE / rate
    report.add("B7", f"drain of a {outage:g} s outage (loopback)", drain_s, "s",
               note=f"{backlog} rows, net {rate:.0f} points/s on top of 10k live; after a "
                    f"{figures['reconnect_s']:.1f} s reconnect; CPU daemon "
                    f"{figures['drain_daemon_cpu']:.0f} %, emulator "
                    f"{figures['drain_cloud_cpu']:.0f} % of a core")  # fmt: skip
    report.add("B7", "drain of 1 h @ 10k points/s (extrapolated)", hour, "s",
               target="≤ 60 s", ok=hour <= 60,
               note=f"extrapolated from the {outage:g} s outage at the measured rate")  # fmt: skip
    ratio = figures["capped_bytes_per_s"] / CAP
    report.add("B7", "capped drain throughput ÷ 1 MB/s cap", ratio, "", target="≥ 0.9",
               ok=ratio >= 0.9,
               note=f"{figures['capped_bytes_per_s'] / 1000:.0f} kB/s incl. live over the "
                    f"{window:.1f} s drain of {backlog2} rows")  # fmt: skip
    fresh_p99 = figures["capped_fresh_p99_ms"] / 1000
    report.add("B7", "live freshness p99 during capped drain", fresh_p99, "s", target="≤ 5 s",
               ok=fresh_p99 <= 5)  # fmt: skip
    report.add("B7", "lost", outcome.lost, target="0", ok=outcome.lost == 0,
               note=f"{outcome.offered} committed, {outcome.delivered} accepted, "
                    f"{outcome.duplicated} duplicates")  # fmt: skip
    report.add("B7", "spool file peak", peak[0] / 2**20, "MiB", target="≤ 256 MiB (cap)",
               ok=peak[0] <= 256 * 2**20)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true")
    args = parser.parse_args()
    report = Report("bench-b7", "full" if args.full else "quick")
    asyncio.run(bench(report, quick=not args.full))
    report.write(None)


if __name__ == "__main__":
    main()
