"""Spool schema migrations: from an empty file, from the previous version, and refusals."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gatewayd.samples import Sample
from gatewayd.spool import schema
from gatewayd.spool.rows import Kind
from gatewayd.spool.store import SpoolStore
from gatewayd.uplink.frames import EnosQuality
from tests.unit.spool_points import take_points


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
    assert schema.migrate(conn) == schema.LATEST_VERSION == 3
    assert _tables(conn) == {"meta", "frames", "events", "dead_letters"}
    assert schema.migrate(conn) == 3  # idempotent


def test_open_new_file_enables_incremental_auto_vacuum_and_wal(tmp_path: Path) -> None:
    """A fresh spool is in WAL mode with auto_vacuum=INCREMENTAL (set before any table)."""
    store = SpoolStore.open(tmp_path / "s.db", max_bytes=1 << 20)
    store.close()
    conn = sqlite3.connect(tmp_path / "s.db")
    assert conn.execute("PRAGMA auto_vacuum").fetchone()[0] == 2  # INCREMENTAL
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert schema.version(conn) == schema.LATEST_VERSION


def test_open_migrates_a_version_1_file_keeping_its_rows(tmp_path: Path) -> None:
    """A version 1 file with spooled rows is migrated on open; the rows are still there."""
    path = tmp_path / "s.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    conn.execute("PRAGMA journal_mode = WAL")
    assert schema.migrate(conn, target=1) == 1
    conn.execute("INSERT INTO series (id, device, measurepoint) VALUES (1, 'meter', 'P')")
    conn.execute("INSERT INTO samples (series, value, quality, ts_ms) VALUES (1, 4.5, 0, 1000)")
    conn.execute("INSERT INTO samples (series, value, quality, ts_ms) VALUES (1, 5.5, 1, 2000)")
    assert "dead_letters" not in _tables(conn)
    conn.close()

    store = SpoolStore.open(path, max_bytes=1 << 20, shapes=EnosQuality({("meter", "P")}))
    rows = take_points(store, 10)
    assert [(r.device, r.measurepoint, r.value, r.quality, r.ts_ms) for r in rows] == [
        ("meter", "P", 4.5, 0, 1000),
        ("meter", "P", 5.5, 1, 2000),
    ]
    assert store.dead_letter(Kind.SAMPLES, [rows[1].id], 1204, "bad", 3000) == 1
    assert store.stats().schema_version == schema.LATEST_VERSION
    store.append([Sample("meter", "Q", 1, 4000)])
    assert store.counts().samples == 2
    store.close()


def _v2_file(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    conn.execute("PRAGMA journal_mode = WAL")
    assert schema.migrate(conn, target=2) == 2
    return conn


def test_v3_converts_per_point_rows_into_frames(tmp_path: Path) -> None:
    """v2 → v3: rows become one frame per (device, instant) in spool order, values intact
    (bool, uint64, text), quality shaped per point, unsendable values counted."""
    path = tmp_path / "s.db"
    conn = _v2_file(path)
    conn.executemany(
        "INSERT INTO series (id, device, measurepoint) VALUES (?, ?, ?)",
        [(1, "m1", "P"), (2, "m1", "on"), (3, "m2", "E"), (4, "m2", "q"), (5, "m1", "name")],
    )
    conn.executemany(
        "INSERT INTO samples (series, value, quality, ts_ms) VALUES (?, ?, ?, ?)",
        [
            (1, 1.5, 0, 1000),
            (2, b"\x01", 0, 1000),
            (3, b"18446744073709551615", 0, 1000),
            (4, 7, 2, 1000),  # quality point: kept with its quality
            (5, "pump", 1, 1000),  # no quality indicator and not good: not sendable
            (1, 2.5, 0, 2000),
            (3, 12, 0, 2000),
        ],
    )
    conn.execute("INSERT INTO dead_letters (kind, row_id, device, name, value, quality,"
                 " params, ts_ms, code, message, failed_ms)"
                 " VALUES ('samples', 9, 'm1', 'P', 1.0, 0, NULL, 5, 1204, 'bad', 6)")  # fmt: skip
    conn.close()

    store = SpoolStore.open(path, max_bytes=1 << 20, shapes=EnosQuality({("m2", "q")}))
    frames = store.take_frames(10)
    assert [(f.device, f.ts_ms, f.points, f.body) for f in frames] == [
        ("m1", 1000, 2, '{"P":1.5,"on":true}'),
        ("m2", 1000, 2, '{"E":18446744073709551615,"q":{"value":7,"quality":2}}'),
        ("m1", 2000, 1, '{"P":2.5}'),
        ("m2", 2000, 1, '{"E":12}'),
    ]
    counts = store.counts()
    assert (counts.samples, counts.frames, counts.unsendable_samples) == (6, 4, 1)
    assert counts.dead_letters == 1
    assert store.stats().unsendable_samples == 1
    store.close()
    conn = sqlite3.connect(path)
    assert _tables(conn) == {"meta", "frames", "events", "dead_letters"}
    conn.close()


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
