"""Spool schema migrations: from an empty file, from the previous version, and refusals."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gatewayd.samples import Sample
from gatewayd.spool import schema
from gatewayd.spool.rows import Kind
from gatewayd.spool.store import SpoolStore


def _tables(conn: sqlite3.Connection) -> set[str]:
    return {
        name
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
        )
    }


def test_migrate_empty_file_to_latest(tmp_path: Path) -> None:
    """An empty file gets every table and the latest version, in one call."""
    conn = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    assert schema.version(conn) == 0
    assert schema.migrate(conn) == schema.LATEST_VERSION == 2
    assert _tables(conn) == {"meta", "series", "samples", "events", "dead_letters"}
    assert schema.migrate(conn) == 2  # idempotent


def test_open_new_file_enables_incremental_auto_vacuum_and_wal(tmp_path: Path) -> None:
    """A fresh spool is in WAL mode with auto_vacuum=INCREMENTAL (set before any table)."""
    store = SpoolStore.open(tmp_path / "s.db", max_bytes=1 << 20)
    store.close()
    conn = sqlite3.connect(tmp_path / "s.db")
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # INCREMENTAL
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert schema.version(conn) == schema.LATEST_VERSION


def test_open_migrates_a_previous_version_file_keeping_its_rows(tmp_path: Path) -> None:
    """A version N-1 file with spooled rows is migrated on open; the rows are still there."""
    path = tmp_path / "s.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    conn.execute("PRAGMA journal_mode = WAL")
    assert schema.migrate(conn, target=schema.LATEST_VERSION - 1) == 1
    conn.execute("INSERT INTO series (id, device, measurepoint) VALUES (1, 'meter', 'P')")
    conn.execute("INSERT INTO samples (series, value, quality, ts_ms) VALUES (1, 4.5, 0, 1000)")
    conn.execute("INSERT INTO samples (series, value, quality, ts_ms) VALUES (1, 5.5, 1, 2000)")
    assert "dead_letters" not in _tables(conn)
    conn.close()

    store = SpoolStore.open(path, max_bytes=1 << 20)
    rows = store.take_samples(10)
    assert [(r.device, r.measurepoint, r.value, r.quality, r.ts_ms) for r in rows] == [
        ("meter", "P", 4.5, 0, 1000),
        ("meter", "P", 5.5, 1, 2000),
    ]
    assert store.dead_letter(Kind.SAMPLES, [rows[1].id], 1204, "bad", 3000) == 1
    assert store.stats().schema_version == schema.LATEST_VERSION
    store.append([Sample("meter", "Q", 1, 4000)])
    assert store.counts().samples == 2
    store.close()


def test_migrate_refuses_a_newer_file(tmp_path: Path) -> None:
    """A file from a newer gatewayd raises SchemaTooNewError and is left untouched."""
    conn = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    conn.execute(f"PRAGMA user_version = {schema.LATEST_VERSION + 1}")
    with pytest.raises(schema.SchemaTooNewError, match="newer than this gatewayd"):
        schema.migrate(conn)
    assert schema.version(conn) == schema.LATEST_VERSION + 1


def test_failed_migration_step_rolls_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A step that fails leaves the file at the version before it, with nothing half-made."""
    conn = sqlite3.connect(tmp_path / "s.db", isolation_level=None)
    schema.migrate(conn, target=1)
    broken = (schema.MIGRATIONS[0], ("CREATE TABLE dead_letters (x)", "THIS IS NOT SQL"))
    monkeypatch.setattr(schema, "MIGRATIONS", broken)
    with pytest.raises(sqlite3.OperationalError):
        schema.migrate(conn)
    assert schema.version(conn) == 1
    assert "dead_letters" not in _tables(conn)
