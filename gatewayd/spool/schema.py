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
"""

from __future__ import annotations

import sqlite3

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

MIGRATIONS: tuple[tuple[str, ...], ...] = (_V1, _V2)
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


def migrate(conn: sqlite3.Connection, target: int = LATEST_VERSION) -> int:
    """Bring the file up to `target`, one transaction per step; returns the version.

    `conn` must be in autocommit mode (`isolation_level=None`). Raises
    `SchemaTooNewError` for a file from a newer gatewayd.
    """
    current = version(conn)
    if current > LATEST_VERSION:
        raise SchemaTooNewError(current)
    while current < target:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in MIGRATIONS[current]:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {current + 1}")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
        current += 1
    return current
