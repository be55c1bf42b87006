"""Read-side queries shared by the store and `gatewayd spool` (which reads a live spool).

Everything here takes an open connection and only reads, so the CLI can run it on a
read-only connection while the daemon writes (WAL readers do not block the writer).
`read_stats` walks every page (`dbstat`, counts): it is for operators, not hot paths.
"""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from gatewayd.spool import files, schema
from gatewayd.spool.rows import DeadLetter, Kind, decode_value

#: `meta` keys the spool itself keeps (others are free for callers of `set_meta`).
META_DROPPED = {Kind.SAMPLES: "spool.dropped_samples", Kind.EVENTS: "spool.dropped_events"}
META_DROPPED_DEAD_LETTERS = "spool.dropped_dead_letters"
META_LAST_APPEND = "spool.last_append_ms"
META_UNSENDABLE = schema.META_UNSENDABLE
#: Points committed since the file was created (at v3 or later), for loss accounting.
META_APPENDED = "spool.appended_points"


@dataclass(frozen=True, slots=True)
class SpoolStats:
    """A snapshot of the spool for operators (`gatewayd spool stats`)."""

    path: str
    schema_version: int
    samples: int  # points, in `frames` rows
    events: int
    dead_letters: int
    #: Bytes of pages each table occupies (None when SQLite lacks the dbstat table).
    sample_bytes: int | None
    event_bytes: int | None
    dead_letter_bytes: int | None
    #: Sample time of the oldest row by spool order (None when the table is empty).
    oldest_sample_ts_ms: int | None
    oldest_event_ts_ms: int | None
    #: Rows dropped by the byte cap or lost to a full disk, since the file was created.
    dropped_samples: int
    dropped_events: int
    dropped_dead_letters: int
    last_append_ms: int | None
    #: Database + WAL + shm bytes on disk, and the configured cap.
    file_bytes: int
    max_bytes: int
    #: Rows taken but not yet acked; only the owning process knows (None from the CLI).
    in_flight_samples: int | None = None
    in_flight_events: int | None = None
    #: Rows holding the samples (one per device and poll instant).
    frames: int = 0
    #: Values never spooled because EnOS cannot take them (a non-good value of a point
    #: without the quality indicator, NaN/infinity).
    unsendable_samples: int = 0
    #: Points committed since the file was created (at schema v3 or later).
    appended_samples: int = 0


def read_meta(conn: sqlite3.Connection, key: str) -> str | None:
    """The `meta` value for `key`, or None."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    return None if row is None else str(row[0])


def _meta_int(conn: sqlite3.Connection, key: str) -> int:
    value = read_meta(conn, key)
    return 0 if value is None else int(value)


def _table_bytes(conn: sqlite3.Connection) -> dict[str, int] | None:
    try:
        rows = conn.execute(
            "SELECT name, SUM(pgsize) FROM dbstat"
            " WHERE name IN ('frames', 'events', 'dead_letters') GROUP BY name"
        ).fetchall()
    except sqlite3.OperationalError:  # SQLite built without SQLITE_ENABLE_DBSTAT_VTAB
        return None
    return {str(name): int(size) for name, size in rows}


def read_stats(
    conn: sqlite3.Connection,
    path: Path,
    max_bytes: int,
    *,
    in_flight_samples: int | None = None,
    in_flight_events: int | None = None,
) -> SpoolStats:
    """Count and measure everything in one read transaction (a consistent snapshot)."""
    conn.execute("BEGIN")
    try:
        sizes = _table_bytes(conn)
        version = schema.version(conn)
        if version < 3:
            # A file the daemon has not upgraded yet (the CLI reads, never migrates).
            raise sqlite3.DatabaseError(
                f"spool schema version {version}: start gatewayd once to upgrade it"
            )
        oldest = {
            kind: conn.execute(f"SELECT ts_ms FROM {table} ORDER BY id LIMIT 1").fetchone()  # noqa: S608 (fixed names)
            for kind, table in ((Kind.SAMPLES, "frames"), (Kind.EVENTS, "events"))
        }
        count = {
            table: int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])  # noqa: S608
            for table in ("frames", "events", "dead_letters")
        }
        points = int(conn.execute("SELECT TOTAL(points) FROM frames").fetchone()[0])
        last_append = read_meta(conn, META_LAST_APPEND)
        return SpoolStats(
            path=str(path),
            schema_version=version,
            samples=points,
            events=count["events"],
            dead_letters=count["dead_letters"],
            sample_bytes=None if sizes is None else sizes.get("frames", 0),
            event_bytes=None if sizes is None else sizes.get("events", 0),
            dead_letter_bytes=None if sizes is None else sizes.get("dead_letters", 0),
            oldest_sample_ts_ms=None if oldest[Kind.SAMPLES] is None else oldest[Kind.SAMPLES][0],
            oldest_event_ts_ms=None if oldest[Kind.EVENTS] is None else oldest[Kind.EVENTS][0],
            dropped_samples=_meta_int(conn, META_DROPPED[Kind.SAMPLES]),
            dropped_events=_meta_int(conn, META_DROPPED[Kind.EVENTS]),
            dropped_dead_letters=_meta_int(conn, META_DROPPED_DEAD_LETTERS),
            last_append_ms=None if last_append is None else int(last_append),
            file_bytes=files.file_bytes(path),
            max_bytes=max_bytes,
            in_flight_samples=in_flight_samples,
            in_flight_events=in_flight_events,
            frames=count["frames"],
            unsendable_samples=_meta_int(conn, META_UNSENDABLE),
            appended_samples=_meta_int(conn, META_APPENDED),
        )
    finally:
        conn.execute("COMMIT")


def read_dead_letters(conn: sqlite3.Connection, limit: int) -> list[DeadLetter]:
    """The newest `limit` dead letters, newest first."""
    rows = conn.execute(
        "SELECT id, kind, row_id, device, name, value, quality, params, ts_ms, code, message,"
        " failed_ms FROM dead_letters ORDER BY id DESC LIMIT ?",
        (limit,),
    ).fetchall()
    return [
        DeadLetter(
            id=row_id,
            kind=Kind(kind),
            row_id=original_id,
            device=device,
            name=name,
            value=None if value is None else decode_value(value),
            quality=quality,
            params=None if params is None else json.loads(params),
            ts_ms=ts_ms,
            code=code,
            message=message,
            failed_ms=failed_ms,
        )
        for (
            row_id,
            kind,
            original_id,
            device,
            name,
            value,
            quality,
            params,
            ts_ms,
            code,
            message,
            failed_ms,
        ) in rows
    ]
