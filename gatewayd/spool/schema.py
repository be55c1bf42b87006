"""The spool's SQLite schema as ordered migrations, versioned with `PRAGMA user_version`.

`MIGRATIONS[i]` takes a file from version `i` to `i + 1`; each runs in its own
transaction together with the version bump, so a crash leaves a file at a known version.
Never edit a released migration: append a new one.

Layout, chosen to keep a row small (the byte cap counts every byte):
- `series` interns (device, measurepoint) pairs, so a sample row stores a small integer
  instead of two strings (about 30 bytes per sample row instead of about 60).
- `samples`/`events` ids are AUTOINCREMENT, so ids only ever grow, even when a table
  empties: the store's take cursors and in-flight sets rely on that.
- `value` has no declared type, so SQLite keeps what `rows.encode_value` gives it as is.
- `meta` holds counters (rows dropped by the byte cap) and small persisted settings.

Version 3 replaces the per-point `samples` rows by `frames`: one row per (device, poll
instant) holding the JSON text of its points, name → value (`frames.py`),
so a drain concatenates text instead of doing per-point work. The step converts every
existing sample row into frames (shaped with the daemon's quality settings), so an
upgraded box loses nothing, then drops `samples` and `series`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from gatewayd.samples import Quality, Sample
from gatewayd.spool.frames import FrameEncoder
from gatewayd.spool.rows import decode_value

_V1 = (
    """CREATE TABLE meta (
        key   TEXT PRIMARY KEY NOT NULL,
        value TEXT NOT NULL
    )""",
    """CREATE TABLE series (
        id           INTEGER PRIMARY KEY,
        device       TEXT NOT NULL,
        measurepoint TEXT NOT NULL,
        UNIQUE (device, measurepoint)
    )""",
    """CREATE TABLE samples (
        id      INTEGER PRIMARY KEY AUTOINCREMENT,
        series  INTEGER NOT NULL REFERENCES series (id),
        value,
        quality INTEGER NOT NULL,
        ts_ms   INTEGER NOT NULL
    )""",
    """CREATE TABLE events (
        id       INTEGER PRIMARY KEY AUTOINCREMENT,
        device   TEXT NOT NULL,
        event_id TEXT NOT NULL,
        params   TEXT NOT NULL,
        ts_ms    INTEGER NOT NULL
    )""",
)

# Version 2: permanent rejects keep the original row and the reply that rejected it.
_V2 = (
    """CREATE TABLE dead_letters (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,
        kind      TEXT NOT NULL,
        row_id    INTEGER NOT NULL,
        device    TEXT NOT NULL,
        name      TEXT NOT NULL,
        value,
        quality   INTEGER,
        params    TEXT,
        ts_ms     INTEGER NOT NULL,
        code      INTEGER NOT NULL,
        message   TEXT NOT NULL,
        failed_ms INTEGER NOT NULL
    )""",
)

#: Samples converted per chunk by the v3 step (bounds its memory, not its transaction).
_CONVERT_CHUNK = 50_000
#: `meta` key counting values never spooled because EnOS could not take them.
META_UNSENDABLE = "spool.unsendable_points"


def _samples_to_frames(conn: sqlite3.Connection, encoder: FrameEncoder) -> None:
    """Convert every `samples` row, oldest first, into frames (the v3 data step)."""
    rows = conn.execute(
        "SELECT s.id, r.device, r.measurepoint, s.value, s.quality, s.ts_ms"
        " FROM samples AS s JOIN series AS r ON r.id = s.series ORDER BY s.id"
    )
    unsendable = 0
    while chunk := rows.fetchmany(_CONVERT_CHUNK):
        samples = [
            Sample(device, point, decode_value(value), ts_ms, Quality(quality))
            for _, device, point, value, quality, ts_ms in chunk
        ]
        frames, left_out = encoder.encode(samples)
        unsendable += left_out
        conn.executemany(
            "INSERT INTO frames (device, ts_ms, points, body) VALUES (?, ?, ?, ?)", frames
        )
    if unsendable:
        conn.execute(
            "INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT (key)"
            " DO UPDATE SET value = CAST(value AS INTEGER) + excluded.value",
            (META_UNSENDABLE, unsendable),
        )


# Version 3: frames (see the module docstring); `device` is kept as text, once per frame.
_V3: tuple[str | Callable[[sqlite3.Connection, FrameEncoder], None], ...] = (
    """CREATE TABLE frames (
        id     INTEGER PRIMARY KEY AUTOINCREMENT,
        device TEXT NOT NULL,
        ts_ms  INTEGER NOT NULL,
        points INTEGER NOT NULL,
        body   TEXT NOT NULL
    )""",
    _samples_to_frames,
    "DROP TABLE samples",
    "DROP TABLE series",
)

Step = str | Callable[[sqlite3.Connection, FrameEncoder], None]
MIGRATIONS: tuple[tuple[Step, ...], ...] = (_V1, _V2, _V3)
LATEST_VERSION = len(MIGRATIONS)


class SchemaTooNewError(Exception):
    """The file was written by a newer gatewayd; this one must not touch it."""

    def __init__(self, found: int) -> None:
        super().__init__(
            f"spool schema version {found} is newer than this gatewayd supports ({LATEST_VERSION})"
        )
        self.found = found


def version(conn: sqlite3.Connection) -> int:
    """The schema version of the open file (0 for a new, empty file)."""
    found: int = conn.execute("PRAGMA user_version").fetchone()[0]
    return found


def migrate(
    conn: sqlite3.Connection,
    target: int = LATEST_VERSION,
    *,
    encoder: FrameEncoder | None = None,
) -> int:
    """Bring the file up to `target`, one transaction per step; returns the version.

    `conn` must be in autocommit mode (`isolation_level=None`). `encoder` shapes the
    values that the v3 step converts into frames (default: no quality indicators).
    Raises `SchemaTooNewError` for a file from a newer gatewayd.
    """
    encoder = encoder or FrameEncoder()
    current = version(conn)
    if current > LATEST_VERSION:
        raise SchemaTooNewError(current)
    while current < target:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for step in MIGRATIONS[current]:
                if isinstance(step, str):
                    conn.execute(step)
                else:
                    step(conn, encoder)
            conn.execute(f"PRAGMA user_version = {current + 1}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        current += 1
    return current
