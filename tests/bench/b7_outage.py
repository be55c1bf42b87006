"""B7 outage: an hour of backlog at 10 k points/s drained on loopback and behind a cap.

    python -m tests.bench b7_outage [--full]

100 devices x 100 float32 points @ 1 s (10 k points/s live) through `gatewayd run`,
with the EnOS emulator (in this process) in counting mode (`PointTally`: per-device
counts, time order and live freshness, no object per point, no per-point model check).

The outage is compressed: instead of polling for an hour with the cloud away, the hour's
backlog is written straight into the daemon's spool before it starts, as the frames the
daemon itself would have written (one per device and second, 100 points each, times in
the past hour). Full mode writes the real hour (36 M points; spool cap raised to 1 GiB,
since an hour of frames is ~0.5 GB); quick mode a 6-minute backlog (3.6 M points) and
extrapolates the hour from the measured rate, and says so.

1. Loopback drain: the emulator without limits, backlog pacing raised (10 M points/s,
   1 GiB/s) so the pipeline itself is measured, live polling running meanwhile. Drain
   time = first to last accepted backlog record (the emulator's clock); zero loss =
   every backlog point accepted exactly once (resume count = written count, and no
   record out of per-device time order).
2. Capped: a new backlog of the same size, the emulator capped at 1 MB/s upstream and
   the daemon's default pacing. Over a fixed window (quick 20 s, full 60 s) while the
   backlog drains: upstream bytes/s ÷ the cap, and live freshness p99 (accepted −
   sample time of `post` records). Afterwards: backlog points accepted + still spooled
   = written (nothing lost).
The spool file's peak size is sampled against its cap.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sqlite3
import time
from pathlib import Path
from typing import Any

import yaml

from gatewayd.sim.emulator.records import PointTally
from gatewayd.spool.frames import encode_body
from gatewayd.spool.store import SpoolStore
from tests.bench.b1_fleet import Site
from tests.bench.common import ProcessMeter, Report, percentile
from tests.chaos.delivery import chaos_site, start_gatewayd, stop_gatewayd
from tests.support import async_wait_until

DEVICES, POINTS = 100, 100
RATE = DEVICES * POINTS
HOUR_POINTS = 3600 * RATE
CAP = 1_000_000  # bytes/s
#: Backlog times end this far in the past, beyond the 30 s live window: all of it is
#: backlog (`resume`) from the first take.
BACKLOG_END_AGO_MS = 60_000
VARIANTS = 16  # distinct value sets per device, cycled through the backlog


def _spool_path(site: Site) -> Path:
    return site.workdir / "spool.db"


def _file_bytes(site: Site) -> int:
    return sum(p.stat().st_size for p in site.workdir.glob("spool.db*"))


def write_backlog(site: Site, seconds: int, end_ms: int) -> int:
    """Append `seconds` of 1 s frames for every device, ending at `end_ms`, straight into
    the spool (the daemon is stopped); returns the points written."""
    store = SpoolStore.from_config(site.config.spool, check=False)  # schema, reserve
    store.close()
    devices = [d.name for d in site.config.devices]
    points = [p.measurepoint for p in site.config.models["bench"].points]
    # float32 values as the poller decodes them: shortest repr of a float32.
    bodies = {
        device: [
            encode_body({p: round((d * 7 + v * 3 + i) * 1.25, 2) for i, p in enumerate(points)})
            for v in range(VARIANTS)
        ]
        for d, device in enumerate(devices)
    }
    start_ms = end_ms - seconds * 1000
    conn = sqlite3.connect(site.config.spool.path, isolation_level=None)
    try:
        conn.execute("PRAGMA synchronous = OFF")
        for second in range(0, seconds, 60):
            rows = [
                (device, start_ms + s * 1000, POINTS, bodies[device][s % VARIANTS])
                for s in range(second, min(second + 60, seconds))
                for device in devices
            ]
            conn.execute("BEGIN")
            conn.executemany(
                "INSERT INTO frames (device, ts_ms, points, body) VALUES (?, ?, ?, ?)", rows
            )
            conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
    return seconds * len(devices) * POINTS


def spooled_before(site: Site, end_ms: int) -> int:
    """Points still spooled with a sample time before `end_ms` (read-only)."""
    with contextlib.closing(
        sqlite3.connect(f"file:{site.config.spool.path}?mode=ro", uri=True, timeout=10)
    ) as conn:
        found = conn.execute(
            "SELECT TOTAL(points) FROM frames WHERE ts_ms < ?", (end_ms,)
        ).fetchone()[0]
    return int(found)


def _config(site: Site, name: str, uplink: dict[str, Any], max_bytes: str) -> Path:
    data = yaml.safe_load(site.config_path.read_text())
    data["uplink"] = {"reply_timeout": "10s", **uplink}
    data["spool"]["max_bytes"] = max_bytes
    path = site.workdir / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


async def _sample_peak(site: Site, peak: list[int], stop: asyncio.Event) -> None:
    while not stop.is_set():
        peak[0] = max(peak[0], _file_bytes(site))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(0.5):  # sampling the file twice a second
                await stop.wait()


async def loopback(site: Site, seconds: int, max_bytes: str, peak: list[int]) -> dict[str, Any]:
    """Phase 1: drain `seconds` of backlog with nothing but the pipeline limiting it."""
    end_ms = int(time.time() * 1000) - BACKLOG_END_AGO_MS
    written = await asyncio.to_thread(write_backlog, site, seconds, end_ms)
    tally = site.cloud.emulator.records.tally = PointTally()
    config = _config(
        site,
        "loopback.yaml",
        {"backlog_points_per_second": 10_000_000, "backlog_bytes_per_second": "1GiB"},
        max_bytes,
    )
    spawned_ms = int(time.time() * 1000)
    proc = start_gatewayd(config, site.workdir / "gatewayd.log")
    stop = asyncio.Event()
    sampler = asyncio.create_task(_sample_peak(site, peak, stop))
    meter = ProcessMeter(proc.pid)
    own = time.process_time()
    try:
        meter.start()
        await async_wait_until(lambda: tally.total("resume") >= written, 900, "the backlog")
        cpu = meter.stop()
        cloud_cpu_s = time.process_time() - own
        # Some live data after the backlog, so the order check sees both channels.
        await async_wait_until(lambda: tally.total("post") > 0, 30, "live data")
    finally:
        status = await stop_gatewayd(proc)
        stop.set()
        await sampler
    drain_s = (tally.last_ms["resume"] - tally.first_ms["resume"]) / 1000
    return {
        "written": written,
        "resume_points": tally.total("resume"),
        "live_points": tally.total("post"),
        "out_of_order": dict(tally.out_of_order),
        "drain_s": drain_s,
        "points_per_s": written / drain_s,
        "start_to_first_s": (tally.first_ms["resume"] - spawned_ms) / 1000,
        "daemon_cpu_pct": cpu.cpu_percent,
        "cloud_cpu_pct": 100 * cloud_cpu_s / cpu.wall_s,
        "exit": status,
    }


async def capped(
    site: Site, seconds: int, window: float, max_bytes: str, peak: list[int]
) -> dict[str, Any]:
    """Phase 2: a backlog behind the 1 MB/s cap with default pacing and live traffic."""
    end_ms = int(time.time() * 1000) - BACKLOG_END_AGO_MS
    written = await asyncio.to_thread(write_backlog, site, seconds, end_ms)
    before = await asyncio.to_thread(spooled_before, site, end_ms)
    emulator = site.cloud.emulator
    tally = emulator.records.tally = PointTally()
    emulator.faults.limit_rate(CAP)
    config = _config(site, "capped.yaml", {}, max_bytes)
    proc = start_gatewayd(config, site.workdir / "gatewayd.log")
    stop = asyncio.Event()
    sampler = asyncio.create_task(_sample_peak(site, peak, stop))
    try:
        await async_wait_until(lambda: tally.total("resume") > 0, 60, "backlog flowing")
        bytes_before = emulator.stats.bytes_in
        started_ms = int(time.time() * 1000)
        await asyncio.sleep(window)  # the measured window itself: timing
        throughput = (emulator.stats.bytes_in - bytes_before) / window
        ended_ms = int(time.time() * 1000)
    finally:
        status = await stop_gatewayd(proc)
        stop.set()
        await sampler
        emulator.faults.limit_rate(None)
    ages = [age for at, age in tally.post_ages_ms if started_ms <= at <= ended_ms]
    left = await asyncio.to_thread(spooled_before, site, end_ms)
    delivered = tally.total("resume")
    return {
        "written": written,
        "spooled_before": before,
        "resume_points": delivered,
        "left_in_spool": left,
        "lost": before - delivered - left,
        "out_of_order": dict(tally.out_of_order),
        "bytes_per_s": throughput,
        "cap_fraction": throughput / CAP,
        "fresh_p99_ms": percentile(ages, 99) if ages else float("nan"),
        "fresh_records": len(ages),
        "window_s": window,
        "exit": status,
    }


async def bench(report: Report, quick: bool) -> None:
    """Run both phases; add rows."""
    seconds = 360 if quick else 3600
    window = 20.0 if quick else 60.0
    max_bytes = "256MiB" if quick else "1GiB"
    cap_bytes = (256 if quick else 1024) * 2**20
    peak = [0]
    async with chaos_site(DEVICES) as site:
        first = await loopback(site, seconds, max_bytes, peak)
        second = await capped(site, seconds, window, max_bytes, peak)
    report.details["B7"] = {"loopback": first, "capped": second, "peak_file_bytes": peak[0]}
    rate = first["points_per_s"]
    hour = HOUR_POINTS / rate
    scaled = "measured" if not quick else f"extrapolated from a {seconds // 60}-minute backlog"
    report.add("B7", f"drain of {first['written']:,} backlog points (loopback)",
               first["drain_s"], "s",
               note=f"{rate:,.0f} points/s ({rate / RATE:.0f}x the live rate) with 10k/s "
                    f"live on top; CPU daemon {first['daemon_cpu_pct']:.0f} %, emulator "
                    f"{first['cloud_cpu_pct']:.0f} % of a core")  # fmt: skip
    report.add("B7", "drain of 1 h @ 10k points/s", hour, "s", target="≤ 60 s", ok=hour <= 60,
               note=scaled)  # fmt: skip
    unordered = sum(first["out_of_order"].values()) + second["out_of_order"].get("resume", 0)
    lost = first["written"] - first["resume_points"] + second["lost"]
    report.add("B7", "backlog points lost or duplicated", abs(lost) + unordered, target="0",
               ok=lost == 0 and unordered == 0,
               note=f"loopback {first['resume_points']:,}/{first['written']:,} accepted; "
                    f"capped {second['resume_points']:,} accepted + {second['left_in_spool']:,}"
                    f" spooled of {second['spooled_before']:,}; {unordered} records out of "
                    "per-device order")  # fmt: skip
    report.add("B7", "capped throughput ÷ 1 MB/s cap", second["cap_fraction"], "",
               target="≥ 0.9", ok=second["cap_fraction"] >= 0.9,
               note=f"{second['bytes_per_s'] / 1000:.0f} kB/s incl. live over a "
                    f"{window:g} s window, default pacing")  # fmt: skip
    fresh = second["fresh_p99_ms"] / 1000
    report.add("B7", "live freshness p99 during capped drain", fresh, "s", target="≤ 5 s",
               ok=fresh <= 5, note=f"{second['fresh_records']} live records")  # fmt: skip
    report.add("B7", "spool file peak", peak[0] / 2**20, "MiB",
               target=f"≤ {max_bytes} (cap)", ok=peak[0] <= cap_bytes)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true")
    args = parser.parse_args()
    report = Report("bench-b7", "full" if args.full else "quick")
    asyncio.run(bench(report, quick=not args.full))
    report.write(None)


if __name__ == "__main__":
    main()
