"""Settles delivered and rejected rows: deletes, dead letters, partly settled frames.

Acks, releases and dead letters commit with synchronous NORMAL: losing one to a power
cut only means rows are sent again, and EnOS keys data by (device, point, time), so a
duplicate is harmless; this saves one fsync per message.

Deletes need disk space too. An ack that meets a full disk releases the reserve,
truncates the WAL and retries once; rows it still cannot delete stay in flight
("unsettled": not sent again by this run), are warned about once per episode, and the
next ack deletes them. A dead letter or rewrite that cannot be written goes back to
the pool instead (it is sent, and settled, again later).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, TypeVar

from gatewayd.samples import Value
from gatewayd.spool import files
from gatewayd.spool.diskguard import DiskGuard, is_disk_full
from gatewayd.spool.frames import encode_body, parse_body
from gatewayd.spool.ledger import DeliveryLedger
from gatewayd.spool.rows import Kind, SpooledFrame
from gatewayd.spool.rows import encode_value as _encode
from gatewayd.spool.sqlstore import SqlStore
from gatewayd.spool.tally import Tally, persisting

_T = TypeVar("_T")


class Settler:
    """Turns the cloud's verdicts on rows in flight into deletes and dead letters."""

    def __init__(
        self,
        sql: SqlStore,
        ledger: DeliveryLedger,
        tally: Tally,
        guard: DiskGuard,
        *,
        dead_letter_limit: int,
        reload: Callable[[], None],
        recover: Callable[[BaseException], None],
        after_delete: Callable[[], None],
        split: Callable[[object], tuple[Value, int]],
    ) -> None:
        """`reload` rereads the counters after a rollback, `recover` replaces a corrupt
        file, `after_delete` ends a cap episode and gives free pages back."""
        self._sql = sql
        self._ledger = ledger
        self._tally = tally
        self._guard = guard
        self._dead_letter_limit = dead_letter_limit
        self._reload = reload
        self._recover = recover
        self._split = split  # (value, quality) of a frame value: the shapes' inverse
        self._after_delete = after_delete

    # -- delivered -------------------------------------------------------------------

    def ack(self, kind: Kind, ids: Iterable[int]) -> int:
        """Commit: delete rows EnOS accepted; returns how many were deleted.

        Ids not in flight are ignored. On a full disk the reserve is released, the WAL
        checkpointed and truncated, and the delete tried once more. If it still fails the
        rows stay in the spool and in flight ("unsettled": this run does not send them
        again), a warning says so once per episode, 0 is returned, and every later ack
        deletes them first (so the count it returns includes them); only a restart before
        that sends them again (harmless duplicates: EnOS keys data by device, point, time).
        """
        mine = self._ledger.to_ack(kind, ids)
        if not mine:
            return 0
        try:
            deleted = self._delete(kind, mine)
        except sqlite3.Error as exc:
            if files.is_corruption(exc):
                self._recover(exc)
                return 0
            if not is_disk_full(exc):
                raise
            retried = self._delete_on_full_disk(kind, mine)
            if retried is None:
                return 0
            deleted = retried
        self._guard.ack_succeeded()
        self._ledger.settled(kind)
        points = self._ledger.land(kind, mine)
        self._tally.removed(kind, deleted, points if kind is Kind.SAMPLES else 0)
        self._after_delete()
        return deleted

    def _delete(self, kind: Kind, ids: list[int]) -> int:
        with self._sql.relaxed(), self._sql.transaction():
            return self._sql.delete(kind, ids)

    def _delete_on_full_disk(self, kind: Kind, ids: list[int]) -> int | None:
        """Make room (reserve, WAL) and delete once more; None if the disk is still full."""
        self._guard.make_room()
        try:
            return self._delete(kind, ids)
        except sqlite3.Error as exc:
            if files.is_corruption(exc):
                self._recover(exc)
                return None
            if not is_disk_full(exc):
                raise
        self._ledger.keep_unsettled(kind, ids)
        unsettled = sum(self._ledger.unsettled(k) for k in Kind)
        self._guard.ack_blocked(len(ids), unsettled)
        return None

    # -- rejected --------------------------------------------------------------------

    def _write_making_room(self, write: Callable[[], _T]) -> _T | None:
        """Run the transaction `write`; on a full disk make room (reserve, WAL) and run
        it once more. None if the disk is still full (the counters are reloaded)."""
        for attempt in range(2):
            try:
                done = write()
            except sqlite3.Error as exc:
                if not is_disk_full(exc):
                    raise
                self._reload()
            else:
                self._guard.settle_succeeded()
                return done
            if attempt == 0:
                self._guard.make_room()
        return None

    def _cannot_settle(self, kind: Kind, ids: list[int], action: str) -> None:
        """A full disk kept rows from being settled: they go back to the pool (sent, and
        settled, again later); warned once per episode."""
        self._ledger.release(kind, ids)
        self._guard.settle_blocked(action, len(ids))

    def dead_letter(
        self, kind: Kind, ids: Iterable[int], code: int, message: str, now_ms: int
    ) -> int:
        """Move rejected rows to the dead-letter table atomically; returns values moved
        (the points of the frames, or the events).

        A frame becomes one dead letter per point. The table keeps the newest
        `dead_letter_limit` entries; older ones are dropped and counted, so a point
        rejected forever cannot fill the disk. On a full disk the rows go back to the
        pool (0 is returned).
        """
        mine = self._ledger.owned(kind, ids)
        if not mine:
            return 0
        ids_json = json.dumps(mine)
        sql = self._sql

        def move() -> tuple[int, int, int]:
            with sql.relaxed(), persisting(self._tally, sql.transaction()):
                if kind is Kind.SAMPLES:
                    moved = self._frames_to_dead_letters(ids_json, code, message, now_ms)
                else:
                    sql.events_to_dead_letters(ids_json, code, message, now_ms)
                deleted = sql.delete_json_ids(kind, ids_json)
                if kind is Kind.EVENTS:
                    moved = deleted
                trimmed = self._trim_dead_letters()
            return moved, deleted, trimmed

        done = self._write_making_room(move)
        if done is None:
            self._cannot_settle(kind, mine, "cannot move rejected rows to the dead letters")
            return 0
        moved, deleted, trimmed = done
        self._ledger.land(kind, mine)
        self._tally.removed(kind, deleted, moved if kind is Kind.SAMPLES else 0)
        self._tally.dead_letters += moved - trimmed
        self._after_delete()
        return moved

    def _frames_to_dead_letters(self, ids_json: str, code: int, message: str, now_ms: int) -> int:
        """Insert one dead letter per point of the frames; returns the points."""
        rows = []
        for frame_id, device, ts_ms, body in self._sql.select_frames(ids_json):
            for name, shaped in parse_body(body).items():
                value, quality = self._split(shaped)
                rows.append(
                    (frame_id, device, name, _encode(value), quality, ts_ms, code, message, now_ms)
                )
        self._sql.insert_dead_points(rows)
        return len(rows)

    def _trim_dead_letters(self) -> int:
        trimmed = self._sql.trim_dead_letters(self._dead_letter_limit)
        if trimmed:
            self._tally.trimmed(trimmed)
            self._sql.set_metas(self._tally.to_persist())
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
        if not self._ledger.holds(Kind.SAMPLES, frame_id):
            return None
        found = self._sql.select_frames(json.dumps([frame_id]))
        if not found:
            return None
        _, device, ts_ms, body = found[0]
        points = parse_body(body)
        letters: list[tuple[Any, ...]] = []
        for name, (code, message) in dead.items():
            if name in points:
                value, quality = self._split(points.pop(name))
                letters.append(
                    (frame_id, device, name, _encode(value), quality, ts_ms, code, message, now_ms)
                )
        gone = [name for name in delivered if name in points]
        for name in gone:
            del points[name]
        removed = len(letters) + len(gone)
        new_body = encode_body(points) if points else ""
        sql = self._sql

        def rewrite() -> int:
            with sql.relaxed(), persisting(self._tally, sql.transaction()):
                if letters:
                    sql.insert_dead_points(letters)
                if points:
                    sql.update_frame(frame_id, len(points), new_body)
                else:
                    sql.delete(Kind.SAMPLES, [frame_id])
                return self._trim_dead_letters() if letters else 0

        trimmed = self._write_making_room(rewrite)
        if trimmed is None:
            self._cannot_settle(Kind.SAMPLES, [frame_id], "cannot rewrite a settled frame")
            return None
        self._tally.removed(Kind.SAMPLES, 0, removed)
        self._tally.dead_letters += len(letters) - trimmed
        if not points:
            self._ledger.land(Kind.SAMPLES, [frame_id])
            self._tally.removed(Kind.SAMPLES, 1)
            self._after_delete()
            return None
        self._ledger.weigh(frame_id, len(points))
        return SpooledFrame(frame_id, device, ts_ms, len(points), new_body)
