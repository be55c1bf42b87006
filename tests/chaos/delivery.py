"""Delivery under chaos: emulator restarts, kill -9 of `gatewayd run`, spool cap, disk full.

Accounting (the same for every scenario), from the two ends that cannot lie:

- *committed* = rows the daemon committed to its spool: the `samples` AUTOINCREMENT
  sequence (ids are never reused, so `sqlite_sequence` counts every row ever committed);
- *dropped* = rows the spool dropped on purpose (byte cap, full disk): its `meta` counters;
- *delivered* = distinct (device, point, time) the EnOS emulator accepted, across all its
  restarts; *duplicated* = accepted records beyond the first of each key;
- *lost* = committed − dropped − delivered, once the spool has drained (the daemon is
  restarted with a one-hour poll interval, so nothing new is produced while it drains).

For kill -9 the spool is also read after every kill: each row committed at that moment
must be accepted in the end (`lost_by_key`), which catches a committed row deleted without
delivery even if the counts happened to balance.
"""

# ruff: noqa: ASYNC221

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import signal
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gatewayd.spool.rows import Kind
from gatewayd.spool.stats import META_DROPPED
from tests.bench.b1_fleet import Cloud, Site, fleet_site
from tests.bench.common import Report, gatewayd_exe, rss_kib
from tests.support import async_wait_until

Key = tuple[str, str, int]


# ---------------------------------------------------------------------------- accounting


def _connect(spool: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{spool}?mode=ro", uri=True, timeout=10)


def _has_schema(spool: Path) -> bool:
    """The spool file exists and has its tables (a kill during start-up can leave an
    empty file behind: it holds no rows)."""
    if not spool.exists():
        return False
    with contextlib.closing(_connect(spool)) as conn:
        found = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'samples'").fetchone()
    return found is not None


def spool_keys(spool: Path) -> set[Key]:
    """(device, point, time) of every sample row in the spool right now."""
    if not _has_schema(spool):
        return set()
    with contextlib.closing(_connect(spool)) as conn:
        return set(conn.execute(
            "SELECT s.device, s.measurepoint, r.ts_ms FROM samples r JOIN series s "
            "ON s.id = r.series"))  # fmt: skip


def spool_counts(spool: Path) -> dict[str, int]:
    """committed (sequence), pending rows, dropped samples, dead letters."""
    if not _has_schema(spool):
        return {"committed": 0, "pending": 0, "dropped": 0, "dead_letters": 0}
    with contextlib.closing(_connect(spool)) as conn:
        seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'samples'").fetchone()
        dropped = conn.execute("SELECT value FROM meta WHERE key = ?",
                               (META_DROPPED[Kind.SAMPLES],)).fetchone()  # fmt: skip
        return {
            "committed": int(seq[0]) if seq else 0,
            "pending": conn.execute("SELECT COUNT(*) FROM samples").fetchone()[0],
            "dropped": int(dropped[0]) if dropped else 0,
            "dead_letters": conn.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0],
        }


@dataclass
class Ledger:
    """What the cloud accepted, across emulator restarts."""

    archived: list[tuple[str, str, int]] = field(default_factory=list)
    records: int = 0

    def archive(self, cloud: Cloud) -> None:
        points = cloud.emulator.records.points
        self.archived.extend((r.device_key, r.point, r.time) for r in points)
        points.clear()

    def keys(self, cloud: Cloud) -> list[Key]:
        live = [(r.device_key, r.point, r.time) for r in cloud.emulator.records.points]
        return [*self.archived, *live]


@dataclass
class Outcome:
    """Counts of one scenario."""

    offered: int
    delivered: int
    duplicated: int
    lost: int
    dropped: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


def add_outcome(report: Report, name: str, outcome: Outcome, note: str = "") -> None:
    """The four counts (+ dropped) as report rows; lost must be 0."""
    report.details.setdefault("chaos", {})[name] = outcome.__dict__
    report.add(name, "offered (committed)", outcome.offered)
    report.add(name, "delivered (distinct)", outcome.delivered)
    resent = "re-sends after a lost ack/kill (EnOS keys by device, point, time)"
    report.add(name, "duplicated", outcome.duplicated, note=resent)
    if outcome.dropped:
        report.add(name, "dropped (counted by the spool)", outcome.dropped)
    report.add(name, "lost", outcome.lost, target="0", ok=outcome.lost == 0, note=note)


# ---------------------------------------------------------------------------- processes


def start_gatewayd(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """`gatewayd run CONFIG` as a subprocess, output appended to `log`."""
    with log.open("ab") as out:
        return subprocess.Popen([gatewayd_exe(), "run", str(config)], stdin=subprocess.DEVNULL,
                                stdout=out, stderr=out)  # fmt: skip


async def stop_gatewayd(proc: subprocess.Popen[bytes], timeout: float = 60) -> int:
    """SIGTERM and wait; returns the exit status."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    return await asyncio.to_thread(proc.wait, timeout)


def drain_config(site: Site, spool: Path | None = None) -> Path:
    """The site's config with a one-hour poll interval: the daemon only drains its spool."""
    data = yaml.safe_load(site.config_path.read_text())
    for device in data["devices"]:
        device["poll_interval"] = "1h"
    if spool is not None:
        data["spool"]["path"] = str(spool)
    path = site.workdir / "drain.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


#: A drain whose pending count has not moved for this long has stalled: stop waiting (the
#: rows left count as lost) instead of spending the whole timeout on it.
DRAIN_STALL_S = 30.0


async def drain(site: Site, ledger: Ledger, spool: Path, timeout: float = 120) -> dict[str, int]:
    """Run the daemon on the drain config until the spool is empty (or the drain stalls);
    return its counts, with `drain_exit` and `drain_stalled`."""
    proc = start_gatewayd(drain_config(site, spool), site.workdir / "gatewayd.log")
    progress = {"pending": -1, "since": time.monotonic()}

    def drained_or_stalled() -> bool:
        pending = spool_counts(spool)["pending"]
        if pending != progress["pending"]:
            progress.update(pending=pending, since=time.monotonic())
        if pending == 0:
            return time.time() % 3600 < 3590  # a top-of-hour tick would poll once more
        return time.monotonic() - progress["since"] >= DRAIN_STALL_S

    try:
        with contextlib.suppress(AssertionError):
            await async_wait_until(drained_or_stalled, timeout, "the spool drained")
    finally:
        status = await stop_gatewayd(proc)
    counts = spool_counts(spool)
    counts["drain_exit"] = status
    counts["drain_stalled"] = int(counts["pending"] > 0)
    return counts


def tally(counts: dict[str, int], keys: list[Key]) -> Outcome:
    """The outcome from spool counts and accepted keys."""
    distinct = set(keys)
    lost = counts["committed"] - counts["dropped"] - counts["dead_letters"] - len(distinct)
    return Outcome(
        offered=counts["committed"],
        delivered=len(distinct),
        duplicated=len(keys) - len(distinct),
        lost=max(0, lost),  # rows still pending are part of it (committed, not accepted)
        dropped=counts["dropped"],
        extra={"spool": counts, "excess_delivered": max(0, -lost)},
    )


@contextlib.asynccontextmanager
async def chaos_site(devices: int = 50, **site_args: Any) -> AsyncIterator[Site]:
    """A B1-like site, EnOS' connect throttle off (the daemon reconnects on purpose here)."""
    uplink = {"reply_timeout": "5s", **site_args.pop("uplink", {})}
    async with fleet_site(devices, uplink=uplink, **site_args) as site:
        site.cloud.emulator.throttle.enabled = False
        yield site


async def restart_cloud(site: Site) -> None:
    """A fresh emulator on the same port, throttle off."""
    site.cloud = Cloud(site.config)
    site.cloud.emulator.throttle.enabled = False
    await site.cloud.start()


# ---------------------------------------------------------------------------- scenarios


async def emulator_restarts(report: Report, quick: bool, restarts: int | None = None) -> None:
    """The cloud killed and restarted `restarts` times (quick 10, full 20) at random
    moments under B1 load."""
    restarts = restarts or (10 if quick else 20)
    rng = random.Random(20)
    async with chaos_site() as site:
        ledger = Ledger()
        spool = site.workdir / "spool.db"
        proc = start_gatewayd(site.config_path, site.workdir / "gatewayd.log")
        crashed = 0
        try:
            for _ in range(restarts):
                await asyncio.sleep(rng.uniform(0.5, 4.0))  # chaos timing, not synchronisation
                ledger.archive(site.cloud)
                await site.cloud.stop()
                ledger.archive(site.cloud)
                await asyncio.sleep(rng.uniform(0.1, 3.0))
                await restart_cloud(site)
                crashed += proc.poll() is not None
            await asyncio.sleep(5)
        finally:
            status = await stop_gatewayd(proc)
        counts = await drain(site, ledger, spool)
        outcome = tally(counts, ledger.keys(site.cloud))
        outcome.extra.update(exit=status, crashed=crashed)
    add_outcome(report, "emulator-restarts", outcome,
                note=f"{restarts} restarts, daemon exit {status}")  # fmt: skip


async def kill9(report: Report, quick: bool, kills: int | None = None) -> None:
    """`kill -9` of `gatewayd run` at `kills` random moments (quick 25, full 50),
    restarted each time."""
    kills = kills or (25 if quick else 50)
    rng = random.Random(9)
    async with chaos_site() as site:
        ledger = Ledger()
        spool = site.workdir / "spool.db"
        committed_at_kill: set[Key] = set()
        exits: list[int] = []
        for _ in range(kills):
            proc = start_gatewayd(site.config_path, site.workdir / "gatewayd.log")
            # Random moments: during start-up, login, first cycles, steady delivery.
            await asyncio.sleep(rng.uniform(0.2, 4.0 if quick else 8.0))
            if proc.poll() is not None:
                exits.append(proc.returncode)
            proc.kill()
            await asyncio.to_thread(proc.wait)
            committed_at_kill |= spool_keys(spool)
        counts = await drain(site, ledger, spool)
        keys = ledger.keys(site.cloud)
        by_name = {d.name: d.device_key for d in site.config.devices}
        accepted = set(keys)
        missing = {k for k in committed_at_kill if (by_name[k[0]], k[1], k[2]) not in accepted}
        outcome = tally(counts, keys)
        outcome.extra.update(lost_by_key=len(missing), early_exits=exits,
                             sample_missing=sorted(missing)[:5])  # fmt: skip
        outcome.lost = max(outcome.lost, len(missing))
    add_outcome(report, "kill-9", outcome, note=f"{kills} kills; rows in spool at kill "
                f"time not delivered: {len(missing)}")  # fmt: skip


async def spool_cap(report: Report, quick: bool) -> None:
    """An outage at 25 k points/s against a 1 MiB cap (quick 10 s, full 60 s; the cap
    fills within about a second): oldest dropped, counted exactly."""
    async with chaos_site(spool={"max_bytes": "1MiB"}, interval="200ms") as site:
        await site.cloud.stop()  # the outage: no cloud at all
        ledger = Ledger()
        spool = site.workdir / "spool.db"
        proc = start_gatewayd(site.config_path, site.workdir / "gatewayd.log")
        biggest = 0
        for _ in range(10 if quick else 60):
            await asyncio.sleep(1)  # sampling the file size once a second
            biggest = max(biggest, _spool_bytes(spool))
        alive = proc.poll() is None
        await stop_gatewayd(proc)
        await restart_cloud(site)
        counts = await drain(site, ledger, spool)
        keys = ledger.keys(site.cloud)
        outcome = tally(counts, keys)
        oldest = _oldest_dropped(keys)
        outcome.extra.update(max_file_bytes=biggest, alive=alive, oldest_first=oldest)
    add_outcome(report, "spool-cap", outcome)
    report.add("spool-cap", "dropped are the oldest", str(oldest), target="True", ok=oldest)
    report.add("spool-cap", "spool file peak (db+wal)", biggest / 2**20, "MiB",
               note="cap 1 MiB of data pages")  # fmt: skip


def _spool_bytes(spool: Path) -> int:
    return sum(p.stat().st_size for p in spool.parent.glob(spool.name + "*") if p.exists())


def _oldest_dropped(keys: list[Key]) -> bool:
    """Per series, accepted times have no hole: whatever is missing is before them."""
    by_series: dict[tuple[str, str], list[int]] = {}
    for device, point, ts in set(keys):
        by_series.setdefault((device, point), []).append(ts)
    for times in by_series.values():
        times.sort()
        steps = [b - a for a, b in itertools.pairwise(times)]
        if steps and max(steps) > 5 * min(steps) + 1000:
            return False
    return True


async def disk_full(report: Report, quick: bool) -> None:
    """The spool on a 4 MiB tmpfs during an outage: the disk fills, the daemon survives.

    Full mode keeps the cloud away for 60 s. Quick mode ends the outage once the disk is
    full (at most 30 s): what is checked is the daemon on a full disk (it stays on it while
    it reconnects and drains; liveness is checked again before it is stopped), and a short
    outage may let it reconnect within its quick retries instead of its 40 s spacing.
    """
    async with chaos_site(interval="200ms") as site:
        mount = site.workdir / "small"
        mount.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
        try:
            spool = mount / "spool.db"
            data = yaml.safe_load(site.config_path.read_text())
            data["spool"]["path"] = str(spool)
            site.config_path.write_text(yaml.safe_dump(data, sort_keys=False))
            await site.cloud.stop()
            ledger = Ledger()
            proc = start_gatewayd(site.config_path, site.workdir / "gatewayd.log")
            alive_checks = []
            full_for = 0
            for _ in range(30 if quick else 60):
                await asyncio.sleep(1)  # sampling liveness once a second
                alive_checks.append(proc.poll() is None)
                usage = os.statvfs(mount)
                full_for = full_for + 1 if usage.f_bavail * usage.f_frsize < 256 * 1024 else 0
                if quick and full_for:
                    break
            rss = rss_kib(proc.pid)
            full = full_for > 0
            await restart_cloud(site)
            # Delivery resumes on the full disk once the reconnect backoff allows (≤ ~40 s).
            with contextlib.suppress(AssertionError):
                await async_wait_until(lambda: site.cloud.emulator.records.points, 90,
                                       "delivery after the outage")  # fmt: skip
            await asyncio.sleep(5 if quick else 10)  # let it drain some on the full disk
            alive_checks.append(proc.poll() is None)
            status = await stop_gatewayd(proc)
            counts = await drain(site, ledger, spool)
            keys = ledger.keys(site.cloud)
            outcome = tally(counts, keys)
            by_name = {d.name: d.device_key for d in site.config.devices}
            accepted = set(keys)
            left_accepted = sum(1 for k in spool_keys(spool)
                                if (by_name[k[0]], k[1], k[2]) in accepted)  # fmt: skip
            outcome.extra.update(alive=all(alive_checks), exit=status, disk_filled=full,
                                 rss_kib=rss, left_accepted=left_accepted)  # fmt: skip
        finally:
            subprocess.run(["umount", "-l", str(mount)], check=False)
    add_outcome(report, "disk-full", outcome)
    report.add("disk-full", "daemon alive throughout", str(all(alive_checks)), target="True",
               ok=all(alive_checks), note=f"disk filled: {full}, exit {status}")  # fmt: skip
    drain_exit = outcome.extra["spool"]["drain_exit"]
    report.add("disk-full", "restart on the full disk (drain run) exit", drain_exit, target="0",
               ok=drain_exit == 0, note="Spool.open checkpoint on a full disk")  # fmt: skip
    pending = outcome.extra["spool"]["pending"]
    left_accepted = outcome.extra["left_accepted"]
    report.add("disk-full", "rows left after the drain run", pending, target="0",
               ok=pending == 0, note=f"no progress for {DRAIN_STALL_S:.0f} s; {left_accepted} "
               "of them accepted by the cloud, not deleted (disk still full): re-sent at "
               "every restart" if pending else "")  # fmt: skip
