"""Chaos accounting on a real spool file (schema v3, frames): keys and counts."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gatewayd.samples import Sample
from gatewayd.spool.store import SpoolStore
from tests.chaos.delivery import spool_counts, spool_keys


def test_keys_and_counts_of_frames(tmp_path: Path) -> None:
    """Every point of every frame is a key; committed counts every frame ever written."""
    path = tmp_path / "spool.db"
    store = SpoolStore.open(path)
    try:
        for ts in (1000, 2000):
            store.append([Sample("dev1", f"p{i}", float(i), ts) for i in range(3)])
        store.append([Sample("dev2", "p0", 1.0, 3000)])  # a frame of one point
    finally:
        store.close()
    assert spool_keys(path) == {
        *(("dev1", f"p{i}", ts) for i in range(3) for ts in (1000, 2000)),
        ("dev2", "p0", 3000),
    }
    counts = spool_counts(path)
    assert counts["committed"] == 3
    assert counts["pending"] == 3
    assert counts["pending_points"] == 7
    assert counts["dropped_points"] == 0
    assert counts["dead_letters"] == 0


def test_missing_or_empty_file_counts_nothing(tmp_path: Path) -> None:
    """A file killed before its schema holds no rows; no file at all neither."""
    assert spool_keys(tmp_path / "none.db") == set()
    empty = tmp_path / "empty.db"
    sqlite3.connect(empty).close()
    assert spool_keys(empty) == set()
    assert spool_counts(empty)["committed"] == 0


def test_a_schema_without_frames_is_an_error(tmp_path: Path) -> None:
    """A spool of another schema raises instead of counting nothing."""
    old = tmp_path / "old.db"
    with sqlite3.connect(old) as conn:
        conn.execute("CREATE TABLE samples (id INTEGER PRIMARY KEY)")
    with pytest.raises(RuntimeError, match="frames"):
        spool_counts(old)
