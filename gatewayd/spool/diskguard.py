"""Keeps the spool writable on a small or full disk: reserve file, WAL limit, high mark.

Deletes need disk space too (WAL frames, then a checkpoint that may grow the file), so
a reserve file (`budget.reserve_bytes`) is kept next to the spool and the WAL is held
below half of it (`wal_limit`): releasing the reserve always lets a checkpoint empty
the WAL. While the disk is full the data pages are held at the size they had when it
filled (`data_high`), the WAL at a few pages, until the reserve fits on the disk again.
The guard also gives free pages back to the disk (`reclaim`) and says, once per
episode, when the disk keeps rows from being written, deleted or settled.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import structlog

from gatewayd.episodes import Episodes
from gatewayd.spool import files
from gatewayd.spool.budget import Budget
from gatewayd.spool.sqlstore import SqlStore

log = structlog.get_logger()

_SQLITE_FULL = 13
#: WAL pages between checkpoints while the disk is full (normally `Budget.wal_limit`).
FULL_DISK_WAL_PAGES = 16
#: The smallest reserve file worth keeping.
MIN_RESERVE = 64 * 1024


def is_disk_full(exc: BaseException) -> bool:
    """True for SQLite's 'database or disk is full'."""
    code = getattr(exc, "sqlite_errorcode", None)
    return code is not None and code & 0xFF == _SQLITE_FULL


class DiskGuard:
    """The reserve file, the WAL limit and the full-disk state of one spool file."""

    def __init__(self, sql: SqlStore, path: Path, max_bytes: int, episodes: Episodes) -> None:
        self._sql = sql
        self._path = path
        self.budget = Budget(max_bytes)
        self._episodes = episodes
        # While the disk is full: the most bytes of data pages (the file may not grow).
        self._disk_high: int | None = None
        # Until the reserve is known the WAL is kept at its full-disk size (`wal_limit`).
        self.reserve_bytes = 0

    def configure(self, page_size: int) -> None:
        """Size the budget by the file's pages and apply the WAL limit (at every open)."""
        self.budget = Budget(self.budget.max_bytes, page_size)
        self.apply_wal_limit()

    # -- sizes -----------------------------------------------------------------------

    def used_bytes(self) -> int:
        """Bytes of pages in use, as the current transaction sees them."""
        total, free = self._sql.pages()
        return (total - free) * self.budget.page_size

    @property
    def disk_full(self) -> bool:
        """Is the data held at its full-disk size?"""
        return self._disk_high is not None

    def data_high(self) -> int:
        """Most bytes of pages the data may hold now (the cap's, or less on a full disk)."""
        if self._disk_high is None:
            return self.budget.data_high
        return min(self._disk_high, self.budget.data_high)

    def drop_chunk(self, high: int) -> int:
        """Bytes to free beyond the need when dropping under the high mark `high`."""
        # Below a disk-limited high mark the cap's chunk could be the whole spool.
        return min(self.budget.drop_chunk, high // 8)

    def wal_limit(self) -> int:
        """WAL bytes between checkpoints: the budget's, but at most half the reserve.

        A checkpoint copies the WAL's pages into the database file, which grows by up to
        the WAL's size, and until it has the WAL cannot be reset: nothing, not even the
        delete of a delivered row, can be written. A WAL sized by the byte cap alone
        (up to 4 MiB) could fill a small disk by itself and then never be checkpointed.
        Held below the reserve, releasing the reserve always makes room to checkpoint.
        While the disk is full (or there is no reserve) the WAL stays at a few pages.
        """
        floor = FULL_DISK_WAL_PAGES * self.budget.page_size
        if self._disk_high is not None:
            return floor
        return max(floor, min(self.budget.wal_limit, self.reserve_bytes // 2))

    def apply_wal_limit(self) -> None:
        """Give SQLite the current `wal_limit`."""
        self._sql.set_wal_limit(self.wal_limit(), self.budget.page_size)

    # -- the reserve and a full disk -------------------------------------------------

    def init_reserve(self) -> None:
        """Keep a reserve of the budgeted size, or a quarter of the free space if smaller."""
        existing = files.reserve_size(self._path)
        free = files.free_bytes(self._path.parent) + existing
        wanted = min(self.budget.reserve_bytes, free // 4)
        if wanted < MIN_RESERVE:
            files.release_reserve(self._path)
            log.warning("no room on the disk for the spool's reserve file", path=str(self._path))
            wanted = 0
        elif existing != wanted:
            files.release_reserve(self._path)
            files.make_reserve(self._path, wanted)
        self.reserve_bytes = wanted
        self.apply_wal_limit()

    def release_space(self) -> None:
        """On a full disk: give up the reserve, shrink the WAL limit, truncate the WAL.

        The WAL is held below half the reserve (`wal_limit`), so with the reserve gone
        the checkpoint has room to copy it into the database file.
        """
        files.release_reserve(self._path)
        # Keep the WAL small while the disk is full: it must not eat the freed space.
        self._sql.set_wal_limit(FULL_DISK_WAL_PAGES * self.budget.page_size, self.budget.page_size)
        self.checkpoint()

    def make_room(self) -> None:
        """Before retrying a write the disk refused: release the reserve and the WAL, and
        hold the data where it is (appends must not take back the room deletes need)."""
        self.release_space()
        if self._disk_high is None:
            self.hold_data()

    def hold_data(self) -> None:
        """Keep the data pages at the size they have now until the disk has room."""
        try:
            pages, _ = self._sql.pages()
            used = self.used_bytes()
        except sqlite3.Error:
            log.debug("reading the page counts on a full disk failed", exc_info=True)
            return
        # Free pages inside the file are reused before it grows: the data may fill them.
        self._disk_high = max(used, (pages - 4) * self.budget.page_size)
        self.apply_wal_limit()

    def checkpoint(self) -> None:
        """Fold the WAL into the file and truncate it; a failure is only logged."""
        try:
            self._sql.checkpoint_truncate()
        except sqlite3.Error:
            log.debug("checkpoint on a full disk failed", exc_info=True)

    def has_room(self) -> bool:
        """While the disk was full: is there room for the reserve again? (Then it is made.)"""
        if self.reserve_bytes:
            if not files.make_reserve(self._path, self.reserve_bytes):
                return False
        elif files.free_bytes(self._path.parent) < 2 * self.budget.wal_limit:
            return False
        self._disk_high = None
        self.apply_wal_limit()  # the normal WAL limits again
        return True

    def reclaim(self, max_pages: int | None = 0) -> int:
        """Give free pages back to the disk when there are many; returns pages freed.

        `max_pages=0` uses the budget's bounded step (what `ack` does), `None` frees all.
        Once the free pages are gone the WAL is checkpointed and truncated, so the files
        on disk really shrink.
        """
        budget = self.budget
        _, free = self._sql.pages()
        if free * budget.page_size < budget.vacuum_threshold and max_pages == 0:
            return 0
        step = budget.vacuum_step_pages if max_pages == 0 else max_pages
        with self._sql.relaxed():
            self._sql.incremental_vacuum(step)
            _, left = self._sql.pages()
            if left * budget.page_size < budget.vacuum_threshold:
                self._sql.checkpoint_truncate()
        return free - left

    # -- full-disk episodes ----------------------------------------------------------

    def append_blocked(self) -> None:
        """An append met a full disk (rows are dropped to make room)."""
        self._episodes.start(
            "disk_full",
            "disk full: dropping the oldest spooled rows to keep spooling",
            path=str(self._path),
        )

    def append_succeeded(self) -> None:
        """An append committed: a full-disk episode ends once the reserve fits again."""
        if self._disk_high is not None and self.has_room():
            self._episodes.end(
                "disk_full",
                "the disk has room again: spooling normally",
                count_as="dropped_rows",
            )

    def ack_blocked(self, rows: int, unsettled: int) -> None:
        """Delivered rows could not be deleted; `unsettled` rows wait for the next ack."""
        self._episodes.start(
            "ack_full",
            "disk full: cannot delete delivered rows; they stay in the spool and are"
            " deleted with the next ack (a restart before then sends them again)",
            rows=rows,
            path=str(self._path),
        )
        self._episodes.set("ack_full", unsettled)

    def ack_succeeded(self) -> None:
        """An ack deleted its rows: the unsettled ones are gone."""
        self._episodes.end(
            "ack_full", "delivered rows deleted again: the spool shrinks", count_as="rows"
        )

    def settle_blocked(self, action: str, rows: int) -> None:
        """Rejected rows could not be settled: they go back to the pool."""
        self._episodes.start(
            "settle_full",
            "disk full: cannot settle rejected rows; they stay in the spool and are sent again",
            action=action,
            rows=rows,
            path=str(self._path),
        )

    def settle_succeeded(self) -> None:
        """Rejected rows were settled (moved or rewritten)."""
        self._episodes.end("settle_full", "rejected rows are settled again", count_as=None)
