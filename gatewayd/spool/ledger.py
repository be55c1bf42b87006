"""Which spooled rows are out for delivery: the spool's begin/commit bookkeeping (pure).

Rows taken and not yet acked are "in flight" (in memory only): a take skips them, and
after a restart every row not acked comes back. Ack, release and dead letter act only on
ids that are in flight (`owned`), so a stale id (from before a restart or a recovered
file) can never delete a row it did not take.

Each (kind, mode) keeps a cursor, the highest id a take of that mode need never see
again, so a take does not rescan what is already in flight; `release` rewinds it. Rows
the cloud accepted whose delete failed on a full disk are "unsettled": they stay in
flight (this run does not send them again) until an ack deletes them.

The ledger sees rows only as tuples whose first item is the id and last the sample time;
it never touches SQLite, so every rule here is tested without a file.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from enum import Enum
from typing import Any

from gatewayd.spool.rows import Kind


class TakeMode(Enum):
    """Which rows a take selects by sample time; each keeps its own cursor."""

    ALL = "all"
    LIVE = "live"
    BACKLOG = "backlog"

    @classmethod
    def of(cls, older_than_ms: int | None, newer_than_ms: int | None) -> TakeMode:
        """The mode of a take's filters (live: `newer_than_ms`; backlog: `older_than_ms`)."""
        if older_than_ms is not None and newer_than_ms is not None:
            raise ValueError("take: give older_than_ms or newer_than_ms, not both")
        if newer_than_ms is not None:
            return cls.LIVE
        if older_than_ms is not None:
            return cls.BACKLOG
        return cls.ALL


class DeliveryLedger:
    """In-flight rows, take cursors and unsettled rows of one spool (memory only)."""

    def __init__(self) -> None:
        self._in_flight: dict[Kind, dict[int, TakeMode]] = {kind: {} for kind in Kind}
        self._flight_points: dict[int, int] = {}  # frame id in flight -> its points
        self._cursors: dict[tuple[Kind, TakeMode], int] = {}
        # Devices the last take of each (kind, mode) left out (they outlive a reset).
        self._excluded: dict[tuple[Kind, TakeMode], frozenset[str]] = {}
        self._unsettled: dict[Kind, dict[int, None]] = {kind: {} for kind in Kind}

    def reset(self) -> None:
        """Forget every row in flight (the file was reopened: all rows come back)."""
        self._in_flight = {kind: {} for kind in Kind}
        self._unsettled = {kind: {} for kind in Kind}
        self._flight_points = {}
        self._cursors = {}

    # -- taking ----------------------------------------------------------------------

    def scan_from(self, kind: Kind, mode: TakeMode, excluded: frozenset[str]) -> int:
        """The id after which a take of `mode` leaving out `excluded` devices reads.

        Excluded rows are skipped in SQL, so the cursor may pass them: when a device is
        no longer excluded, this mode's scan starts over so its rows are found again.
        """
        key = (kind, mode)
        if self._excluded.get(key, frozenset()) - excluded:
            self._cursors.pop(key, None)
        self._excluded[key] = excluded
        return self._cursors.get(key, 0)

    def window(self, kind: Kind, limit: int) -> int:
        """Rows to read for a take of `limit`: rows in flight above the cursor are
        skipped, so read that many more."""
        return limit + len(self._in_flight[kind])

    def take(
        self,
        kind: Kind,
        mode: TakeMode,
        rows: Sequence[tuple[Any, ...]],
        limit: int,
        older_than_ms: int | None = None,
    ) -> list[tuple[Any, ...]]:
        """Pick up to `limit` of `rows` (read from `scan_from`, in id order) not in flight,
        put them in flight and move the cursor; backlog takes skip rows at or after
        `older_than_ms` (row[-1] is the sample time)."""
        in_flight = self._in_flight[kind]
        cursor = self._cursors.get((kind, mode), 0)
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
            if mode is TakeMode.BACKLOG and row[-1] >= older_than_ms:
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

    def weigh(self, frame_id: int, points: int) -> None:
        """Record how many points a frame in flight holds (for counts and for `land`)."""
        self._flight_points[frame_id] = points

    # -- settling --------------------------------------------------------------------

    def holds(self, kind: Kind, row_id: int) -> bool:
        """Is the row in flight?"""
        return row_id in self._in_flight[kind]

    def owned(self, kind: Kind, ids: Iterable[int]) -> list[int]:
        """The ids that are in flight, in the given order (others are stale)."""
        in_flight = self._in_flight[kind]
        return [row_id for row_id in ids if row_id in in_flight]

    def to_ack(self, kind: Kind, ids: Iterable[int]) -> list[int]:
        """What an ack deletes: the unsettled rows first, then `ids` in flight, once each."""
        return self.owned(kind, dict.fromkeys([*self._unsettled[kind], *ids]))

    def land(self, kind: Kind, ids: Iterable[int]) -> int:
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
        """Rows not delivered go back to the pool (oldest first again); returns how many."""
        in_flight = self._in_flight[kind]
        released = [(row_id, in_flight.pop(row_id)) for row_id in self.owned(kind, ids)]
        for row_id, _ in released:
            self._unsettled[kind].pop(row_id, None)
        if kind is Kind.SAMPLES:
            for row_id, _ in released:
                del self._flight_points[row_id]
        if released:
            self._rewind(kind, released)
        return len(released)

    def release_all(self, keep_backlog_events: bool = False) -> int:
        """Every row in flight goes back to the pool, except unsettled ones (delivered,
        only waiting for their delete) and, with `keep_backlog_events`, the events taken
        by backlog takes (the historical-event channel's, which outlives a gateway
        session); returns how many went back.

        Kept by how they were taken, not by a list of ids from the caller: a take queued
        just before this call is in flight here, though its taker has not heard of it yet.
        """
        count = 0
        for kind in Kind:
            in_flight = self._in_flight[kind]
            kept = {row_id: in_flight[row_id] for row_id in self._unsettled[kind]}
            if kind is Kind.EVENTS and keep_backlog_events:
                kept.update(
                    {i: mode for i, mode in in_flight.items() if mode is TakeMode.BACKLOG}
                )
            count += len(in_flight) - len(kept)
            self._in_flight[kind] = kept
        unsettled = self._unsettled[Kind.SAMPLES]
        self._flight_points = {
            row_id: points for row_id, points in self._flight_points.items() if row_id in unsettled
        }
        self._cursors = {}
        return count

    def _rewind(self, kind: Kind, released: list[tuple[int, TakeMode]]) -> None:
        below = min(row_id for row_id, _ in released) - 1
        modes = {TakeMode.ALL, TakeMode.BACKLOG}
        # A row taken as backlog can never be live again (its time only gets older), so
        # only a row taken live or unfiltered rewinds the live cursor.
        if any(mode is not TakeMode.BACKLOG for _, mode in released):
            modes.add(TakeMode.LIVE)
        for mode in modes:
            key = (kind, mode)
            if key in self._cursors:
                self._cursors[key] = min(self._cursors[key], below)

    # -- unsettled rows --------------------------------------------------------------

    def keep_unsettled(self, kind: Kind, ids: Collection[int]) -> None:
        """Delivered rows whose delete failed stay in flight until an ack deletes them."""
        self._unsettled[kind].update(dict.fromkeys(ids))

    def settled(self, kind: Kind) -> None:
        """An ack deleted the unsettled rows of `kind` (they were in its batch)."""
        self._unsettled[kind].clear()

    def unsettled(self, kind: Kind) -> int:
        """Unsettled rows of `kind`."""
        return len(self._unsettled[kind])

    # -- figures ---------------------------------------------------------------------

    def in_flight(self, kind: Kind) -> int:
        """Rows (frames or events) of `kind` in flight."""
        return len(self._in_flight[kind])

    def in_flight_ids(self, kind: Kind) -> list[int]:
        """The ids of `kind` in flight (the byte cap must not drop them)."""
        return list(self._in_flight[kind])

    def in_flight_points(self) -> int:
        """Points in the frames in flight."""
        return sum(self._flight_points.values())
