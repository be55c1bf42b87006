"""Spool ingest and drain throughput: `python -m tests.bench.spool [--rows N]`.

Poll cycles of 50 devices x 20 float points share one time per cycle, so the spool
stores one frame (row) per device and cycle, 20 points each. For each `synchronous`
level (FULL, NORMAL) and batch size (points per append), measures
- ingest: `SpoolStore.append(batch)` (one transaction per batch, as the pollers do);
- drain: `take_frames(batch / 20)` + `ack(ids)` until empty (the spool's share);
- drain+records: the same plus `bundle_frames` and the message join (the uplink's whole
  per-point path: what is left of it is concatenation);
and prints points/s (and frames/s) next to a baseline measured in the same run on the
same disk: a bare `executemany` INSERT of one row per POINT into a minimal table (and
SELECT + DELETE for the drain), same WAL mode and `synchronous`, same commit per batch.
The ratio says what storing frames gains over storing points, net of the spool's own
work (encoding, byte-cap checks, in-flight bookkeeping). Each figure is the median of 3
runs. Targets (issue 5): ingest >= 100k points/s and drain >= 600k points/s with FULL.
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import tempfile
import time
from pathlib import Path

from gatewayd.config.models import SyncMode
from gatewayd.samples import Sample
from gatewayd.spool.rows import Kind
from gatewayd.spool.store import SpoolStore
from gatewayd.uplink.records import bundle_frames

REPEATS = 3
BASE_TS = 1_700_000_000_000


POINTS_PER_FRAME = 20
CYCLE_POINTS = 50 * POINTS_PER_FRAME


def _keys(device: str) -> tuple[str, str]:
    return ("productKey1", device)


def _batches(rows: int, size: int) -> list[list[Sample]]:
    """Poll cycles of 50 devices x 20 float points (one time per cycle), in batches."""
    samples = [
        Sample(
            f"device-{i // POINTS_PER_FRAME % 50}",
            f"point-{i % POINTS_PER_FRAME}",
            i * 0.25,
            BASE_TS + i // CYCLE_POINTS * 1000,
        )
        for i in range(rows)
    ]
    return [samples[i : i + size] for i in range(0, rows, size)]


def _baseline(directory: Path, batches: list[list[Sample]], sync: SyncMode) -> tuple[float, float]:
    """(ingest, drain) rows/s of bare SQLite doing the same transactions."""
    path = directory / "baseline.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute(f"PRAGMA synchronous = {sync.value.upper()}")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, k INTEGER, v, q INTEGER, ts INTEGER)")
    rows = [[(i % 1000, s.value, 0, s.ts_ms) for i, s in enumerate(b)] for b in batches]
    total = sum(len(b) for b in rows)
    start = time.perf_counter()
    for batch in rows:
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO t (k, v, q, ts) VALUES (?, ?, ?, ?)", batch)
        conn.execute("COMMIT")
    ingest = total / (time.perf_counter() - start)
    size = len(rows[0])
    start = time.perf_counter()
    while True:
        got = conn.execute("SELECT id, k, v, q, ts FROM t ORDER BY id LIMIT ?", (size,)).fetchall()
        if not got:
            break
        conn.execute("BEGIN")
        conn.executemany("DELETE FROM t WHERE id = ?", [(r[0],) for r in got])
        conn.execute("COMMIT")
    drain = total / (time.perf_counter() - start)
    conn.close()
    for leftover in directory.iterdir():
        leftover.unlink()
    return ingest, drain


def _spool(
    directory: Path, batches: list[list[Sample]], sync: SyncMode, *, records: bool
) -> tuple[float, float, int]:
    """(ingest, drain) points/s through SpoolStore, and the frames it stored."""
    store = SpoolStore.open(directory / "spool.db", max_bytes=4 << 30, synchronous=sync)
    total = sum(len(b) for b in batches)
    start = time.perf_counter()
    for batch in batches:
        store.append(batch)
    ingest = total / (time.perf_counter() - start)
    frames = store.counts().frames
    limit = max(1, len(batches[0]) // POINTS_PER_FRAME)
    drained = 0
    start = time.perf_counter()
    while taken := store.take_frames(limit):
        if records:
            bundles, _ = bundle_frames(taken, _keys)
            payload = b",".join(b.encoded for b in bundles)
            assert payload
        store.ack(Kind.SAMPLES, [f.id for f in taken])
        drained += sum(f.points for f in taken)
    drain = drained / (time.perf_counter() - start)
    assert drained == total, (drained, total)
    store.close()
    for leftover in directory.iterdir():
        leftover.unlink()
    return ingest, drain, frames


def main() -> None:
    """Run the matrix and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="rows per run (200000)")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="spool-bench-", dir=Path.cwd()))
    print(f"spool benchmark: {args.rows} points per run, median of {REPEATS}, in {directory}")
    print(f"{POINTS_PER_FRAME} points per frame; 'base' = bare SQLite, one row per point")
    header = (
        f"{'sync':<7}{'batch':>6}  {'ingest pts/s':>13}{'x base':>7}{'frames/s':>10}"
        f"  {'drain pts/s':>12}{'x base':>7}{'frames/s':>10}  {'+records pts/s':>15}"
        f"  {'base ingest':>12}{'base drain':>12}"
    )
    print(header)
    print("-" * len(header))
    try:
        for sync in (SyncMode.FULL, SyncMode.NORMAL):
            for size in (100, 500, 2000):
                batches = _batches(args.rows, size)
                base_runs = []
                spool_runs = []
                record_runs = []
                for _ in range(REPEATS):  # interleaved, so drift hits both alike
                    base_runs.append(_baseline(directory, batches, sync))
                    spool_runs.append(_spool(directory, batches, sync, records=False))
                    record_runs.append(_spool(directory, batches, sync, records=True))
                base_in = statistics.median(r[0] for r in base_runs)
                base_out = statistics.median(r[1] for r in base_runs)
                ingest = statistics.median(r[0] for r in spool_runs)
                drain = statistics.median(r[1] for r in spool_runs)
                with_records = statistics.median(r[1] for r in record_runs)
                per_frame = args.rows / spool_runs[0][2]
                print(
                    f"{sync.value:<7}{size:>6}  {ingest:>13,.0f}{ingest / base_in:>7.2f}"
                    f"{ingest / per_frame:>10,.0f}"
                    f"  {drain:>12,.0f}{drain / base_out:>7.2f}{drain / per_frame:>10,.0f}"
                    f"  {with_records:>15,.0f}"
                    f"  {base_in:>12,.0f}{base_out:>12,.0f}"
                )
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print("targets with synchronous=full: ingest >= 100,000 points/s, drain >= 600,000 points/s")


if __name__ == "__main__":
    main()
