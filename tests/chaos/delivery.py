"""Delivery under chaos: emulator restarts, kill -9 of `gatewayd run`, spool cap, disk full.

Accounting (the same for every scenario), from the two ends that cannot lie:

The spool (schema v3) keeps one `frames` row per device and read instant (one response's
points), so the counts are in frames:

- *committed* = frames the daemon committed to its spool: the `frames` AUTOINCREMENT
  sequence (ids are never reused, so `sqlite_sequence` counts every frame ever committed);
- *delivered* = distinct (device, time) among the points the EnOS emulator accepted,
  across all its restarts; *duplicated* = accepted points beyond the first of each
  (device, point, time), in points;
- *dropped* = what the spool dropped on purpose (byte cap, full disk): its `meta` counter
  is in points, so the frames it held are estimated with the delivered frames' mean size
  (the only approximate figure, and only where something was dropped);
- *lost* = committed − dropped − delivered frames, once the spool has drained (the daemon
  is restarted with a one-hour poll interval, so nothing new is produced while it drains).

For kill -9 the spool is also read after every kill: each row committed at that moment
must be accepted in the end (`lost_by_key`, in frames), which catches a committed frame
deleted without delivery even if the counts happened to balance.
"""

# ruff: noqa: ASYNC221

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gatewayd.app import STATUS_FILE
from gatewayd.enos.connect_history import FILE_NAME as CONNECTS_FILE
from gatewayd.spool.rows import Kind
from gatewayd.spool.stats import META_APPENDED, META_DROPPED
from tests.bench.b1_fleet import Cloud, Site, fleet_site
from tests.bench.common import Report, rss_kib
from tests.support import async_wait_until

Key = tuple[str, str, int]


# ---------------------------------------------------------------------------- accounting


def _connect(spool: Path) -> sqlite3.Connection:
    return sqlite3.connect(f"file:{spool}?mode=ro", uri=True, timeout=10)


def _has_frames(spool: Path) -> bool:
    """The spool file exists and has its tables (a kill during start-up can leave an
    empty file behind: it holds no rows). A file with tables but no `frames` is a schema
    this accounting cannot read: that raises rather than count nothing."""
    if not spool.exists():
        return False
    with contextlib.closing(_connect(spool)) as conn:
        tables = {name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table'")}  # fmt: skip
    if tables and "frames" not in tables:
        raise RuntimeError(f"{spool}: no `frames` table (tables {sorted(tables)}): the chaos "
                           "accounting reads spool schema v3")  # fmt: skip
    return "frames" in tables


def spool_keys(spool: Path) -> set[Key]:
    """(device, point, time) of every point in the spool's frames right now."""
    if not _has_frames(spool):
        return set()
    keys: set[Key] = set()
    with contextlib.closing(_connect(spool)) as conn:
        for device, ts_ms, body in conn.execute("SELECT device, ts_ms, body FROM frames"):
            keys.update((device, name, ts_ms) for name in json.loads(body))
    return keys


def spool_counts(spool: Path) -> dict[str, int]:
    """committed frames (sequence), pending frames and points, dropped points (meta),
    dead letters (points)."""
    if not _has_frames(spool):
        return {"committed": 0, "pending": 0, "pending_points": 0, "dropped_points": 0,
                "dead_letters": 0, "appended_points": 0}  # fmt: skip
    with contextlib.closing(_connect(spool)) as conn:
        seq = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'frames'").fetchone()
        dropped = conn.execute("SELECT value FROM meta WHERE key = ?",
                               (META_DROPPED[Kind.SAMPLES],)).fetchone()  # fmt: skip
        appended = conn.execute("SELECT value FROM meta WHERE key = ?",
                                (META_APPENDED,)).fetchone()  # fmt: skip
        pending, points = conn.execute("SELECT COUNT(*), TOTAL(points) FROM frames").fetchone()
        return {
            "committed": int(seq[0]) if seq else 0,
            "pending": pending,
            "pending_points": int(points),
            "dropped_points": int(dropped[0]) if dropped else 0,
            "dead_letters": conn.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0],
            "appended_points": int(appended[0]) if appended else 0,
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
    report.add(name, "offered (committed frames)", outcome.offered)
    report.add(name, "delivered (distinct frames)", outcome.delivered,
               note=f"{outcome.extra.get('delivered_points', 0)} points")  # fmt: skip
    resent = "points re-sent after a lost ack/kill (EnOS keys by device, point, time)"
    report.add(name, "duplicated", outcome.duplicated, note=resent)
    if outcome.dropped:
        points = outcome.extra["dropped_points"]
        report.add(name, "dropped frames (estimated)", outcome.dropped,
                   note=f"{points} points counted by the spool")  # fmt: skip
        # The estimate is only as good as the mean frame size (frames of one device differ:
        # one per response), so it is informative here; a loss in the middle of the data
        # leaves a hole, which `dropped are the oldest` checks (coarsely: an overrunning
        # bus skips ticks, so only gaps over 5 poll steps + 1 s count), with the verdict.
        # Exact: the spool would have to count dropped frames, not only their points.
        note = f"{note}; ≈: dropped frames estimated from points".lstrip("; ")
        report.add(name, "lost (frames)", outcome.lost, note=note)
        lost_points = outcome.extra["lost_points"]
        report.add(name, "lost (points, exact)", lost_points, target="0", ok=lost_points == 0,
                   note=f"of {outcome.extra['appended_points']} committed: accepted + dropped "
                   "+ dead-lettered + pending")  # fmt: skip
        oldest = outcome.extra["oldest_first"]
        report.add(name, "dropped are the oldest", str(oldest), target="True", ok=oldest,
                   note="no gap over 5 poll steps + 1 s after the first accepted value of "
                   "any series")  # fmt: skip
        return
    report.add(name, "lost (frames)", outcome.lost, target="0", ok=outcome.lost == 0,
               note=note)  # fmt: skip


# ---------------------------------------------------------------------------- processes


def forget_connects(state_dir: Path) -> None:
    """Clear the daemon's persisted CONNECT history: chaos restarts it far more often than
    EnOS' 4 CONNECTs per 2 minutes allow, on purpose (the emulator's throttle is off), and
    the daemon would otherwise wait out the window as it must in the field."""
    (state_dir / CONNECTS_FILE).unlink(missing_ok=True)


def start_gatewayd(config: Path, log: Path) -> subprocess.Popen[bytes]:
    """`gatewayd run CONFIG` as a subprocess, as on a box (tests/bench/box.py), output to `log`."""
    with log.open("ab") as out:
        return subprocess.Popen([sys.executable, "-m", "tests.bench.box", "run", str(config)],
                                stdin=subprocess.DEVNULL, stdout=out, stderr=out)  # fmt: skip


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
DRAIN_STALL_S = 20.0


async def drain(site: Site, ledger: Ledger, spool: Path, timeout: float = 120) -> dict[str, int]:
    """Run the daemon on the drain config until the spool is empty (or the drain stalls);
    return its counts, with `drain_exit` and `drain_stalled`."""
    # The daemon writes its status file once it runs (signal handlers installed): an empty
    # spool must not get its SIGTERM before that, or the exit status is the signal's.
    status_file = spool.parent / STATUS_FILE
    status_file.unlink(missing_ok=True)
    forget_connects(spool.parent)
    proc = start_gatewayd(drain_config(site, spool), site.workdir / "gatewayd.log")
    progress = {"pending": -1, "since": time.monotonic()}

    def drained_or_stalled() -> bool:
        if not status_file.exists() and proc.poll() is None:
            return False
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
    """The outcome in frames from spool counts and accepted point keys (see the module
    docstring; dead letters are single points of frames otherwise delivered)."""
    distinct = set(keys)
    frames = {(device, ts) for device, _, ts in distinct}
    oldest_first = _oldest_dropped(keys)
    mean_points = len(distinct) / len(frames) if frames else 0.0
    dropped_points = counts["dropped_points"]
    dropped = round(dropped_points / mean_points) if dropped_points and mean_points else 0
    lost = counts["committed"] - dropped - len(frames)
    # Exact, in points: every point the spool ever committed was accepted, dropped by the
    # cap (counted), dead-lettered, or is still pending; the rest is lost.
    lost_points = (counts.get("appended_points", 0) - len(distinct) - dropped_points
                   - counts.get("pending_points", 0) - counts.get("dead_letters", 0))  # fmt: skip
    return Outcome(
        offered=counts["committed"],
        delivered=len(frames),
        duplicated=len(keys) - len(distinct),
        lost=max(0, lost),  # frames still pending are part of it (committed, not accepted)
        dropped=dropped,
        extra={
            "spool": counts,
            "excess_delivered": max(0, -lost),
            "delivered_points": len(distinct),
            "dropped_points": dropped_points,
            "oldest_first": oldest_first,
            "lost_points": max(0, lost_points),
            "appended_points": counts.get("appended_points", 0),
        },
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
            forget_connects(spool.parent)
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
        missing = {(k[0], k[2]) for k in committed_at_kill
                   if (by_name[k[0]], k[1], k[2]) not in accepted}  # fmt: skip
        outcome = tally(counts, keys)
        outcome.extra.update(lost_by_key=len(missing), early_exits=exits,
                             sample_missing=sorted(missing)[:5])  # fmt: skip
        outcome.lost = max(outcome.lost, len(missing))
    add_outcome(report, "kill-9", outcome, note=f"{kills} kills; frames in spool at kill "
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
        outcome.extra.update(max_file_bytes=biggest, alive=alive)
    add_outcome(report, "spool-cap", outcome)
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
    """The spool on a small tmpfs (quick 2 MiB, full 4 MiB) during an outage: the disk
    fills, the daemon survives.

    Full mode keeps the cloud away for 60 s. Quick mode ends the outage once the disk is
    full (at most 30 s): what is checked is the daemon on a full disk (it stays on it while
    it reconnects and drains; liveness is checked again before it is stopped), and a short
    outage may let it reconnect within its quick retries instead of its 40 s spacing.
    """
    async with chaos_site(interval="200ms") as site:
        mount = site.workdir / "small"
        mount.mkdir()
        size = "size=2m" if quick else "size=4m"  # frames fill 2 MiB in about 8 s
        subprocess.run(["mount", "-t", "tmpfs", "-o", size, "tmpfs", str(mount)], check=True)
        try:
            spool = mount / "spool.db"
            data = yaml.safe_load(site.config_path.read_text())
            data["spool"]["path"] = str(spool)
            site.config_path.write_text(yaml.safe_dump(data, sort_keys=False))
            await site.cloud.stop()
            ledger = Ledger()
            log_path = site.workdir / "gatewayd.log"
            log_start = log_path.stat().st_size if log_path.exists() else 0
            proc = start_gatewayd(site.config_path, log_path)
            alive_checks = []
            full_for = 0
            for _ in range(30 if quick else 60):
                await asyncio.sleep(1)  # sampling liveness once a second
                alive_checks.append(proc.poll() is None)
                usage = os.statvfs(mount)
                # Full: hardly a byte free, or the spool said so (once the disk is full it
                # releases its reserve file and keeps that space free for checkpoints).
                said_full = b"disk full" in log_path.read_bytes()[log_start:]
                low = usage.f_bavail * usage.f_frsize < 256 * 1024
                full_for = full_for + 1 if low or said_full else 0
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
            left_accepted = len({(k[0], k[2]) for k in spool_keys(spool)
                                 if (by_name[k[0]], k[1], k[2]) in accepted})  # fmt: skip
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
    report.add("disk-full", "frames left after the drain run", pending, target="0",
               ok=pending == 0, note=f"no progress for {DRAIN_STALL_S:.0f} s; {left_accepted} "
               "of them accepted by the cloud, not deleted (disk still full): re-sent at "
               "every restart" if pending else "")  # fmt: skip
