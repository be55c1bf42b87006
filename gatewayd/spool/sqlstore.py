"""The spool's SQL: every statement the spool runs on its file, behind one thin class.

`SqlStore` owns the read-write connection and knows tables, columns and pragmas, and
nothing else: which rows to take, what a full disk means or what a counter says is
decided by the callers (`store.py` and its parts). Table names are fixed here, never
taken from input.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gatewayd.config.models import SyncMode
from gatewayd.spool import files, stats
from gatewayd.spool.frames import FrameEncoder
from gatewayd.spool.rows import DeadLetter, Kind
from gatewayd.spool.tally import TableCounts


@dataclass(frozen=True, slots=True)
class _Sql:
    """The statements for one table."""

    select_after: str
    select_live: str
    # The same, leaving out held devices (a JSON array of device names).
    select_after_excluding: str
    select_live_excluding: str
    delete_by_id: str
    delete_json_ids: str
    delete_oldest: str
    delete_oldest_except: str


def _table_sql(table: str, columns: str, weight: str) -> _Sql:
    """`weight` is what a dropped row returns: its points (frames) or 1 (events)."""
    select = f"SELECT {columns} FROM {table} WHERE id > ?"  # noqa: S608 (fixed names)
    held = " AND device NOT IN (SELECT value FROM json_each(?))"
    return _Sql(
        select_after=f"{select} ORDER BY id LIMIT ?",
        select_live=f"{select} AND ts_ms >= ? ORDER BY id LIMIT ?",
        select_after_excluding=f"{select}{held} ORDER BY id LIMIT ?",
        select_live_excluding=f"{select} AND ts_ms >= ?{held} ORDER BY id LIMIT ?",
        delete_by_id=f"DELETE FROM {table} WHERE id = ?",  # noqa: S608
        delete_json_ids=f"DELETE FROM {table} WHERE id IN (SELECT value FROM json_each(?))",  # noqa: S608
        delete_oldest=(
            f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table} ORDER BY id LIMIT ?)"  # noqa: S608
            f" RETURNING {weight}"
        ),
        delete_oldest_except=(
            f"DELETE FROM {table} WHERE id IN (SELECT id FROM {table}"  # noqa: S608
            " WHERE id NOT IN (SELECT value FROM json_each(?)) ORDER BY id LIMIT ?)"
            f" RETURNING {weight}"
        ),
    )


_SQL = {
    # Columns in the order `SpooledFrame`/`SpooledEvent` are built from; ts_ms last.
    Kind.SAMPLES: _table_sql("frames", "id, device, points, body, ts_ms", "points"),
    Kind.EVENTS: _table_sql("events", "id, device, event_id, params, ts_ms", "1"),
}
_INSERT_FRAME = "INSERT INTO frames (device, ts_ms, points, body) VALUES (?, ?, ?, ?)"
_INSERT_EVENT = "INSERT INTO events (device, event_id, params, ts_ms) VALUES (?, ?, ?, ?)"
_SELECT_FRAMES = (
    "SELECT id, device, ts_ms, body FROM frames"
    " WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id"
)
_INSERT_DEAD_POINT = (
    "INSERT INTO dead_letters (kind, row_id, device, name, value, quality, params,"
    " ts_ms, code, message, failed_ms) VALUES ('samples', ?, ?, ?, ?, ?, NULL, ?, ?, ?, ?)"
)
_EVENTS_TO_DEAD_LETTERS = (
    "INSERT INTO dead_letters (kind, row_id, device, name, value, quality, params,"
    " ts_ms, code, message, failed_ms)"
    " SELECT 'events', id, device, event_id, NULL, NULL, params, ts_ms, ?, ?, ?"
    " FROM events WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id"
)
_UPDATE_FRAME = "UPDATE frames SET points = ?, body = ? WHERE id = ?"
_SET_META = (
    "INSERT INTO meta (key, value) VALUES (?, ?)"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
_TRIM_DEAD_LETTERS = (
    "DELETE FROM dead_letters WHERE id IN"
    " (SELECT id FROM dead_letters ORDER BY id DESC LIMIT -1 OFFSET ?)"
)
_COUNT_EVENTS = "SELECT COUNT(*) FROM events"
_COUNT_FRAMES = "SELECT COUNT(*), TOTAL(points) FROM frames"
_COUNT_DEAD_LETTERS = "SELECT COUNT(*) FROM dead_letters"


class SqlStore:
    """The spool file's read-write connection and its statements (one thread)."""

    def __init__(self, conn: sqlite3.Connection, path: Path, synchronous: SyncMode) -> None:
        self.conn = conn
        self._path = path
        self._synchronous = synchronous
        # Bookkeeping commits skip the fsync only when appends pay one (FULL, EXTRA).
        self._relax = synchronous in (SyncMode.FULL, SyncMode.EXTRA)

    # -- connection ------------------------------------------------------------------

    def configure(self) -> int:
        """Set the per-connection pragmas; returns the file's page size."""
        page_size: int = self.conn.execute("PRAGMA page_size").fetchone()[0]
        self.conn.execute("PRAGMA busy_timeout = 5000")
        return page_size

    def reconnect(self, encoder: FrameEncoder) -> None:
        """Open a fresh file at the same path (after the old one was moved aside)."""
        self.conn = files.connect(self._path, self._synchronous, check=False, encoder=encoder)

    def close(self) -> None:
        """Close the connection (SQLite checkpoints and removes the WAL)."""
        self.conn.close()

    def set_wal_limit(self, limit_bytes: int, page_size: int) -> None:
        """Checkpoint every `limit_bytes` of WAL and truncate it back to that size."""
        pages = max(1, limit_bytes // page_size)
        self.conn.execute(f"PRAGMA wal_autocheckpoint = {pages}")
        self.conn.execute(f"PRAGMA journal_size_limit = {limit_bytes}")

    def checkpoint_truncate(self) -> None:
        """Fold the WAL into the database file and truncate it (raises on failure)."""
        self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    def incremental_vacuum(self, step: int | None) -> None:
        """Give up to `step` free pages (None: all) back to the disk."""
        pages = "" if step is None else f"({step})"
        # executescript steps the pragma to the end; execute() would free one page
        # (the pragma returns no columns, so sqlite3 stops after the first step).
        self.conn.executescript(f"PRAGMA incremental_vacuum{pages};")

    def pages(self) -> tuple[int, int]:
        """(pages in the file, free pages), as the current transaction sees them."""
        total: int = self.conn.execute("PRAGMA page_count").fetchone()[0]
        free: int = self.conn.execute("PRAGMA freelist_count").fetchone()[0]
        return total, free

    # -- transactions ----------------------------------------------------------------

    @contextmanager
    def relaxed(self) -> Iterator[None]:
        """Commit without fsync inside the block (for idempotent bookkeeping)."""
        if not self._relax:
            yield
            return
        self.conn.execute("PRAGMA synchronous = NORMAL")
        try:
            yield
        finally:
            self.conn.execute(f"PRAGMA synchronous = {self._synchronous.value.upper()}")

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One write transaction: committed at the end, rolled back on any exception."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield
            self.conn.execute("COMMIT")
        except BaseException:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
            raise

    # -- rows ------------------------------------------------------------------------

    def insert(self, frames: Sequence[Sequence[Any]], events: Sequence[Sequence[Any]]) -> None:
        """Insert frame rows (device, ts_ms, points, body) and event rows
        (device, event_id, params, ts_ms)."""
        if frames:
            self.conn.executemany(_INSERT_FRAME, frames)
        if events:
            self.conn.executemany(_INSERT_EVENT, events)

    def select(
        self,
        kind: Kind,
        after_id: int,
        limit: int,
        *,
        newer_than_ms: int | None,
        held_json: str | None,
    ) -> list[tuple[Any, ...]]:
        """Rows with `id > after_id` in id order (live ones only when `newer_than_ms`),
        leaving out the devices of `held_json`; columns as `_SQL` lists them."""
        sql = _SQL[kind]
        if held_json is not None:
            if newer_than_ms is not None:
                args: tuple[Any, ...] = (after_id, newer_than_ms, held_json, limit)
                return self.conn.execute(sql.select_live_excluding, args).fetchall()
            return self.conn.execute(
                sql.select_after_excluding, (after_id, held_json, limit)
            ).fetchall()
        if newer_than_ms is not None:
            return self.conn.execute(sql.select_live, (after_id, newer_than_ms, limit)).fetchall()
        return self.conn.execute(sql.select_after, (after_id, limit)).fetchall()

    def delete(self, kind: Kind, ids: Iterable[int]) -> int:
        """Delete rows by id; returns how many existed."""
        deleted: int = self.conn.executemany(
            _SQL[kind].delete_by_id, [(row_id,) for row_id in ids]
        ).rowcount
        return deleted

    def delete_json_ids(self, kind: Kind, ids_json: str) -> int:
        """Delete the rows of a JSON array of ids; returns how many existed."""
        deleted: int = self.conn.execute(_SQL[kind].delete_json_ids, (ids_json,)).rowcount
        return deleted

    def delete_oldest(self, kind: Kind, count: int, keep_json: str | None) -> list[int]:
        """Delete the `count` oldest rows not in `keep_json` (a JSON array of ids);
        returns each deleted row's weight (a frame's points, 1 for an event)."""
        sql = _SQL[kind]
        if keep_json is not None:
            cursor = self.conn.execute(sql.delete_oldest_except, (keep_json, count))
        else:
            cursor = self.conn.execute(sql.delete_oldest, (count,))
        return [weight for (weight,) in cursor.fetchall()]

    def select_frames(self, ids_json: str) -> list[tuple[int, str, int, str]]:
        """(id, device, ts_ms, body) of the frames of a JSON array of ids, in id order."""
        return self.conn.execute(_SELECT_FRAMES, (ids_json,)).fetchall()

    def update_frame(self, frame_id: int, points: int, body: str) -> None:
        """Replace a frame's points (what is left of it after a partial settle)."""
        self.conn.execute(_UPDATE_FRAME, (points, body, frame_id))

    # -- dead letters ----------------------------------------------------------------

    def insert_dead_points(self, rows: Sequence[Sequence[Any]]) -> None:
        """Dead letters of single points: (row_id, device, name, value, quality, ts_ms,
        code, message, failed_ms)."""
        self.conn.executemany(_INSERT_DEAD_POINT, rows)

    def events_to_dead_letters(self, ids_json: str, code: int, message: str, now_ms: int) -> None:
        """Copy the events of a JSON array of ids into the dead letters (not deleted)."""
        self.conn.execute(_EVENTS_TO_DEAD_LETTERS, (code, message, now_ms, ids_json))

    def trim_dead_letters(self, keep: int) -> int:
        """Delete all but the newest `keep` dead letters; returns how many went."""
        trimmed: int = self.conn.execute(_TRIM_DEAD_LETTERS, (keep,)).rowcount
        return trimmed

    # -- counts and meta -------------------------------------------------------------

    def count_rows(self) -> TableCounts:
        """Count every table (a scan of the row ids; done at open and after a rollback)."""
        conn = self.conn
        events = conn.execute(_COUNT_EVENTS).fetchone()[0]
        frames, points = conn.execute(_COUNT_FRAMES).fetchone()
        dead_letters = conn.execute(_COUNT_DEAD_LETTERS).fetchone()[0]
        return TableCounts(frames, int(points), events, dead_letters)

    def read_counters(self, keys: Iterable[str]) -> dict[str, int]:
        """The integer `meta` values of `keys` (0 for a key not set)."""
        return {key: int(stats.read_meta(self.conn, key) or 0) for key in keys}

    def get_meta(self, key: str) -> str | None:
        """The `meta` value for `key`, or None."""
        return stats.read_meta(self.conn, key)

    def set_meta(self, key: str, value: str) -> None:
        """Set one `meta` value (inside the caller's transaction)."""
        self.conn.execute(_SET_META, (key, value))

    def set_metas(self, items: Iterable[tuple[str, str]]) -> None:
        """Set several `meta` values (inside the caller's transaction)."""
        self.conn.executemany(_SET_META, items)

    def read_stats(
        self, max_bytes: int, *, in_flight_samples: int, in_flight_events: int
    ) -> stats.SpoolStats:
        """A full snapshot of the file (`stats.read_stats`)."""
        return stats.read_stats(
            self.conn,
            self._path,
            max_bytes,
            in_flight_samples=in_flight_samples,
            in_flight_events=in_flight_events,
        )

    def read_dead_letters(self, limit: int) -> list[DeadLetter]:
        """The newest `limit` dead letters, newest first."""
        return stats.read_dead_letters(self.conn, limit)
