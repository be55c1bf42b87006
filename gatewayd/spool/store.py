"""The spool: every sample and event is committed here before it may be published.

`SpoolStore` is the synchronous core and the spool's one API; it owns one sqlite3
connection and must be used from one thread (the daemon uses
`gatewayd.spool.worker.Spool`, tests and the CLI use this class directly). It composes
small parts, each with one job:
- `sqlstore.SqlStore`: the connection and every statement (thin, no decisions);
- `ledger.DeliveryLedger`: rows in flight, take cursors, unsettled rows (pure);
- `tally.Tally`: row, point and loss counts kept in memory (pure);
- `diskguard.DiskGuard`: reserve file, WAL limit, full-disk state and its episodes;
- `writer.CycleWriter`: appends within the byte cap (drops the oldest rows);
- `settler.Settler`: acks, dead letters and partly settled frames.

Samples are stored as frames (`frames.py`): one row per (device, poll instant) holding
the pre-encoded JSON object of that device's points (values shaped as the uplink asked,
`frames.ValueShapes`), so a drain handles
rows of a hundred points, not points. Counters that operators see (`Counts.samples`,
dropped samples, dead letters) count POINTS; `Counts.frames` counts rows.

Delivery is begin/commit (Telegraf's buffer idea):
    frames = store.take_frames(500, newer_than_ms=now_ms - live_window_ms)   # begin
    ... publish, await the EnOS reply ...
    store.ack(Kind.SAMPLES, ids_accepted)           # commit: the rows are deleted
    store.release(Kind.SAMPLES, ids_to_retry)       # or: they go back to the pool
    store.dead_letter(Kind.SAMPLES, ids, code, msg, now_ms)   # or: rejected for good
    store.rewrite_frame(id, delivered, dead, now_ms)  # or: only some points of a frame
See `ledger.py` for what "in flight" means and why stale ids cannot delete rows.

Order: rows come out in spool order (`id`, the append order). Each device's samples are
appended in time order (one poller per bus), so per-device time order is preserved.
`newer_than_ms` (live: `ts_ms >= cutoff`) and `older_than_ms` (backlog: `ts_ms < cutoff`)
split the rows by sample time, as EnOS' post/resume split asks.

Durability: appends commit with the configured `synchronous` (FULL by default: one fsync
per append, i.e. per poll cycle per bus); settling commits with NORMAL (`settler.py`).
The byte cap and append failures are described in `writer.py`, the full disk in
`diskguard.py`. A corrupt file is moved aside and a fresh one started (`files.py`), at
open and when an append or ack meets corruption.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog

from gatewayd.config.models import SpoolConfig, SyncMode
from gatewayd.episodes import Episodes
from gatewayd.samples import Event, Sample, SampleBlock, Value
from gatewayd.spool import files, openerror, stats
from gatewayd.spool.budget import Budget
from gatewayd.spool.diskguard import DiskGuard
from gatewayd.spool.frames import FrameEncoder, ValueShapes
from gatewayd.spool.ledger import DeliveryLedger
from gatewayd.spool.rows import DeadLetter, Kind, SpooledEvent, SpooledFrame
from gatewayd.spool.settler import Settler
from gatewayd.spool.sqlstore import SqlStore
from gatewayd.spool.taker import Taker
from gatewayd.spool.tally import COUNTER_KEYS, Tally
from gatewayd.spool.writer import CycleWriter

log = structlog.get_logger()

DEAD_LETTER_LIMIT = 10_000


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
        self._path = path
        self._sql = SqlStore(conn, path, synchronous)
        self._ledger = DeliveryLedger()
        self._tally = Tally()
        episodes = Episodes(log)
        self._guard = DiskGuard(self._sql, path, max_bytes, episodes)
        self._writer = CycleWriter(
            self._sql,
            self._ledger,
            self._tally,
            self._guard,
            episodes,
            path=path,
            encoder=encoder or FrameEncoder(),
            reload=self._reload_counts,
            recover=self._recover,
        )
        self._settler = Settler(
            self._sql,
            self._ledger,
            self._tally,
            self._guard,
            dead_letter_limit=dead_letter_limit,
            reload=self._reload_counts,
            recover=self._recover,
            after_delete=self._writer.after_delete,
            split=self._split,
        )
        self._taker = Taker(self._sql, self._ledger)
        self._guard.configure(self._sql.configure())
        self._load_counts()
        self._writer.trim_at_open()
        self._guard.init_reserve()

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
        shapes: ValueShapes | None = None,
    ) -> SpoolStore:
        """Open or create the spool at `path`; a corrupt file is moved aside first.

        `check` runs `PRAGMA quick_check` (reads every page once; about 30 ms per 10 MB
        here) so damage is found at start, not in the middle of a drain.
        `shapes` says which points' frame values carry their quality, and how (the
        uplink's; default: plain good values only, see `frames.ValueShapes`).
        A spool that cannot be written (read-only file or directory, a lock, an I/O error)
        raises `openerror.SpoolOpenError`, which names the file, the cause and the fix.
        """
        path = Path(path)
        encoder = FrameEncoder(shapes)
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
        shapes: ValueShapes | None = None,
    ) -> SpoolStore:
        """Open the spool the config describes (see `open` for `shapes`)."""
        return cls.open(
            config.path,
            max_bytes=config.max_bytes,
            synchronous=config.synchronous,
            check=check,
            shapes=shapes,
        )

    def set_shapes(self, shapes: ValueShapes) -> None:
        """Shape the values of later appends with new quality settings (config reload)."""
        self._writer.encoder = FrameEncoder(shapes)

    def _split(self, value: object) -> tuple[Value, int]:
        return self._writer.encoder.shapes.split(value)

    def close(self) -> None:
        """Close the connection (SQLite checkpoints and removes the WAL).

        Delivered rows whose delete failed on a full disk get one more try first.
        """
        for kind in Kind:
            if self._ledger.unsettled(kind):
                self.ack(kind, ())
        self._sql.close()

    @property
    def path(self) -> Path:
        """The spool file."""
        return self._path

    @property
    def budget(self) -> Budget:
        """How the byte cap is split (for tests and stats)."""
        return self._guard.budget

    @property
    def _conn(self) -> sqlite3.Connection:
        """The live connection, for tests that break the file on purpose."""
        return self._sql.conn

    def _load_counts(self) -> None:
        """(Re)build the counters from the file."""
        self._tally.load(self._sql.count_rows(), self._sql.read_counters(COUNTER_KEYS))

    def _reload_counts(self) -> None:
        """After a rollback: counters moved inside the failed transaction; the file is
        the truth. The ledger stays: the rolled-back write did not touch rows in flight."""
        try:
            self._load_counts()
        except sqlite3.Error:
            log.debug("reloading spool state failed", exc_info=True)

    def _recover(self, exc: BaseException) -> None:
        """The file turned out corrupt while running: move it aside, start afresh."""
        try:
            self._sql.close()
        except sqlite3.Error:
            log.debug("closing the corrupt spool failed", exc_info=True)
        files.move_aside(self._path, f"{type(exc).__name__}: {exc}")
        self._sql.reconnect(self._writer.encoder)
        self._guard.configure(self._sql.configure())
        self._ledger.reset()
        self._load_counts()

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
        self._writer.append(samples, events, now_ms, blocks)

    def reclaim(self, max_pages: int | None = 0) -> int:
        """Give free pages back to the disk when there are many; returns pages freed
        (`max_pages=0`: the budget's bounded step, `None`: all); see `DiskGuard.reclaim`."""
        return self._guard.reclaim(max_pages)

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
        return self._taker.frames(limit, older_than_ms, newer_than_ms, exclude_devices)

    def take_events(
        self,
        limit: int,
        *,
        older_than_ms: int | None = None,
        newer_than_ms: int | None = None,
        exclude_devices: Collection[str] = (),
    ) -> list[SpooledEvent]:
        """Begin: the oldest `limit` events not in flight (filters as `take_frames`)."""
        return self._taker.events(limit, older_than_ms, newer_than_ms, exclude_devices)

    def ack(self, kind: Kind, ids: Iterable[int]) -> int:
        """Commit: delete rows EnOS accepted; returns how many were deleted (ids not in
        flight are ignored; a full disk keeps them "unsettled": see `Settler.ack`)."""
        return self._settler.ack(kind, ids)

    def release(self, kind: Kind, ids: Iterable[int]) -> int:
        """Rollback: rows not delivered go back to the pool (oldest first again)."""
        return self._ledger.release(kind, ids)

    def release_all(self, keep_backlog_events: bool = False) -> int:
        """Every row in flight goes back to the pool (e.g. the connection was lost).

        Unsettled rows (delivered, delete failed on a full disk) stay in flight: they are
        not sent again, only deleted by the next ack. So do, with `keep_backlog_events`,
        events taken by backlog takes (still out on the integration channel).
        """
        return self._ledger.release_all(keep_backlog_events)

    def dead_letter(
        self, kind: Kind, ids: Iterable[int], code: int, message: str, now_ms: int
    ) -> int:
        """Move rejected rows to the dead letters atomically; returns the values moved
        (points of the frames, or events); see `Settler.dead_letter`."""
        return self._settler.dead_letter(kind, ids, code, message, now_ms)

    def rewrite_frame(
        self,
        frame_id: int,
        delivered: Collection[str],
        dead: Mapping[str, tuple[int, str]],
        now_ms: int,
    ) -> SpooledFrame | None:
        """Settle some points of one frame in flight; returns what is left of it (still in
        flight), or None when nothing is (or it was not in flight); see `Settler`."""
        return self._settler.rewrite_frame(frame_id, delivered, dead, now_ms)

    # -- reading ---------------------------------------------------------------------

    def in_flight(self, kind: Kind) -> int:
        """Rows (frames or events) of `kind` taken and not yet acked, released or
        dead-lettered."""
        return self._ledger.in_flight(kind)

    def counts(self) -> Counts:
        """Counts from memory (no scan) and the bytes on disk; samples count points."""
        tally, ledger = self._tally, self._ledger
        return Counts(
            samples=tally.points,
            events=tally.rows[Kind.EVENTS],
            dead_letters=tally.dead_letters,
            in_flight_samples=ledger.in_flight_points(),
            in_flight_events=ledger.in_flight(Kind.EVENTS),
            dropped_samples=tally.counters[stats.META_DROPPED[Kind.SAMPLES]],
            dropped_events=tally.counters[stats.META_DROPPED[Kind.EVENTS]],
            file_bytes=files.file_bytes(self._path),
            frames=tally.rows[Kind.SAMPLES],
            in_flight_frames=ledger.in_flight(Kind.SAMPLES),
            unsendable_samples=tally.counters[stats.META_UNSENDABLE],
            appended_samples=tally.counters[stats.META_APPENDED],
        )

    def stats(self) -> stats.SpoolStats:
        """A full snapshot (scans the file: for operators and tests, not hot paths)."""
        return self._sql.read_stats(
            self._guard.budget.max_bytes,
            in_flight_samples=self._ledger.in_flight_points(),
            in_flight_events=self._ledger.in_flight(Kind.EVENTS),
        )

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The newest `limit` dead letters, newest first."""
        return self._sql.read_dead_letters(limit)

    def get_meta(self, key: str) -> str | None:
        """A small persisted value (e.g. a device secret from dynamic activation)."""
        return self._sql.get_meta(key)

    def set_meta(self, key: str, value: str) -> None:
        """Persist `value` under `key` durably (configured `synchronous`).

        Keys starting with `spool.` are the spool's own.
        """
        with self._sql.transaction():
            self._sql.set_meta(key, value)
