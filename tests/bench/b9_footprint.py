"""B9 footprint: idle RSS, RSS growth over a soak at B1 load, start to first accepted publish.

    python -m tests.bench b9_footprint [--full]

- Idle RSS: `gatewayd run` on a copy of the example config (config/gatewayd.yaml; its
  devices are absent, so it idles with its buses retrying) against the emulator, after
  10 s. It idles while the start-up figure below is measured (an idle daemon wakes a few
  times a second: it does not compete with a start-up for a core).
- Start to first accepted publish: spawn `gatewayd run` (B1 site, cloud up) until the
  emulator accepts its first value; median of 3 starts, and the floor's for reference.
- Soak: the last of those `gatewayd run` keeps running at B1 load (50 x 100 float32 @ 1 s);
  RSS sampled after a warm-up; growth = least-squares slope, extrapolated to MiB/h. Full
  mode: 20 s warm-up, 10 minutes (the issue's figure), a sample every 5 s. Quick mode: 10 s
  warm-up, 45 s, a sample every 3 s; a short soak's slope is noisier (allocator warm-up
  counts as growth: 30 s soaks gave 9 to 52 MiB/h), so quick mode over-estimates rather
  than hides growth.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import yaml

from gatewayd.config.loader import load_config
from tests.bench.b1_fleet import Cloud, fleet_site, start_pipeline, wait_ready
from tests.bench.common import Report, median, rss_kib
from tests.chaos.delivery import start_gatewayd, stop_gatewayd
from tests.support import async_wait_until, free_port


def slope_per_hour(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MiB) samples, in MiB per hour."""
    n = len(points)
    if n < 2:
        return float("nan")
    mean_t = sum(t for t, _ in points) / n
    mean_v = sum(v for _, v in points) / n
    var = sum((t - mean_t) ** 2 for t, _ in points)
    cov = sum((t - mean_t) * (v - mean_v) for t, v in points)
    return 3600 * cov / var if var else float("nan")


async def idle_rss() -> float:
    """RSS (MiB) of `gatewayd run` on the example config after 10 s (idle: see above)."""
    with tempfile.TemporaryDirectory(prefix="gwidle-") as tmp:
        site = Path(tmp) / "config"
        shutil.copytree("config", site)
        path = site / "gatewayd.yaml"
        data = yaml.safe_load(path.read_text())
        data["gateway"]["broker"]["port"] = free_port()
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        cloud = Cloud(load_config(path))
        await cloud.start()
        proc = start_gatewayd(path, Path(tmp) / "gatewayd.log")
        try:
            await asyncio.sleep(10)  # idling is what is measured
            return rss_kib(proc.pid) / 1024
        finally:
            await stop_gatewayd(proc)
            await cloud.stop()


async def bench(report: Report, quick: bool) -> None:
    """Idle RSS, soak growth, start-up time."""
    idle_task = asyncio.create_task(idle_rss())
    soak, warmup, every = (45.0, 10.0, 3.0) if quick else (600.0, 20.0, 5.0)
    starts: list[float] = []
    floor_starts: list[float] = []
    async with fleet_site(50) as site:
        emulator = site.cloud.emulator
        proc: subprocess.Popen[bytes] | None = None
        try:
            for attempt in range(3):
                for kind, into in (("floor", floor_starts), ("gatewayd", starts)):
                    emulator.records.clear()
                    stats = site.workdir / f"start-{kind}.json"
                    spawned = time.time()
                    if kind == "floor":
                        proc = start_pipeline(kind, site.config_path, stats)
                        await wait_ready(proc, stats, 30)
                    else:
                        proc = start_gatewayd(site.config_path, site.workdir / "gatewayd.log")
                    await async_wait_until(lambda: emulator.records.points, 30, "a first value")
                    into.append(emulator.records.points[0].received_at / 1000 - spawned)
                    if kind == "floor" or attempt < 2:
                        await stop_gatewayd(proc)  # the last gatewayd goes on as the soak
            idle = await idle_task
            assert proc is not None
            samples: list[tuple[float, float]] = []
            await asyncio.sleep(warmup)  # the soak's warm-up: timing
            started = time.monotonic()
            while time.monotonic() - started < soak:
                samples.append((time.monotonic() - started, rss_kib(proc.pid) / 1024))
                emulator.records.clear()  # the cloud's memory is not the daemon's
                await asyncio.sleep(every)  # RSS sampling period
        finally:
            if proc is not None:
                await stop_gatewayd(proc)
            if not idle_task.done():
                idle_task.cancel()
    report.add("B9", "idle RSS (example config)", idle, "MiB",
               note="devices absent, buses retrying")  # fmt: skip
    growth = slope_per_hour(samples)
    report.details["B9"] = {"idle_rss_mib": idle, "soak_s": soak, "rss_samples": samples,
                            "starts_s": starts, "floor_starts_s": floor_starts}  # fmt: skip
    report.add("B9", f"RSS growth over a {soak:g} s soak (extrapolated)", growth, "MiB/h",
               target="≤ 1 MiB/h", ok=growth <= 1,
               note=f"RSS {samples[0][1]:.1f} → {samples[-1][1]:.1f} MiB; "
                    f"{'short quick-mode soak, ' if quick else ''}least-squares slope")  # fmt: skip
    start = median(starts)
    report.add("B9", "start → first accepted publish", start, "s", target="≤ 2 s",
               ok=start <= 2, note=f"floor {median(floor_starts):.2f} s; 3 starts")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true")
    args = parser.parse_args()
    report = Report("bench-b9", "full" if args.full else "quick")
    asyncio.run(bench(report, quick=not args.full))
    report.write(None)


if __name__ == "__main__":
    main()
