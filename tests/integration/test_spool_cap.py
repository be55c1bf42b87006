"""The spool's byte cap on a real file: the files on disk stay under it, drops are exact."""

from __future__ import annotations

from pathlib import Path

import structlog

from gatewayd.samples import Sample
from gatewayd.spool.files import file_bytes
from gatewayd.spool.rows import Kind
from gatewayd.spool.store import SpoolStore
from tests.unit.spool_points import take_points

CAP = 1 << 20  # the smallest cap the config accepts
BATCH = 250


def _batch(start: int) -> list[Sample]:
    return [
        Sample(f"meter-{i % 8}", f"P{i % 5}", float(start + i), 1_700_000_000_000 + start + i)
        for i in range(BATCH)
    ]


def test_sustained_appends_keep_the_files_under_the_cap(tmp_path: Path) -> None:
    """Appending 4x the cap: db+wal+shm never exceed it, drops are exact and oldest-first,
    and one warning covers the whole episode."""
    path = tmp_path / "spool.db"
    store = SpoolStore.open(path, max_bytes=CAP)
    appended = 0
    largest = 0
    with structlog.testing.capture_logs() as logs:
        while appended < 160_000:
            store.append(_batch(appended))
            appended += BATCH
            largest = max(largest, file_bytes(path))
            assert file_bytes(path) <= CAP
    counts = store.counts()
    assert counts.dropped_samples > 0
    assert counts.samples + counts.dropped_samples == appended
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert [e["event"] for e in warnings] == ["spool full: dropping the oldest rows"]
    # What is left is exactly the newest rows, in order: the oldest went first.
    rows = take_points(store, appended)
    assert [r.value for r in rows] == [float(v) for v in range(counts.dropped_samples, appended)]
    assert store.stats().dropped_samples == counts.dropped_samples
    # The cap is used, not wasted: the data filled most of the budget before dropping.
    assert largest > CAP // 2
    store.close()


def test_drop_count_survives_a_restart_and_in_flight_rows_are_kept(tmp_path: Path) -> None:
    """Rows in flight are never dropped; the dropped counter is persisted in the file."""
    path = tmp_path / "spool.db"
    store = SpoolStore.open(path, max_bytes=CAP)
    store.append(_batch(0))
    held = take_points(store, BATCH)
    appended = BATCH
    while store.counts().dropped_samples == 0 or appended < 100_000:
        store.append(_batch(appended))
        appended += BATCH
    assert store.ack(Kind.SAMPLES, [r.id for r in held]) == BATCH  # none were dropped
    dropped = store.counts().dropped_samples
    assert store.counts().samples + dropped + BATCH == appended
    store.close()
    store = SpoolStore.open(path, max_bytes=CAP)
    assert store.counts().dropped_samples == dropped
    assert store.stats().dropped_samples == dropped
    store.close()


def test_draining_ends_the_episode_and_shrinks_the_file(tmp_path: Path) -> None:
    """After a full spool drains, the episode closes with one info line and the file shrinks."""
    path = tmp_path / "spool.db"
    store = SpoolStore.open(path, max_bytes=CAP)
    appended = 0
    while appended < 60_000:
        store.append(_batch(appended))
        appended += BATCH
    full = file_bytes(path)
    assert full > CAP // 2
    with structlog.testing.capture_logs() as logs:
        while batch := take_points(store, 500):
            store.ack(Kind.SAMPLES, [r.id for r in batch])
        store.append(_batch(appended))  # a new episode does not start from this
    assert [(e["log_level"], e["event"]) for e in logs] == [
        ("info", "spool below its low-water mark: no longer dropping")
    ]
    assert logs[0]["dropped_rows"] == store.counts().dropped_samples
    store.reclaim(max_pages=None)
    assert file_bytes(path) < full // 4
    store.close()


def test_a_lower_cap_at_open_trims_and_shrinks_the_file(tmp_path: Path) -> None:
    """Reopening with a smaller cap drops the oldest rows and shrinks the file at once."""
    path = tmp_path / "spool.db"
    store = SpoolStore.open(path, max_bytes=8 * CAP)
    appended = 0
    while appended < 100_000:
        store.append(_batch(appended))
        appended += BATCH
    store.close()
    assert file_bytes(path) > 2 * CAP
    store = SpoolStore.open(path, max_bytes=CAP)
    assert file_bytes(path) <= CAP
    counts = store.counts()
    assert counts.samples + counts.dropped_samples == appended
    rows = take_points(store, appended)
    assert rows[-1].value == float(appended - 1)
    store.close()
