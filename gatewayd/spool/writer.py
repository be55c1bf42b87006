"""Appends poll cycles to the spool and keeps the data within its byte cap.

Byte cap (see `budget.py`): before an append would take the data pages past the budget,
the oldest rows are dropped (frames first, counted as the points they held; events only
when no sample is left, because an event is one alarm transition that cannot be
re-derived), counted in `meta`, logged once per episode. Rows in flight are never
dropped. Free pages are reused before the file grows; after the spool drains,
`incremental_vacuum` and a TRUNCATE checkpoint give the space back to the disk.

Failures: a full disk on append drops the oldest rows, truncates the WAL and retries
once; a corrupt file is replaced and the append retried; if the retry fails too the
batch is counted as dropped. `append` never raises: the poller keeps polling, and the
logs say what was lost.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog

from gatewayd.episodes import Episodes
from gatewayd.samples import Event, Sample, SampleBlock
from gatewayd.spool import files, stats
from gatewayd.spool.diskguard import DiskGuard, is_disk_full
from gatewayd.spool.frames import FrameEncoder
from gatewayd.spool.ledger import DeliveryLedger
from gatewayd.spool.rows import Kind
from gatewayd.spool.sqlstore import SqlStore
from gatewayd.spool.tally import Tally, persisting

log = structlog.get_logger()

#: Guesses the bytes of a row before the spool holds any, for the byte-cap projection.
_DEFAULT_ROW_BYTES = 256
_MAX_DROP_ROUNDS = 8


class CycleWriter:
    """Commits poll cycles within the byte cap, dropping the oldest rows when it must."""

    def __init__(
        self,
        sql: SqlStore,
        ledger: DeliveryLedger,
        tally: Tally,
        guard: DiskGuard,
        episodes: Episodes,
        *,
        path: Path,
        encoder: FrameEncoder,
        reload: Callable[[], None],
        recover: Callable[[BaseException], None],
    ) -> None:
        """`reload` rereads the counters after a rollback; `recover` replaces a corrupt
        file."""
        self._sql = sql
        self._ledger = ledger
        self._tally = tally
        self._guard = guard
        self._episodes = episodes
        self._path = path
        self.encoder = encoder
        self._reload = reload
        self._recover = recover

    def append(
        self,
        samples: Sequence[Sample],
        events: Sequence[Event],
        now_ms: int | None,
        blocks: Sequence[SampleBlock],
    ) -> None:
        """Commit one poll cycle in ONE transaction; never raises (see `SpoolStore`)."""
        if not samples and not events and not blocks:
            return
        try:
            self._append_once(samples, events, now_ms, blocks)
        except sqlite3.Error as exc:
            self._append_failed(exc, samples, events, now_ms, blocks)
        else:
            self._guard.append_succeeded()
            self._episodes.end("write_error", "spool writes succeed again", count_as="dropped_rows")

    def _append_failed(
        self,
        exc: sqlite3.Error,
        samples: Sequence[Sample],
        events: Sequence[Event],
        now_ms: int | None,
        blocks: Sequence[SampleBlock],
    ) -> None:
        points = len(samples) + sum(block.points for block in blocks)
        self._reload()
        if files.is_corruption(exc):
            self._recover(exc)
        elif is_disk_full(exc):
            self._guard.append_blocked()
            self._free_disk(points + len(events))
        else:
            self._write_failed(exc, points=points, events=len(events))
            return
        try:
            self._append_once(samples, events, now_ms, blocks)
        except sqlite3.Error as again:
            self._reload()
            self._write_failed(again, points=points, events=len(events))

    def _write_failed(self, error: sqlite3.Error, *, points: int, events: int) -> None:
        """The values could not be written at all: they count as dropped."""
        self._episodes.start(
            "write_error", "spool write failed", error=f"{type(error).__name__}: {error}"
        )
        self._tally.lost(points, events)
        self._episodes.add("write_error", points + events)

    def _free_disk(self, incoming: int) -> None:
        """Make room on a full disk, then keep the data from growing until it has room.

        WAL mode needs free blocks even to delete (the WAL grows) and to checkpoint (the
        database file grows), so the reserve file goes first; then the WAL is folded into
        the database and truncated, and the oldest rows are dropped. Their pages are
        reused by the next appends, so from here on the data is held to the size it has
        now until the disk has room for the reserve again.
        """
        self._guard.release_space()
        rows = self._tally.rows
        want = max(2 * incoming, (rows[Kind.SAMPLES] + rows[Kind.EVENTS]) // 16, 1)
        try:
            with persisting(self._tally, self._sql.transaction()):
                self._drop_rows(want, "disk_full")
                self._sql.set_metas(self._tally.to_persist())
        except sqlite3.Error:
            self._reload()
            log.debug("dropping rows on a full disk failed", exc_info=True)
        self._guard.checkpoint()
        self._guard.hold_data()

    def _append_once(
        self,
        samples: Sequence[Sample],
        events: Sequence[Event],
        now_ms: int | None,
        blocks: Sequence[SampleBlock],
    ) -> None:
        frames, unsendable = self.encoder.encode(samples, blocks) if samples or blocks else ([], 0)
        event_rows = [
            (e.device, e.event_id, json.dumps(e.params, separators=(",", ":")), e.ts_ms)
            for e in events
        ]
        points = sum(frame.points for frame in frames)
        tally = self._tally
        with persisting(tally, self._sql.transaction()):
            self._make_room(len(frames) + len(event_rows))
            self._sql.insert(frames, event_rows)
            tally.appended(len(frames), points, len(event_rows), unsendable)
            self._enforce_cap()
            if now_ms is not None:
                self._sql.set_meta(stats.META_LAST_APPEND, str(now_ms))
            if tally.dirty:
                self._sql.set_metas(tally.to_persist())

    # -- byte cap --------------------------------------------------------------------

    def _row_bytes(self, used: int) -> float:
        rows = self._tally.rows[Kind.SAMPLES] + self._tally.rows[Kind.EVENTS]
        return used / rows if rows else _DEFAULT_ROW_BYTES

    def _reason(self, high: int) -> str:
        """The episode a drop under `high` belongs to: the cap's or the full disk's."""
        return "cap" if high == self._guard.budget.data_high else "disk_full"

    def _make_room(self, incoming: int) -> None:
        """Drop oldest rows now if `incoming` rows would take the data past the budget."""
        used = self._guard.used_bytes()
        per_row = self._row_bytes(used)
        projected = used + incoming * per_row
        high = self._guard.data_high()
        if projected <= high:
            if used < self._guard.budget.low_water:
                self._end_cap_episode()
            return
        excess = projected - high + self._guard.drop_chunk(high)
        self._drop_rows(math.ceil(excess / per_row), self._reason(high))

    def _enforce_cap(self) -> None:
        """After inserting: if the estimate was short, drop until the data fits."""
        for _ in range(_MAX_DROP_ROUNDS):
            used = self._guard.used_bytes()
            high = self._guard.data_high()
            if used <= high:
                return
            excess = used - high + self._guard.drop_chunk(high)
            if not self._drop_rows(math.ceil(excess / self._row_bytes(used)), self._reason(high)):
                return  # nothing droppable is left (all in flight)

    def _drop_rows(self, count: int, reason: str) -> int:
        """Delete up to `count` oldest rows not in flight, frames first; count their points."""
        dropped = lost = 0
        for kind in Kind:  # samples, then events
            if dropped >= count:
                break
            keep = self._ledger.in_flight_ids(kind)
            keep_json = json.dumps(keep) if keep else None
            # Each deleted row weighs its points (frames) or 1 (events).
            weights = self._sql.delete_oldest(kind, count - dropped, keep_json)
            if weights:
                self._tally.dropped(kind, len(weights), sum(weights))
            lost += sum(weights)
            dropped += len(weights)
        if dropped:
            if reason == "cap":
                self._episodes.start(
                    "cap",
                    "spool full: dropping the oldest rows",
                    max_bytes=self._guard.budget.max_bytes,
                    path=str(self._path),
                )
            self._episodes.add(reason, lost)
        return dropped

    def _end_cap_episode(self) -> None:
        self._episodes.end(
            "cap", "spool below its low-water mark: no longer dropping", count_as="dropped_rows"
        )

    def trim_at_open(self) -> None:
        """A file over its budget (e.g. the cap was lowered) is trimmed and shrunk at once.

        On a full disk trimming or shrinking can fail; the spool still opens (the rows are
        intact) so the daemon can run and drain it, instead of failing in a restart loop.
        """
        try:
            if self._guard.used_bytes() > self._guard.budget.data_high:
                with persisting(self._tally, self._sql.transaction()):
                    self._enforce_cap()
                    self._sql.set_metas(self._tally.to_persist())
            self._guard.reclaim(max_pages=None)
        except sqlite3.OperationalError as exc:
            if not is_disk_full(exc):
                raise
            log.warning(
                "disk full: spool opened without trimming or shrinking it",
                path=str(self._path),
                error=str(exc),
            )

    def after_delete(self) -> None:
        """Rows left the spool: the cap episode may be over; free pages go back."""
        if "cap" in self._episodes and self._guard.used_bytes() < self._guard.budget.low_water:
            self._end_cap_episode()
        try:
            self._guard.reclaim()
        except sqlite3.OperationalError as exc:
            # The rows are deleted; giving the space back waits for the next delete.
            if not is_disk_full(exc):
                raise
            log.debug("giving free pages back failed on a full disk", exc_info=True)
