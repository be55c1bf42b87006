"""The disk guard on a real spool file: reserve file, WAL limit, full-disk state, episodes."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from gatewayd.config.models import SyncMode
from gatewayd.episodes import Episodes
from gatewayd.spool import files
from gatewayd.spool.budget import Budget
from gatewayd.spool.diskguard import FULL_DISK_WAL_PAGES, DiskGuard, is_disk_full
from gatewayd.spool.rows import Kind
from gatewayd.spool.sqlstore import SqlStore

MIB = 1 << 20
CAP = 32 * MIB  # budget: WAL limit 2 MiB, reserve 4 MiB


@pytest.fixture
def sql(tmp_path: Path) -> Iterator[SqlStore]:
    """A migrated spool file behind its SQL store."""
    path = tmp_path / "spool.db"
    store = SqlStore(files.connect(path, SyncMode.FULL, check=False), path, SyncMode.FULL)
    yield store
    store.close()


def _guard(sql: SqlStore, tmp_path: Path, max_bytes: int = CAP) -> DiskGuard:
    guard = DiskGuard(sql, tmp_path / "spool.db", max_bytes, Episodes(structlog.get_logger()))
    guard.configure(sql.configure())
    return guard


def _wal_pragmas(sql: SqlStore) -> tuple[int, int]:
    """(wal_autocheckpoint pages, journal_size_limit bytes) as SQLite has them."""
    pages = sql.conn.execute("PRAGMA wal_autocheckpoint").fetchone()[0]
    limit = sql.conn.execute("PRAGMA journal_size_limit").fetchone()[0]
    return pages, limit


def _fill(sql: SqlStore, frames: int, body_bytes: int = 2000) -> None:
    rows = [("m1", i, 1, "x" * body_bytes) for i in range(frames)]
    with sql.transaction():
        sql.insert(rows, [])


def test_until_the_reserve_exists_the_wal_is_kept_at_a_few_pages(
    sql: SqlStore, tmp_path: Path
) -> None:
    """Without a reserve nothing could make room for a checkpoint: the WAL stays small."""
    guard = _guard(sql, tmp_path)
    floor = FULL_DISK_WAL_PAGES * guard.budget.page_size
    assert guard.wal_limit() == floor
    assert _wal_pragmas(sql) == (FULL_DISK_WAL_PAGES, floor)


def test_the_reserve_is_made_and_the_wal_held_below_half_of_it(
    sql: SqlStore, tmp_path: Path
) -> None:
    """With room on the disk the reserve gets the budgeted size and the WAL its limit."""
    guard = _guard(sql, tmp_path)
    guard.init_reserve()
    budget = Budget(CAP, guard.budget.page_size)
    assert guard.reserve_bytes == budget.reserve_bytes == 4 * MIB
    assert files.reserve_path(tmp_path / "spool.db").stat().st_size == 4 * MIB
    assert guard.wal_limit() == budget.wal_limit == 2 * MIB
    assert _wal_pragmas(sql) == (2 * MIB // budget.page_size, 2 * MIB)
    # A smaller reserve (a small disk) holds the WAL to half of it.
    guard.reserve_bytes = 1 * MIB
    guard.apply_wal_limit()
    assert _wal_pragmas(sql) == (MIB // 2 // budget.page_size, MIB // 2)


def test_a_full_disk_releases_the_reserve_and_holds_the_data(sql: SqlStore, tmp_path: Path) -> None:
    """Release: the reserve goes, the WAL shrinks to a few pages and is emptied; the
    data may then fill only the pages the file has (minus a margin)."""
    path = tmp_path / "spool.db"
    guard = _guard(sql, tmp_path)
    guard.init_reserve()
    _fill(sql, 200)
    assert files.file_bytes(Path(f"{path}-wal")) > 0
    guard.make_room()
    assert not files.reserve_path(path).exists()
    floor = FULL_DISK_WAL_PAGES * guard.budget.page_size
    assert _wal_pragmas(sql) == (FULL_DISK_WAL_PAGES, floor)
    assert Path(f"{path}-wal").stat().st_size == 0  # checkpointed and truncated
    assert guard.disk_full
    pages, free = sql.pages()
    used = (pages - free) * guard.budget.page_size
    high = max(used, (pages - 4) * guard.budget.page_size)
    assert guard.data_high() == high < guard.budget.data_high
    assert guard.drop_chunk(high) == min(guard.budget.drop_chunk, high // 8)
    assert guard.wal_limit() == floor


def test_room_again_brings_back_the_reserve_and_the_normal_limits(
    sql: SqlStore, tmp_path: Path
) -> None:
    """Once the reserve fits again the full-disk episode ends with one line."""
    path = tmp_path / "spool.db"
    guard = _guard(sql, tmp_path)
    guard.init_reserve()
    _fill(sql, 20)
    with structlog.testing.capture_logs() as logs:
        guard.append_succeeded()  # not full: nothing to say
        guard.append_blocked()
        guard.append_blocked()
        guard.make_room()
        guard.append_succeeded()
    assert [(e["log_level"], e["event"]) for e in logs] == [
        ("warning", "disk full: dropping the oldest spooled rows to keep spooling"),
        ("info", "the disk has room again: spooling normally"),
    ]
    assert not guard.disk_full
    assert files.reserve_path(path).stat().st_size == guard.reserve_bytes == 4 * MIB
    assert guard.data_high() == guard.budget.data_high
    assert _wal_pragmas(sql)[1] == 2 * MIB


def test_ack_and_settle_episodes_warn_once_and_close_once(sql: SqlStore, tmp_path: Path) -> None:
    """One warning per episode, one closing line with the rows it held."""
    guard = _guard(sql, tmp_path)
    with structlog.testing.capture_logs() as logs:
        guard.ack_blocked(3, 3)
        guard.ack_blocked(2, 5)
        guard.ack_succeeded()
        guard.ack_succeeded()
        guard.settle_blocked("cannot rewrite a settled frame", 1)
        guard.settle_blocked("cannot rewrite a settled frame", 4)
        guard.settle_succeeded()
        guard.settle_succeeded()
    assert [(e["log_level"], e.get("rows")) for e in logs] == [
        ("warning", 3),
        ("info", 5),
        ("warning", 1),
        ("info", None),
    ]
    assert logs[1]["event"] == "delivered rows deleted again: the spool shrinks"
    assert logs[3]["event"] == "rejected rows are settled again"


def test_reclaim_gives_many_free_pages_back_and_leaves_few(sql: SqlStore, tmp_path: Path) -> None:
    """Free pages above the threshold go back to the disk in bounded steps, then the
    WAL is emptied."""
    guard = _guard(sql, tmp_path, max_bytes=4 * MIB)  # threshold 512 KiB
    _fill(sql, 600)
    assert guard.reclaim() == 0  # nothing free yet
    with sql.transaction():
        sql.delete(Kind.SAMPLES, range(1, 601))
    _, free = sql.pages()
    assert free * guard.budget.page_size >= guard.budget.vacuum_threshold
    freed = guard.reclaim()
    assert freed == guard.budget.vacuum_step_pages
    assert guard.reclaim(max_pages=None) == free - freed
    assert sql.pages()[1] == 0
    # With the free pages gone the WAL is folded in and truncated: the files shrink.
    assert Path(f"{tmp_path / 'spool.db'}-wal").stat().st_size == 0


def test_sqlite_full_is_told_apart_from_other_errors(sql: SqlStore) -> None:
    """SQLITE_FULL (here: the page limit reached) is a full disk; a constraint is not."""
    sql.conn.execute("PRAGMA max_page_count = 12")
    with pytest.raises(sqlite3.OperationalError) as full:
        _fill(sql, 200)
    assert is_disk_full(full.value)
    with pytest.raises(sqlite3.IntegrityError) as other:
        sql.conn.execute("INSERT INTO frames (device, ts_ms, points, body) VALUES (NULL, 1, 1, '')")
    assert not is_disk_full(other.value)
