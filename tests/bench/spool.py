"""Spool ingest and drain throughput: `python -m tests.bench.spool [--rows N]`.

For each `synchronous` level (FULL, NORMAL) and batch size, measures
- ingest: `SpoolStore.append(batch)` (one transaction per batch, as the pollers do);
- drain: `take_samples(batch)` + `ack(ids)` until empty (as the uplink does);
and prints rows/s next to a baseline measured in the same run on the same disk: a bare
`executemany` INSERT into a minimal 4-column table (and SELECT + DELETE for the drain),
same WAL mode and `synchronous`, same commit per batch. The ratio says what the spool's
own work (interning, value encoding, byte-cap checks, in-flight bookkeeping, row objects)
costs over SQLite itself. Each figure is the median of 3 runs. Targets (issue 5): ingest
>= 100k rows/s and drain >= 200k rows/s with synchronous FULL.
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

REPEATS = 3
BASE_TS = 1_700_000_000_000


def _batches(rows: int, size: int) -> list[list[Sample]]:
    """Samples of 50 devices x 20 points with float values, in poll-cycle batches."""
    samples = [
        Sample(f"device-{i % 50}", f"point-{i // 50 % 20}", i * 0.25, BASE_TS + i)
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


def _spool(directory: Path, batches: list[list[Sample]], sync: SyncMode) -> tuple[float, float]:
    """(ingest, drain) rows/s through SpoolStore."""
    store = SpoolStore.open(directory / "spool.db", max_bytes=4 << 30, synchronous=sync)
    total = sum(len(b) for b in batches)
    start = time.perf_counter()
    for batch in batches:
        store.append(batch)
    ingest = total / (time.perf_counter() - start)
    size = len(batches[0])
    drained = 0
    start = time.perf_counter()
    while rows := store.take_samples(size):
        drained += store.ack(Kind.SAMPLES, [r.id for r in rows])
    drain = drained / (time.perf_counter() - start)
    assert drained == total, (drained, total)
    store.close()
    for leftover in directory.iterdir():
        leftover.unlink()
    return ingest, drain


def main() -> None:
    """Run the matrix and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="rows per run (200000)")
    args = parser.parse_args()
    directory = Path(tempfile.mkdtemp(prefix="spool-bench-", dir=Path.cwd()))
    print(f"spool benchmark: {args.rows} rows per run, median of {REPEATS}, in {directory}")
    header = (
        f"{'sync':<7}{'batch':>6}  {'ingest rows/s':>14}{'x base':>8}"
        f"  {'drain rows/s':>13}{'x base':>8}  {'base ingest':>12}{'base drain':>12}"
    )
    print(header)
    print("-" * len(header))
    try:
        for sync in (SyncMode.FULL, SyncMode.NORMAL):
            for size in (100, 500, 2000):
                batches = _batches(args.rows, size)
                base_runs = []
                spool_runs = []
                for _ in range(REPEATS):  # interleaved, so drift hits both alike
                    base_runs.append(_baseline(directory, batches, sync))
                    spool_runs.append(_spool(directory, batches, sync))
                base_in = statistics.median(r[0] for r in base_runs)
                base_out = statistics.median(r[1] for r in base_runs)
                ingest = statistics.median(r[0] for r in spool_runs)
                drain = statistics.median(r[1] for r in spool_runs)
                print(
                    f"{sync.value:<7}{size:>6}  {ingest:>14,.0f}{ingest / base_in:>8.2f}"
                    f"  {drain:>13,.0f}{drain / base_out:>8.2f}"
                    f"  {base_in:>12,.0f}{base_out:>12,.0f}"
                )
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print("targets with synchronous=full: ingest >= 100,000 rows/s, drain >= 200,000 rows/s")


if __name__ == "__main__":
    main()
