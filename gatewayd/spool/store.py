"""The spool: every sample and event is committed here before it may be published.

`SpoolStore` is the synchronous core; it owns one sqlite3 connection and must be used
from one thread (the daemon uses `gatewayd.spool.worker.Spool`, tests and the CLI use
this class directly).

Samples are stored as frames (`frames.py`): one row per (device, poll instant) holding
the pre-encoded EnOS `measurepoints` JSON of that device's points, so a drain handles
rows of a hundred points, not points. Counters that operators see (`Counts.samples`,
dropped samples, dead letters) count POINTS; `Counts.frames` counts rows.

Delivery is begin/commit (Telegraf's buffer idea):
    frames = store.take_frames(500, newer_than_ms=now_ms - live_window_ms)   # begin
    ... publish, await the EnOS reply ...
    store.ack(Kind.SAMPLES, ids_accepted)           # commit: the rows are deleted
    store.release(Kind.SAMPLES, ids_to_retry)       # or: they go back to the pool
    store.dead_letter(Kind.SAMPLES, ids, code, msg, now_ms)   # or: rejected for good
    store.rewrite_frame(id, delivered, dead, now_ms)  # or: only some points of a frame
Rows taken and not yet acked are "in flight" (in memory only): `take_*` skips them, and
after a restart every row not acked comes back. `ack`/`release`/`dead_letter` act only on
ids that are in flight, so a stale id (from before a restart or a recovered file) can
never delete a row it did not take.

Order: rows come out in spool order (`id`, the append order). Each device's samples are
appended in time order (one poller per bus), so per-device time order is preserved.
`newer_than_ms` (live: `ts_ms >= cutoff`) and `older_than_ms` (backlog: `ts_ms < cutoff`)
split the rows by sample time, as EnOS' post/resume split asks. Each (kind, filter) keeps
a cursor so a take does not rescan what is already in flight; `release` rewinds it.

Durability: appends commit with the configured `synchronous` (FULL by default: one fsync
per append, i.e. per poll cycle per bus). Acks, releases and dead letters commit with
NORMAL: losing one to a power cut only means rows are sent again, and EnOS keys data by
(device, point, time), so a duplicate is harmless; this saves one fsync per message.

Byte cap (see `budget.py`): before an append would take the data pages past the budget,
the oldest rows are dropped (frames first, counted as the points they held; events only
when no sample is left, because an event is one alarm transition that cannot be
re-derived), counted in `meta`, logged
once per episode. Rows in flight are never dropped. Free pages are reused before the file
grows; after the spool drains, `incremental_vacuum` and a TRUNCATE checkpoint give the
space back to the disk.

Failures: a corrupt file is moved aside and a fresh one started (`files.py`), at open and
when an append or ack meets corruption. A full disk on append drops the oldest rows,
truncates the WAL and retries once; if that fails too the batch is counted as dropped.
`append` never raises: the poller keeps polling, and the logs say what was lost.
Deletes need disk space too (WAL frames, then a checkpoint that may grow the file), so
the WAL is held below half the reserve file (`_wal_limit`): releasing the reserve always
lets a checkpoint empty it. An ack that meets a full disk releases the reserve, truncates
the WAL and retries once; rows it still cannot delete stay in flight ("unsettled": not
sent again by this run), are warned about once per episode, and the next ack deletes them.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

import structlog

from gatewayd.config.models import SpoolConfig, SyncMode
from gatewayd.samples import Event, Sample, SampleBlock
from gatewayd.spool import files, openerror, stats
from gatewayd.spool.budget import Budget
from gatewayd.spool.frames import FrameEncoder, encode_body, parse_body, split_value
from gatewayd.spool.rows import DeadLetter, Kind, SpooledEvent, SpooledFrame
from gatewayd.spool.rows import encode_value as _encode

log = structlog.get_logger()
_T = TypeVar("_T")

_SQLITE_FULL = 13
#: Guesses the bytes of a row before the spool holds any, for the byte-cap projection.
_DEFAULT_ROW_BYTES = 256
_MAX_DROP_ROUNDS = 8
#: WAL pages between checkpoints while the disk is full (normally `Budget.wal_limit`).
_FULL_DISK_WAL_PAGES = 16
DEAD_LETTER_LIMIT = 10_000


class _Mode(Enum):
    """Which rows a take selects by sample time; each keeps its own cursor."""

    ALL = "all"
    LIVE = "live"
    BACKLOG = "backlog"


@dataclass(frozen=True, slots=True)
class _Sql:
    """The statements for one table (names are fixed here, never from input)."""

    select_after: str
    select_live: str
    # The same, leaving out held devices (a JSON array of series ids / device names).
    select_after_excluding: str
    select_live_excluding: str
    delete_by_id: str
    delete_json_ids: str
    delete_oldest: str
    delete_oldest_except: str
    to_dead_letters: str


_SQL = {
    Kind.SAMPLES: _Sql(
        select_after=(
            "SELECT id, device, points, body, ts_ms FROM frames WHERE id > ? ORDER BY id LIMIT ?"
        ),
        select_live=(
            "SELECT id, device, points, body, ts_ms FROM frames"
            " WHERE id > ? AND ts_ms >= ? ORDER BY id LIMIT ?"
        ),
        select_after_excluding=(
            "SELECT id, device, points, body, ts_ms FROM frames WHERE id > ?"
            " AND device NOT IN (SELECT value FROM json_each(?)) ORDER BY id LIMIT ?"
        ),
        select_live_excluding=(
            "SELECT id, device, points, body, ts_ms FROM frames WHERE id > ? AND ts_ms >= ?"
            " AND device NOT IN (SELECT value FROM json_each(?)) ORDER BY id LIMIT ?"
        ),
        delete_by_id="DELETE FROM frames WHERE id = ?",
        delete_json_ids="DELETE FROM frames WHERE id IN (SELECT value FROM json_each(?))",
        delete_oldest=(
            "DELETE FROM frames WHERE id IN (SELECT id FROM frames ORDER BY id LIMIT ?)"
            " RETURNING points"
        ),
        delete_oldest_except=(
            "DELETE FROM frames WHERE id IN (SELECT id FROM frames"
            " WHERE id NOT IN (SELECT value FROM json_each(?)) ORDER BY id LIMIT ?)"
            " RETURNING points"
        ),
        # Frames are expanded point by point in Python (`_frames_to_dead_letters`).
        to_dead_letters="",
    ),
    Kind.EVENTS: _Sql(
        select_after=(
            "SELECT id, device, event_id, params, ts_ms FROM events"
            " WHERE id > ? ORDER BY id LIMIT ?"
        ),
        select_live=(
            "SELECT id, device, event_id, params, ts_ms FROM events"
            " WHERE id > ? AND ts_ms >= ? ORDER BY id LIMIT ?"
        ),
        select_after_excluding=(
            "SELECT id, device, event_id, params, ts_ms FROM events WHERE id > ?"
            " AND device NOT IN (SELECT value FROM json_each(?)) ORDER BY id LIMIT ?"
        ),
        select_live_excluding=(
            "SELECT id, device, event_id, params, ts_ms FROM events WHERE id > ? AND ts_ms >= ?"
            " AND device NOT IN (SELECT value FROM json_each(?)) ORDER BY id LIMIT ?"
        ),
        delete_by_id="DELETE FROM events WHERE id = ?",
        delete_json_ids="DELETE FROM events WHERE id IN (SELECT value FROM json_each(?))",
        delete_oldest=(
            "DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY id LIMIT ?) RETURNING 1"
        ),
        delete_oldest_except=(
            "DELETE FROM events WHERE id IN (SELECT id FROM events"
            " WHERE id NOT IN (SELECT value FROM json_each(?)) ORDER BY id LIMIT ?)"
            " RETURNING 1"
        ),
        to_dead_letters=(
            "INSERT INTO dead_letters (kind, row_id, device, name, value, quality, params,"
            " ts_ms, code, message, failed_ms)"
            " SELECT 'events', id, device, event_id, NULL, NULL, params, ts_ms, ?, ?, ?"
            " FROM events WHERE id IN (SELECT value FROM json_each(?)) ORDER BY id"
        ),
    ),
}
_TABLE = {Kind.SAMPLES: "frames", Kind.EVENTS: "events"}
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
_UPDATE_FRAME = "UPDATE frames SET points = ?, body = ? WHERE id = ?"
_SET_META = (
    "INSERT INTO meta (key, value) VALUES (?, ?)"
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value"
)
_TRIM_DEAD_LETTERS = (
    "DELETE FROM dead_letters WHERE id IN"
    " (SELECT id FROM dead_letters ORDER BY id DESC LIMIT -1 OFFSET ?)"
)


@dataclass(frozen=True, slots=True)
class Counts:
    """Cheap figures from memory (no table scan), for status lines and metrics.

    Sample figures count points; `frames` and `in_flight_frames` count rows.
    """

    samples: int
    events: int
    dead_letters: int
    in_flight_samples: int
    in_flight_events: int
    dropped_samples: int
    dropped_events: int
    file_bytes: int
    frames: int = 0
    in_flight_frames: int = 0
    unsendable_samples: int = 0
    appended_samples: int = 0  # points committed since the file was created (v3)


def _is_disk_full(exc: BaseException) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == _SQLITE_FULL


class SpoolStore:
    """The SQLite spool (synchronous; one thread). Open it with `open` or `from_config`."""

    def __init__(
        self,
        conn: sqlite3.Connection,
        path: Path,
        *,
        max_bytes: int,
        synchronous: SyncMode,
        dead_letter_limit: int = DEAD_LETTER_LIMIT,
        encoder: FrameEncoder | None = None,
    ) -> None:
        self._conn = conn
        self._encoder = encoder or FrameEncoder()
        self._path = path
        self._synchronous = synchronous
        self._relax_acks = synchronous in (SyncMode.FULL, SyncMode.EXTRA)
        self._dead_letter_limit = dead_letter_limit
        self._max_bytes = max_bytes
        self._budget = Budget(max_bytes)
        self._excluded: dict[tuple[Kind, _Mode], frozenset[str]] = {}
        self._in_flight: dict[Kind, dict[int, _Mode]] = {kind: {} for kind in Kind}
        self._cursors: dict[tuple[Kind, _Mode], int] = {}
        self._rows: dict[Kind, int] = dict.fromkeys(Kind, 0)  # frames and events
        self._points = 0  # points in all frames
        self._flight_points: dict[int, int] = {}  # frame id in flight -> its points
        self._dead_letters = 0
        self._dropped: dict[str, int] = {}
        # Rows lost while the file could not be written: counted, persisted when possible.
        self._unpersisted: dict[str, int] = {}
        self._dropped_dirty = False
        self._committed = False  # set by `_persist_dropped` inside a transaction
        self._episodes: dict[str, int] = {}  # open trouble episode -> rows dropped in it
        # While the disk is full: the most bytes of data pages (the file may not grow).
        self._disk_high: int | None = None
        # Until the reserve is known the WAL is kept at its full-disk size (`_wal_limit`).
        self._reserve_bytes = 0
        # Rows the cloud accepted whose delete failed on a full disk: kept in flight (not
        # sent again by this run) and deleted with the next ack (`ack`).
        self._unsettled: dict[Kind, dict[int, None]] = {kind: {} for kind in Kind}
        self._configure()
        self._load_state()
        self._enforce_cap_at_open()
        self._reserve_bytes = self._init_reserve()
        self._apply_wal_limit()

    # -- opening and closing ---------------------------------------------------------

    @classmethod
    def open(
        cls,
        path: Path | str,
        *,
        max_bytes: int = 256 << 20,
        synchronous: SyncMode = SyncMode.FULL,
        check: bool = True,
        dead_letter_limit: int = DEAD_LETTER_LIMIT,
        quality_points: Collection[tuple[str, str]] = (),
    ) -> SpoolStore:
        """Open or create the spool at `path`; a corrupt file is moved aside first.

        `check` runs `PRAGMA quick_check` (reads every page once; about 30 ms per 10 MB
        here) so damage is found at start, not in the middle of a drain.
        `quality_points` are the (device, measurepoint) pairs whose model enables EnOS'
        quality indicator (`frames.quality_points(config)`): frames shape values with it.
        A spool that cannot be written (read-only file or directory, a lock, an I/O error)
        raises `openerror.SpoolOpenError`, which names the file, the cause and the fix.
        """
        path = Path(path)
        encoder = FrameEncoder(quality_points)
        conn: sqlite3.Connection | None = None
        try:
            conn = files.open_or_replace(path, synchronous, check=check, encoder=encoder)
            return cls(
                conn,
                path,
                max_bytes=max_bytes,
                synchronous=synchronous,
                dead_letter_limit=dead_letter_limit,
                encoder=encoder,
            )
        except (OSError, sqlite3.Error) as exc:
            if conn is not None:
                conn.close()
            if files.is_corruption(exc):
                raise
            # Read-only, locked, I/O error: a fresh file would not help. Say which file,
            # why, and what fixes it (SQLite's own message names neither).
            raise openerror.explain(path, exc) from exc

    @classmethod
    def from_config(
        cls,
        config: SpoolConfig,
        *,
        check: bool = True,
        quality_points: Collection[tuple[str, str]] = (),
    ) -> SpoolStore:
        """Open the spool the config describes (see `open` for `quality_points`)."""
        return cls.open(
            config.path,
            max_bytes=config.max_bytes,
            synchronous=config.synchronous,
            check=check,
            quality_points=quality_points,
        )

    def set_quality_points(self, quality_points: Collection[tuple[str, str]]) -> None:
        """Shape the values of later appends with new quality settings (config reload)."""
        self._encoder = FrameEncoder(quality_points)

    def close(self) -> None:
        """Close the connection (SQLite checkpoints and removes the WAL).

        Delivered rows whose delete failed on a full disk get one more try first.
        """
        for kind in Kind:
            if self._unsettled[kind]:
                self.ack(kind, ())
        self._conn.close()

    @property
    def path(self) -> Path:
        """The spool file."""
        return self._path

    @property
    def budget(self) -> Budget:
        """How the byte cap is split (for tests and stats)."""
        return self._budget

    def _configure(self) -> None:
        page_size: int = self._conn.execute("PRAGMA page_size").fetchone()[0]
        self._budget = Budget(self._max_bytes, page_size)
        self._apply_wal_limit()
        self._conn.execute("PRAGMA busy_timeout = 5000")

    def _wal_limit(self) -> int:
        """WAL bytes between checkpoints: the budget's, but at most half the reserve.

        A checkpoint copies the WAL's pages into the database file, which grows by up to
        the WAL's size, and until it has the WAL cannot be reset: nothing, not even the
        delete of a delivered row, can be written. A WAL sized by the byte cap alone
        (up to 4 MiB) could fill a small disk by itself and then never be checkpointed.
        Held below the reserve, releasing the reserve always makes room to checkpoint.
        While the disk is full (or there is no reserve) the WAL stays at a few pages.
        """
        floor = _FULL_DISK_WAL_PAGES * self._budget.page_size
        if self._disk_high is not None:
            return floor
        return max(floor, min(self._budget.wal_limit, self._reserve_bytes // 2))

    def _apply_wal_limit(self) -> None:
        limit = self._wal_limit()
        pages = max(1, limit // self._budget.page_size)
        self._conn.execute(f"PRAGMA wal_autocheckpoint = {pages}")
        self._conn.execute(f"PRAGMA journal_size_limit = {limit}")

    def _load_state(self) -> None:
        """(Re)build the in-memory mirrors from the file; in-flight state starts empty."""
        conn = self._conn
        self._in_flight = {kind: {} for kind in Kind}
        self._unsettled = {kind: {} for kind in Kind}
        self._flight_points = {}
        self._cursors = {}
        self._rows[Kind.EVENTS] = conn.execute("SELECT COUNT(*) FROM events").fetchone()[0]
        frames, points = conn.execute("SELECT COUNT(*), TOTAL(points) FROM frames").fetchone()
        self._rows[Kind.SAMPLES], self._points = frames, int(points)
        self._dead_letters = conn.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0]
        self._dropped = {
            key: int(stats.read_meta(conn, key) or 0) + self._unpersisted.get(key, 0)
            for key in (
                *stats.META_DROPPED.values(),
                stats.META_DROPPED_DEAD_LETTERS,
                stats.META_UNSENDABLE,
                stats.META_APPENDED,
            )
        }
        self._dropped_dirty = bool(self._unpersisted)

    def _recover(self, exc: BaseException) -> None:
        """The file turned out corrupt while running: move it aside, start afresh."""
        try:
            self._conn.close()
        except sqlite3.Error:
            log.debug("closing the corrupt spool failed", exc_info=True)
        files.move_aside(self._path, f"{type(exc).__name__}: {exc}")
        self._conn = files.connect(
            self._path, self._synchronous, check=False, encoder=self._encoder
        )
        self._configure()
        self._load_state()

    # -- transactions ----------------------------------------------------------------

    @contextmanager
    def _relaxed(self) -> Iterator[None]:
        """Commit without fsync inside the block (for idempotent bookkeeping)."""
        if not self._relax_acks:
            yield
            return
        self._conn.execute("PRAGMA synchronous = NORMAL")
        try:
            yield
        finally:
            self._conn.execute(f"PRAGMA synchronous = {self._synchronous.value.upper()}")

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._conn.execute("BEGIN IMMEDIATE")
        self._committed = False
        try:
            yield
            self._conn.execute("COMMIT")
        except BaseException:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
            raise
        if self._committed:  # the dropped counters are in the file now
            self._unpersisted = {}

    # -- writing ---------------------------------------------------------------------

    def append(
        self,
        samples: Sequence[Sample],
        events: Sequence[Event] = (),
        now_ms: int | None = None,
        blocks: Sequence[SampleBlock] = (),
    ) -> None:
        """Commit `samples`, `blocks` and `events` in ONE transaction; never raises.

        `now_ms`, when given, is kept as the time of the last append (shown by `stats`).
        On a full disk the oldest rows make room (one retry); a corrupt file is replaced.
        Whatever still cannot be written is counted as dropped and logged once per episode.
        """
        if not samples and not events and not blocks:
            return
        try:
            self._append_once(samples, events, now_ms, blocks)
        except sqlite3.Error as exc:
            self._append_failed(exc, samples, events, now_ms, blocks)
        else:
            if self._disk_high is not None and self._disk_has_room():
                self._end_episode("disk_full", "the disk has room again: spooling normally")
            self._end_episode("write_error", "spool writes succeed again")

    def _append_failed(
        self,
        exc: sqlite3.Error,
        samples: Sequence[Sample],
        events: Sequence[Event],
        now_ms: int | None,
        blocks: Sequence[SampleBlock],
    ) -> None:
        points = len(samples) + sum(block.points for block in blocks)
        self._load_state_after_rollback()
        if files.is_corruption(exc):
            self._recover(exc)
        elif _is_disk_full(exc):
            self._start_episode(
                "disk_full",
                "disk full: dropping the oldest spooled rows to keep spooling",
                path=str(self._path),
            )
            self._free_disk(points + len(events))
        else:
            self._start_episode(
                "write_error", "spool write failed", error=f"{type(exc).__name__}: {exc}"
            )
            self._count_lost(points, len(events))
            return
        try:
            self._append_once(samples, events, now_ms, blocks)
        except sqlite3.Error as again:
            self._load_state_after_rollback()
            self._start_episode(
                "write_error", "spool write failed", error=f"{type(again).__name__}: {again}"
            )
            self._count_lost(points, len(events))

    def _load_state_after_rollback(self) -> None:
        # Counters moved inside the failed transaction; the file is the truth. Keep the
        # in-flight set: those rows were not touched by the rolled-back append.
        in_flight, cursors, flight = self._in_flight, self._cursors, self._flight_points
        unsettled = self._unsettled
        try:
            self._load_state()
        except sqlite3.Error:
            log.debug("reloading spool state failed", exc_info=True)
        self._in_flight, self._cursors, self._flight_points = in_flight, cursors, flight
        self._unsettled = unsettled

    def _count_lost(self, points: int, events: int) -> None:
        """Values that could not be written at all count as dropped (persisted later)."""
        for kind, lost in ((Kind.SAMPLES, points), (Kind.EVENTS, events)):
            key = stats.META_DROPPED[kind]
            self._dropped[key] += lost
            self._unpersisted[key] = self._unpersisted.get(key, 0) + lost
        self._dropped_dirty = True
        self._episodes["write_error"] = (
            self._episodes.get("write_error", 0) + points + events
        )

    def _free_disk(self, incoming: int) -> None:
        """Make room on a full disk, then keep the data from growing until it has room.

        WAL mode needs free blocks even to delete (the WAL grows) and to checkpoint (the
        database file grows), so the reserve file goes first; then the WAL is folded into
        the database and truncated, and the oldest rows are dropped. Their pages are
        reused by the next appends, so from here on the data is held to the size it has
        now (`_disk_high`) until the disk has room for the reserve again.
        """
        self._release_space()
        total = self._rows[Kind.SAMPLES] + self._rows[Kind.EVENTS]
        want = max(2 * incoming, total // 16, 1)
        try:
            with self._transaction():
                self._drop_rows(want, "disk_full")
                self._persist_dropped()
        except sqlite3.Error:
            self._load_state_after_rollback()
            log.debug("dropping rows on a full disk failed", exc_info=True)
        self._checkpoint_truncate()
        self._hold_data()

    def _release_space(self) -> None:
        """On a full disk: give up the reserve, shrink the WAL limit, truncate the WAL.

        The WAL is held below half the reserve (`_wal_limit`), so with the reserve gone
        the checkpoint has room to copy it into the database file.
        """
        files.release_reserve(self._path)
        # Keep the WAL small while the disk is full: it must not eat the freed space.
        floor = _FULL_DISK_WAL_PAGES * self._budget.page_size
        self._conn.execute(f"PRAGMA wal_autocheckpoint = {_FULL_DISK_WAL_PAGES}")
        self._conn.execute(f"PRAGMA journal_size_limit = {floor}")
        self._checkpoint_truncate()

    def _hold_data(self) -> None:
        """Keep the data pages at the size they have now until the disk has room."""
        try:
            pages, _ = self._pages()
            used = self._used_bytes()
        except sqlite3.Error:
            log.debug("reading the page counts on a full disk failed", exc_info=True)
            return
        # Free pages inside the file are reused before it grows: the data may fill them.
        self._disk_high = max(used, (pages - 4) * self._budget.page_size)
        self._apply_wal_limit()

    def _checkpoint_truncate(self) -> None:
        try:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error:
            log.debug("checkpoint on a full disk failed", exc_info=True)

    _MIN_RESERVE = 64 * 1024

    def _init_reserve(self) -> int:
        """Keep a reserve of the budgeted size, or a quarter of the free space if smaller."""
        existing = files.reserve_size(self._path)
        free = files.free_bytes(self._path.parent) + existing
        wanted = min(self._budget.reserve_bytes, free // 4)
        if wanted < self._MIN_RESERVE:
            files.release_reserve(self._path)
            log.warning("no room on the disk for the spool's reserve file", path=str(self._path))
            return 0
        if existing != wanted:
            files.release_reserve(self._path)
            files.make_reserve(self._path, wanted)
        return wanted

    def _disk_has_room(self) -> bool:
        """While the disk was full: is there room for the reserve again? (Then it is made.)"""
        if self._reserve_bytes:
            if not files.make_reserve(self._path, self._reserve_bytes):
                return False
        elif files.free_bytes(self._path.parent) < 2 * self._budget.wal_limit:
            return False
        self._disk_high = None
        self._apply_wal_limit()  # the normal WAL limits again
        return True

    def _append_once(
        self,
        samples: Sequence[Sample],
        events: Sequence[Event],
        now_ms: int | None,
        blocks: Sequence[SampleBlock],
    ) -> None:
        frames, unsendable = (
            self._encoder.encode(samples, blocks) if samples or blocks else ([], 0)
        )
        event_rows = [
            (e.device, e.event_id, json.dumps(e.params, separators=(",", ":")), e.ts_ms)
            for e in events
        ]
        points = sum(frame.points for frame in frames)
        with self._transaction():
            self._make_room(len(frames) + len(event_rows))
            if frames:
                self._conn.executemany(_INSERT_FRAME, frames)
            if event_rows:
                self._conn.executemany(_INSERT_EVENT, event_rows)
            self._rows[Kind.SAMPLES] += len(frames)
            self._points += points
            # Every point ever committed, for loss accounting (frame ids count frames).
            self._dropped[stats.META_APPENDED] += points
            self._dropped_dirty = True
            self._rows[Kind.EVENTS] += len(event_rows)
            if unsendable:
                self._dropped[stats.META_UNSENDABLE] += unsendable
                self._dropped_dirty = True
            self._enforce_cap()
            if now_ms is not None:
                self._conn.execute(_SET_META, (stats.META_LAST_APPEND, str(now_ms)))
            if self._dropped_dirty:
                self._persist_dropped()

    # -- byte cap --------------------------------------------------------------------

    def _pages(self) -> tuple[int, int]:
        """(pages in the file, free pages), as the current transaction sees them."""
        total: int = self._conn.execute("PRAGMA page_count").fetchone()[0]
        free: int = self._conn.execute("PRAGMA freelist_count").fetchone()[0]
        return total, free

    def _used_bytes(self) -> int:
        total, free = self._pages()
        return (total - free) * self._budget.page_size

    def _row_bytes(self, used: int) -> float:
        rows = self._rows[Kind.SAMPLES] + self._rows[Kind.EVENTS]
        return used / rows if rows else _DEFAULT_ROW_BYTES

    def _data_high(self) -> int:
        if self._disk_high is None:
            return self._budget.data_high
        return min(self._disk_high, self._budget.data_high)

    def _drop_chunk(self, high: int) -> int:
        # Below a disk-limited high mark the cap's chunk could be the whole spool.
        return min(self._budget.drop_chunk, high // 8)

    def _make_room(self, incoming: int) -> None:
        """Drop oldest rows now if `incoming` rows would take the data past the budget."""
        used = self._used_bytes()
        per_row = self._row_bytes(used)
        projected = used + incoming * per_row
        high = self._data_high()
        if projected <= high:
            if used < self._budget.low_water:
                self._end_episode("cap", "spool below its low-water mark: no longer dropping")
            return
        excess = projected - high + self._drop_chunk(high)
        self._drop_rows(
            math.ceil(excess / per_row), "cap" if high == self._budget.data_high else "disk_full"
        )

    def _enforce_cap(self) -> None:
        """After inserting: if the estimate was short, drop until the data fits."""
        for _ in range(_MAX_DROP_ROUNDS):
            used = self._used_bytes()
            high = self._data_high()
            if used <= high:
                return
            excess = used - high + self._drop_chunk(high)
            reason = "cap" if high == self._budget.data_high else "disk_full"
            if not self._drop_rows(math.ceil(excess / self._row_bytes(used)), reason):
                return  # nothing droppable is left (all in flight)

    def _drop_rows(self, count: int, reason: str) -> int:
        """Delete up to `count` oldest rows not in flight, frames first; count their points."""
        dropped = lost = 0
        for kind in Kind:  # samples, then events
            if dropped >= count:
                break
            sql = _SQL[kind]
            in_flight = self._in_flight[kind]
            if in_flight:
                cursor = self._conn.execute(
                    sql.delete_oldest_except, (json.dumps(list(in_flight)), count - dropped)
                )
            else:
                cursor = self._conn.execute(sql.delete_oldest, (count - dropped,))
            # Each deleted row returns its points (frames) or 1 (events).
            weights = [weight for (weight,) in cursor.fetchall()]
            lost += sum(weights)
            self._rows[kind] -= len(weights)
            if kind is Kind.SAMPLES:
                self._points -= sum(weights)
            self._dropped[stats.META_DROPPED[kind]] += sum(weights)
            dropped += len(weights)
        if dropped:
            self._dropped_dirty = True
            if reason == "cap":
                self._start_episode(
                    "cap",
                    "spool full: dropping the oldest rows",
                    max_bytes=self._max_bytes,
                    path=str(self._path),
                )
            self._episodes[reason] = self._episodes.get(reason, 0) + lost
        return dropped

    def _persist_dropped(self) -> None:
        self._conn.executemany(_SET_META, [(k, str(v)) for k, v in self._dropped.items()])
        self._dropped_dirty = False
        self._committed = True

    def _start_episode(self, name: str, message: str, **fields: object) -> None:
        if name not in self._episodes:
            self._episodes[name] = 0
            log.warning(message, **fields)

    def _end_episode(self, name: str, message: str) -> None:
        if name in self._episodes:
            log.info(message, dropped_rows=self._episodes.pop(name))

    def _enforce_cap_at_open(self) -> None:
        """A file over its budget (e.g. the cap was lowered) is trimmed and shrunk at once.

        On a full disk trimming or shrinking can fail; the spool still opens (the rows are
        intact) so the daemon can run and drain it, instead of failing in a restart loop.
        """
        try:
            if self._used_bytes() > self._budget.data_high:
                with self._transaction():
                    self._enforce_cap()
                    self._persist_dropped()
            self.reclaim(max_pages=None)
        except sqlite3.OperationalError as exc:
            if not _is_disk_full(exc):
                raise
            log.warning(
                "disk full: spool opened without trimming or shrinking it",
                path=str(self._path),
                error=str(exc),
            )

    def reclaim(self, max_pages: int | None = 0) -> int:
        """Give free pages back to the disk when there are many; returns pages freed.

        `max_pages=0` uses the budget's bounded step (what `ack` does), `None` frees all.
        Once the free pages are gone the WAL is checkpointed and truncated, so the files
        on disk really shrink.
        """
        _, free = self._pages()
        if free * self._budget.page_size < self._budget.vacuum_threshold and max_pages == 0:
            return 0
        step = self._budget.vacuum_step_pages if max_pages == 0 else max_pages
        with self._relaxed():
            pages = "" if step is None else f"({step})"
            # executescript steps the pragma to the end; execute() would free one page
            # (the pragma returns no columns, so sqlite3 stops after the first step).
            self._conn.executescript(f"PRAGMA incremental_vacuum{pages};")
            _, left = self._pages()
            if left * self._budget.page_size < self._budget.vacuum_threshold:
                self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        return free - left

    # -- delivery: take, ack, release, dead-letter -------------------------------------

    def take_frames(
        self,
        limit: int,
        *,
        older_than_ms: int | None = None,
        newer_than_ms: int | None = None,
        exclude_devices: Collection[str] = (),
    ) -> list[SpooledFrame]:
        """Begin: the oldest `limit` frames not in flight, which are now in flight.

        `newer_than_ms` selects live rows (`ts_ms >= newer_than_ms`), `older_than_ms` the
        backlog (`ts_ms < older_than_ms`); neither selects all rows. Not both.
        `exclude_devices` holds rows of devices the cloud refuses for now: they stay in
        the spool, untouched, and come out again once the device is no longer excluded.
        """
        rows = self._take(Kind.SAMPLES, limit, older_than_ms, newer_than_ms, exclude_devices)
        flight = self._flight_points
        frames = []
        for row_id, device, points, body, ts_ms in rows:
            flight[row_id] = points
            frames.append(SpooledFrame(row_id, device, ts_ms, points, body))
        return frames

    def take_events(
        self,
        limit: int,
        *,
        older_than_ms: int | None = None,
        newer_than_ms: int | None = None,
        exclude_devices: Collection[str] = (),
    ) -> list[SpooledEvent]:
        """Begin: the oldest `limit` events not in flight (filters as `take_samples`)."""
        rows = self._take(Kind.EVENTS, limit, older_than_ms, newer_than_ms, exclude_devices)
        return [
            SpooledEvent(row_id, device, event_id, json.loads(params), ts_ms)
            for row_id, device, event_id, params, ts_ms in rows
        ]

    def _take(
        self,
        kind: Kind,
        limit: int,
        older_than_ms: int | None,
        newer_than_ms: int | None,
        exclude_devices: Collection[str] = (),
    ) -> list[tuple[Any, ...]]:
        if older_than_ms is not None and newer_than_ms is not None:
            raise ValueError("take: give older_than_ms or newer_than_ms, not both")
        if limit <= 0:
            return []
        if newer_than_ms is not None:
            mode = _Mode.LIVE
        elif older_than_ms is not None:
            mode = _Mode.BACKLOG
        else:
            mode = _Mode.ALL
        in_flight = self._in_flight[kind]
        excluded = frozenset(exclude_devices)
        # Excluded rows are skipped in SQL, so the cursor may pass them: when a device is
        # no longer excluded, start this mode's scan over so its rows are found again.
        if self._excluded.get((kind, mode), frozenset()) - excluded:
            self._cursors.pop((kind, mode), None)
        self._excluded[(kind, mode)] = excluded
        cursor = self._cursors.get((kind, mode), 0)
        # In-flight rows above the cursor are skipped in Python, so fetch that many more.
        window = limit + len(in_flight)
        sql = _SQL[kind]
        if excluded:
            held = json.dumps(sorted(excluded))
            if mode is _Mode.LIVE:
                args: tuple[Any, ...] = (cursor, newer_than_ms, held, window)
                rows = self._conn.execute(sql.select_live_excluding, args).fetchall()
            else:
                rows = self._conn.execute(
                    sql.select_after_excluding, (cursor, held, window)
                ).fetchall()
        elif mode is _Mode.LIVE:
            rows = self._conn.execute(sql.select_live, (cursor, newer_than_ms, window)).fetchall()
        else:
            rows = self._conn.execute(sql.select_after, (cursor, window)).fetchall()
        taken: list[tuple[Any, ...]] = []
        # The cursor may pass only rows this mode need never see again: rows in flight
        # and rows handed out now; a backlog take must not pass a (not yet old) live row.
        contiguous = True
        for row in rows:
            row_id = row[0]
            if row_id in in_flight:
                if contiguous:
                    cursor = row_id
                continue
            if mode is _Mode.BACKLOG and row[-1] >= older_than_ms:
                contiguous = False
                continue
            taken.append(row)
            in_flight[row_id] = mode
            if contiguous:
                cursor = row_id
            if len(taken) == limit:
                break
        self._cursors[(kind, mode)] = cursor
        return taken

    def _owned(self, kind: Kind, ids: Iterable[int]) -> list[int]:
        in_flight = self._in_flight[kind]
        return [row_id for row_id in ids if row_id in in_flight]

    def ack(self, kind: Kind, ids: Iterable[int]) -> int:
        """Commit: delete rows EnOS accepted; returns how many were deleted.

        Ids not in flight are ignored. On a full disk the reserve is released, the WAL
        checkpointed and truncated, and the delete tried once more. If it still fails the
        rows stay in the spool and in flight ("unsettled": this run does not send them
        again), a warning says so once per episode, 0 is returned, and every later ack
        deletes them first (so the count it returns includes them); only a restart before
        that sends them again (harmless duplicates: EnOS keys data by device, point, time).
        """
        unsettled = self._unsettled[kind]
        mine = self._owned(kind, dict.fromkeys([*unsettled, *ids]))
        if not mine:
            return 0
        try:
            deleted = self._delete(kind, mine)
        except sqlite3.Error as exc:
            if files.is_corruption(exc):
                self._recover(exc)
                return 0
            if not _is_disk_full(exc):
                raise
            retried = self._delete_on_full_disk(kind, mine)
            if retried is None:
                return 0
            deleted = retried
        if "ack_full" in self._episodes:
            log.info(
                "delivered rows deleted again: the spool shrinks",
                rows=self._episodes.pop("ack_full"),
            )
        unsettled.clear()
        points = self._land(kind, mine)
        if kind is Kind.SAMPLES:
            self._points -= points
        self._rows[kind] -= deleted
        self._after_delete()
        return deleted

    def _delete(self, kind: Kind, ids: list[int]) -> int:
        with self._relaxed(), self._transaction():
            deleted: int = self._conn.executemany(
                _SQL[kind].delete_by_id, [(row_id,) for row_id in ids]
            ).rowcount
        return deleted

    def _delete_on_full_disk(self, kind: Kind, ids: list[int]) -> int | None:
        """Make room (reserve, WAL) and delete once more; None if the disk is still full."""
        self._release_space()
        if self._disk_high is None:
            self._hold_data()  # appends must not take back the room deletes need
        try:
            return self._delete(kind, ids)
        except sqlite3.Error as exc:
            if files.is_corruption(exc):
                self._recover(exc)
                return None
            if not _is_disk_full(exc):
                raise
        self._unsettled[kind].update(dict.fromkeys(ids))
        if "ack_full" not in self._episodes:
            log.warning(
                "disk full: cannot delete delivered rows; they stay in the spool and are"
                " deleted with the next ack (a restart before then sends them again)",
                rows=len(ids),
                path=str(self._path),
            )
        self._episodes["ack_full"] = sum(len(rows) for rows in self._unsettled.values())
        return None

    def _write_making_room(self, write: Callable[[], _T]) -> _T | None:
        """Run the transaction `write`; on a full disk make room (reserve, WAL) and run
        it once more. None if the disk is still full (the counters are reloaded)."""
        for attempt in range(2):
            try:
                done = write()
            except sqlite3.Error as exc:
                if not _is_disk_full(exc):
                    raise
                self._load_state_after_rollback()
            else:
                if "settle_full" in self._episodes:
                    del self._episodes["settle_full"]
                    log.info("rejected rows are settled again")
                return done
            if attempt == 0:
                self._release_space()
                if self._disk_high is None:
                    self._hold_data()
        return None

    def _cannot_settle(self, kind: Kind, ids: list[int], what: str) -> None:
        """A full disk kept rows from being settled: they go back to the pool (sent, and
        settled, again later); warned once per episode."""
        self.release(kind, ids)
        if "settle_full" not in self._episodes:
            self._episodes["settle_full"] = 0
            log.warning(
                "disk full: cannot settle rejected rows; they stay in the spool and are sent again",
                action=what,
                rows=len(ids),
                path=str(self._path),
            )

    def _land(self, kind: Kind, ids: Iterable[int]) -> int:
        """Rows leave the in-flight set; returns the points (frames) or rows they held."""
        in_flight = self._in_flight[kind]
        if kind is Kind.EVENTS:
            count = 0
            for row_id in ids:
                del in_flight[row_id]
                count += 1
            return count
        flight, points = self._flight_points, 0
        for row_id in ids:
            del in_flight[row_id]
            points += flight.pop(row_id)
        return points

    def release(self, kind: Kind, ids: Iterable[int]) -> int:
        """Rollback: rows not delivered go back to the pool (oldest first again)."""
        in_flight = self._in_flight[kind]
        released = [(row_id, in_flight.pop(row_id)) for row_id in self._owned(kind, ids)]
        for row_id, _ in released:
            self._unsettled[kind].pop(row_id, None)
        if kind is Kind.SAMPLES:
            for row_id, _ in released:
                del self._flight_points[row_id]
        if released:
            self._rewind(kind, released)
        return len(released)

    def release_all(self) -> int:
        """Every row in flight goes back to the pool (e.g. the connection was lost).

        Unsettled rows (delivered, delete failed on a full disk) stay in flight: they are
        not sent again, only deleted by the next ack.
        """
        count = 0
        for kind in Kind:
            in_flight = self._in_flight[kind]
            kept = {row_id: in_flight[row_id] for row_id in self._unsettled[kind]}
            count += len(in_flight) - len(kept)
            self._in_flight[kind] = kept
        unsettled = self._unsettled[Kind.SAMPLES]
        self._flight_points = {
            row_id: points for row_id, points in self._flight_points.items() if row_id in unsettled
        }
        self._cursors = {}
        return count

    def _rewind(self, kind: Kind, released: list[tuple[int, _Mode]]) -> None:
        below = min(row_id for row_id, _ in released) - 1
        modes = {_Mode.ALL, _Mode.BACKLOG}
        # A row taken as backlog can never be live again (its time only gets older), so
        # only a row taken live or unfiltered rewinds the live cursor.
        if any(mode is not _Mode.BACKLOG for _, mode in released):
            modes.add(_Mode.LIVE)
        for mode in modes:
            key = (kind, mode)
            if key in self._cursors:
                self._cursors[key] = min(self._cursors[key], below)

    def dead_letter(
        self, kind: Kind, ids: Iterable[int], code: int, message: str, now_ms: int
    ) -> int:
        """Move rejected rows to the dead-letter table atomically; returns values moved
        (the points of the frames, or the events).

        A frame becomes one dead letter per point. The table keeps the newest
        `dead_letter_limit` entries; older ones are dropped and counted, so a point
        rejected forever cannot fill the disk.
        """
        mine = self._owned(kind, ids)
        if not mine:
            return 0
        ids_json = json.dumps(mine)
        sql = _SQL[kind]

        def move() -> tuple[int, int, int]:
            with self._relaxed(), self._transaction():
                if kind is Kind.SAMPLES:
                    moved = self._frames_to_dead_letters(ids_json, code, message, now_ms)
                else:
                    self._conn.execute(sql.to_dead_letters, (code, message, now_ms, ids_json))
                deleted: int = self._conn.execute(sql.delete_json_ids, (ids_json,)).rowcount
                if kind is Kind.EVENTS:
                    moved = deleted
                trimmed = self._trim_dead_letters()
            return moved, deleted, trimmed

        done = self._write_making_room(move)
        if done is None:
            self._cannot_settle(kind, mine, "cannot move rejected rows to the dead letters")
            return 0
        moved, deleted, trimmed = done
        self._land(kind, mine)
        self._rows[kind] -= deleted
        if kind is Kind.SAMPLES:
            self._points -= moved
        self._dead_letters += moved - trimmed
        self._after_delete()
        return moved

    def _frames_to_dead_letters(self, ids_json: str, code: int, message: str, now_ms: int) -> int:
        """Insert one dead letter per point of the frames; returns the points."""
        rows = []
        for frame_id, device, ts_ms, body in self._conn.execute(_SELECT_FRAMES, (ids_json,)):
            for name, shaped in parse_body(body).items():
                value, quality = split_value(shaped)
                rows.append(
                    (frame_id, device, name, _encode(value), quality, ts_ms, code, message, now_ms)
                )
        self._conn.executemany(_INSERT_DEAD_POINT, rows)
        return len(rows)

    def _trim_dead_letters(self) -> int:
        trimmed: int = self._conn.execute(_TRIM_DEAD_LETTERS, (self._dead_letter_limit,)).rowcount
        if trimmed:
            self._dropped[stats.META_DROPPED_DEAD_LETTERS] += trimmed
            self._persist_dropped()
        return trimmed

    def rewrite_frame(
        self,
        frame_id: int,
        delivered: Collection[str],
        dead: Mapping[str, tuple[int, str]],
        now_ms: int,
    ) -> SpooledFrame | None:
        """Settle some points of one frame in flight (the rare, per-point path).

        `delivered` points are removed (EnOS accepted them), `dead` points
        (name → (code, message)) move to the dead letters; the rest stays in the frame,
        which stays in flight and is returned, or None when nothing is left (the frame is
        deleted, as an ack would). Not in flight: nothing happens, None.
        """
        if frame_id not in self._in_flight[Kind.SAMPLES]:
            return None
        row = self._conn.execute(_SELECT_FRAMES, (json.dumps([frame_id]),)).fetchone()
        if row is None:
            return None
        _, device, ts_ms, body = row
        points = parse_body(body)
        letters = []
        for name, (code, message) in dead.items():
            if name in points:
                value, quality = split_value(points.pop(name))
                letters.append(
                    (frame_id, device, name, _encode(value), quality, ts_ms, code, message, now_ms)
                )
        gone = [name for name in delivered if name in points]
        for name in gone:
            del points[name]
        removed = len(letters) + len(gone)
        new_body = encode_body(points) if points else ""

        def rewrite() -> int:
            with self._relaxed(), self._transaction():
                if letters:
                    self._conn.executemany(_INSERT_DEAD_POINT, letters)
                if points:
                    self._conn.execute(_UPDATE_FRAME, (len(points), new_body, frame_id))
                else:
                    self._conn.execute(_SQL[Kind.SAMPLES].delete_by_id, (frame_id,))
                return self._trim_dead_letters() if letters else 0

        done = self._write_making_room(rewrite)
        if done is None:
            self._cannot_settle(Kind.SAMPLES, [frame_id], "cannot rewrite a settled frame")
            return None
        trimmed = done
        self._points -= removed
        self._dead_letters += len(letters) - trimmed
        if not points:
            self._land(Kind.SAMPLES, [frame_id])
            self._rows[Kind.SAMPLES] -= 1
            self._after_delete()
            return None
        self._flight_points[frame_id] = len(points)
        return SpooledFrame(frame_id, device, ts_ms, len(points), new_body)

    def _after_delete(self) -> None:
        if "cap" in self._episodes and self._used_bytes() < self._budget.low_water:
            self._end_episode("cap", "spool below its low-water mark: no longer dropping")
        try:
            self.reclaim()
        except sqlite3.OperationalError as exc:
            # The rows are deleted; giving the space back waits for the next delete.
            if not _is_disk_full(exc):
                raise
            log.debug("giving free pages back failed on a full disk", exc_info=True)

    # -- reading ---------------------------------------------------------------------

    def in_flight(self, kind: Kind) -> int:
        """Rows (frames or events) of `kind` taken and not yet acked, released or
        dead-lettered."""
        return len(self._in_flight[kind])

    def counts(self) -> Counts:
        """Counts from memory (no scan) and the bytes on disk; samples count points."""
        return Counts(
            samples=self._points,
            events=self._rows[Kind.EVENTS],
            dead_letters=self._dead_letters,
            in_flight_samples=sum(self._flight_points.values()),
            in_flight_events=len(self._in_flight[Kind.EVENTS]),
            dropped_samples=self._dropped[stats.META_DROPPED[Kind.SAMPLES]],
            dropped_events=self._dropped[stats.META_DROPPED[Kind.EVENTS]],
            file_bytes=files.file_bytes(self._path),
            frames=self._rows[Kind.SAMPLES],
            in_flight_frames=len(self._in_flight[Kind.SAMPLES]),
            unsendable_samples=self._dropped[stats.META_UNSENDABLE],
            appended_samples=self._dropped[stats.META_APPENDED],
        )

    def stats(self) -> stats.SpoolStats:
        """A full snapshot (scans the file: for operators and tests, not hot paths)."""
        return stats.read_stats(
            self._conn,
            self._path,
            self._max_bytes,
            in_flight_samples=sum(self._flight_points.values()),
            in_flight_events=len(self._in_flight[Kind.EVENTS]),
        )

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The newest `limit` dead letters, newest first."""
        return stats.read_dead_letters(self._conn, limit)

    def get_meta(self, key: str) -> str | None:
        """A small persisted value (e.g. a device secret from dynamic activation)."""
        return stats.read_meta(self._conn, key)

    def set_meta(self, key: str, value: str) -> None:
        """Persist `value` under `key` durably (configured `synchronous`).

        Keys starting with `spool.` are the spool's own.
        """
        with self._transaction():
            self._conn.execute(_SET_META, (key, value))
