"""The spool file under abuse: garbage, truncation, a newer schema, a full disk, kill -9."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from gatewayd.samples import Sample
from gatewayd.spool import schema
from gatewayd.spool.files import file_bytes, reserve_path
from gatewayd.spool.rows import Kind
from gatewayd.spool.store import SpoolStore
from tests.unit.spool_points import take_points

CAP = 64 << 20
REPO = Path(__file__).resolve().parents[2]


def _fill(path: Path, rows: int) -> None:
    store = SpoolStore.open(path, max_bytes=CAP)
    store.append([Sample("m", "P", float(i), 1000 + i) for i in range(rows)])
    store.close()


def _moved_aside(path: Path) -> list[Path]:
    return sorted(p for p in path.parent.iterdir() if ".corrupt-" in p.name)


def _assert_fresh_and_working(store: SpoolStore) -> None:
    assert store.counts().samples == 0
    store.append([Sample("m", "P", 1.0, 5)])
    assert [(r.value, r.ts_ms) for r in take_points(store, 5)] == [(1.0, 5)]


def test_garbage_file_is_moved_aside_and_a_fresh_spool_starts(tmp_path: Path) -> None:
    """A file of random bytes is renamed to .corrupt-<time> (bytes kept) with an error log."""
    path = tmp_path / "spool.db"
    garbage = os.urandom(64 * 1024)
    path.write_bytes(garbage)
    with structlog.testing.capture_logs() as logs:
        store = SpoolStore.open(path, max_bytes=CAP)
    (aside,) = _moved_aside(path)
    assert aside.name.startswith("spool.db.corrupt-")
    assert aside.read_bytes() == garbage
    errors = [e for e in logs if e["log_level"] == "error"]
    assert len(errors) == 1
    assert errors[0]["moved_to"] == str(aside)
    assert "not a database" in errors[0]["reason"]
    _assert_fresh_and_working(store)
    store.close()


def test_damaged_pages_are_found_by_quick_check(tmp_path: Path) -> None:
    """A real spool with overwritten B-tree pages fails quick_check and is moved aside."""
    path = tmp_path / "spool.db"
    _fill(path, 20_000)
    data = bytearray(path.read_bytes())
    for offset in range(8 * 4096, len(data) - 4096, 3 * 4096):  # keep the header page
        data[offset : offset + 512] = os.urandom(512)
    path.write_bytes(bytes(data))
    store = SpoolStore.open(path, max_bytes=CAP)
    assert len(_moved_aside(path)) == 1
    _assert_fresh_and_working(store)
    store.close()


def test_truncated_file_is_moved_aside(tmp_path: Path) -> None:
    """A spool cut to a third of its size (a torn copy, a full disk) is moved aside."""
    path = tmp_path / "spool.db"
    _fill(path, 20_000)
    size = path.stat().st_size
    with path.open("r+b") as handle:
        handle.truncate(size // 3)
    store = SpoolStore.open(path, max_bytes=CAP)
    (aside,) = _moved_aside(path)
    assert aside.stat().st_size == size // 3
    _assert_fresh_and_working(store)
    store.close()


def test_file_from_a_newer_gatewayd_is_moved_aside_untouched(tmp_path: Path) -> None:
    """A schema newer than this build is not migrated down: the file is kept aside as is."""
    path = tmp_path / "spool.db"
    _fill(path, 10)
    import sqlite3

    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {schema.LATEST_VERSION + 1}")
    conn.commit()
    conn.close()
    store = SpoolStore.open(path, max_bytes=CAP)
    (aside,) = _moved_aside(path)
    old = sqlite3.connect(aside)
    assert old.execute("SELECT TOTAL(points) FROM frames").fetchone()[0] == 10
    assert old.execute("PRAGMA user_version").fetchone()[0] == schema.LATEST_VERSION + 1
    _assert_fresh_and_working(store)
    store.close()


def test_empty_file_is_moved_aside_with_a_logged_reason(tmp_path: Path) -> None:
    """A 0-byte spool (emptied by a tool or a torn copy) is moved aside with its counters'
    loss logged, not silently taken for a new spool."""
    path = tmp_path / "spool.db"
    path.write_bytes(b"")
    with structlog.testing.capture_logs() as logs:
        store = SpoolStore.open(path, max_bytes=CAP)
    (aside,) = _moved_aside(path)
    assert aside.stat().st_size == 0
    errors = [e for e in logs if e["log_level"] in ("warning", "error")]
    assert [(e["path"], e["moved_to"]) for e in errors] == [(str(path), str(aside))]
    assert "empty" in errors[0]["reason"]
    _assert_fresh_and_working(store)
    store.close()


def test_missing_file_is_created_without_a_warning(tmp_path: Path) -> None:
    """No spool file at all is a first start: a fresh spool, nothing moved, nothing logged."""
    path = tmp_path / "spool.db"
    with structlog.testing.capture_logs() as logs:
        store = SpoolStore.open(path, max_bytes=CAP)
    assert _moved_aside(path) == []
    assert [e for e in logs if e["log_level"] in ("warning", "error")] == []
    _assert_fresh_and_working(store)
    store.close()


# -- a full disk: a real 2 MiB tmpfs --------------------------------------------------


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB tmpfs mounted for the test (needs root; skipped with the reason otherwise)."""
    mount_point = tmp_path / "disk"
    mount_point.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a 2 MiB tmpfs to fill the disk needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_full_disk_drops_oldest_and_keeps_going(small_disk: Path) -> None:
    """When the disk fills, append never raises: oldest rows go, counted and logged once,
    and once space is back the spool works normally again."""
    path = small_disk / "spool.db"
    store = SpoolStore.open(path, max_bytes=CAP)  # the cap is far above the disk size
    assert reserve_path(path).stat().st_size > 0  # taken from the free space at open
    # Leave the spool ~400 KiB: ballast takes the rest of the 2 MiB.
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    ballast = small_disk / "ballast"
    ballast.write_bytes(b"\0" * (free - 400 * 1024))
    appended = 0
    with structlog.testing.capture_logs() as logs:
        for _ in range(400):
            store.append(
                [Sample(f"m{i % 4}", "P", float(appended + i), appended + i) for i in range(250)]
            )
            appended += 250
    counts = store.counts()
    assert counts.dropped_samples > 0
    assert counts.samples + counts.dropped_samples == appended
    warnings = [e["event"] for e in logs if e["log_level"] == "warning"]
    assert warnings == ["disk full: dropping the oldest spooled rows to keep spooling"]
    rows = take_points(store, appended)
    assert [r.value for r in rows] == sorted(r.value for r in rows)
    assert rows[-1].value == float(appended - 1)  # the newest rows survived
    assert store.ack(Kind.SAMPLES, [r.id for r in rows]) == len({r.id for r in rows})
    assert store.counts().samples == 0
    ballast.unlink()
    with structlog.testing.capture_logs() as logs:
        store.append([Sample("m0", "P", -1.0, 1)])
    assert [e["event"] for e in logs] == ["the disk has room again: spooling normally"]
    assert [r.value for r in take_points(store, 10)] == [-1.0]
    store.close()
    assert file_bytes(path) < 2 << 20


def test_reopens_on_a_full_disk(small_disk: Path) -> None:
    """A restart on a full disk opens the spool with its rows (no crash, no restart loop)."""
    path = small_disk / "spool.db"
    store = SpoolStore.open(path, max_bytes=CAP)
    for start in range(0, 9000, 500):
        store.append([Sample("m", "P", float(i), i) for i in range(start, start + 500)])
    # Most rows delivered: their pages are free, so opening wants to vacuum and checkpoint.
    assert store.ack(Kind.SAMPLES, [r.id for r in take_points(store, 8000)]) == 8000
    store.close()
    reserve_path(path).unlink(missing_ok=True)
    free = os.statvfs(small_disk).f_bavail * os.statvfs(small_disk).f_frsize
    # Room for SQLite's shared-memory file, none for a checkpoint or vacuum.
    (small_disk / "ballast").write_bytes(b"\0" * (free - 64 * 1024))
    store = SpoolStore.open(path, max_bytes=CAP)
    try:
        rows = take_points(store, 5000)
        assert [r.value for r in rows] == [float(i) for i in range(8000, 9000)]
    finally:
        store.close()


def _poll_cycles(store: SpoolStore, cycles: int, start: int) -> int:
    """Append `cycles` poll cycles of 50 devices x 52 points (frames of ~1.5 KiB, as in
    the chaos disk-full site); returns the next cycle number."""
    for cycle in range(start, start + cycles):
        store.append(
            [
                Sample(f"dev{d}", f"P{p}", float(cycle * 100 + p), cycle * 200)
                for d in range(50)
                for p in range(52)
            ]
        )
    return start + cycles


def _free(directory: Path) -> int:
    usage = os.statvfs(directory)
    return usage.f_bavail * usage.f_frsize


def test_acks_delete_rows_on_a_disk_the_spool_filled(small_disk: Path) -> None:
    """The spool alone fills the disk (the cap is far above it), then acks still delete:
    exactly the acked frames are gone, the others are all there, before and after a
    restart on the full disk. (The WAL, sized by the cap, used to fill the disk by itself
    and could then never be checkpointed: every ack failed with SQLITE_FULL.)"""
    path = small_disk / "spool.db"
    store = SpoolStore.open(path, max_bytes=256 << 20)
    with structlog.testing.capture_logs() as logs:
        cycle = _poll_cycles(store, 150, 0)  # ~11 MiB of frames for a 2 MiB disk
    assert "disk full: dropping the oldest spooled rows to keep spooling" in [
        e["event"] for e in logs
    ]
    assert store.counts().dropped_samples > 0
    for restart in (False, True):
        if restart:
            cycle = _poll_cycles(store, 20, cycle)  # still full
            store.close()
            store = SpoolStore.open(path, max_bytes=256 << 20)
        frames = store.take_frames(100_000)
        before = store.counts().frames
        assert len(frames) == before > 100
        acked, kept = frames[: len(frames) // 2], frames[len(frames) // 2 :]
        with structlog.testing.capture_logs() as logs:
            assert store.ack(Kind.SAMPLES, [f.id for f in acked]) == len(acked)
        assert [e["event"] for e in logs if e["log_level"] == "warning"] == []
        assert store.counts().frames == before - len(acked)
        assert store.in_flight(Kind.SAMPLES) == len(kept)
        store.release_all()
        assert [f.id for f in store.take_frames(100_000)] == [f.id for f in kept]
        store.release_all()
    store.close()
    assert file_bytes(path) < 2 << 20


def _fill_to_the_last_byte(directory: Path) -> Path:
    ballast = directory / "ballast"
    fd = os.open(ballast, os.O_WRONLY | os.O_CREAT)
    try:
        for size in (64 * 1024, 4096, 512, 1):
            with contextlib.suppress(OSError):
                while True:
                    os.write(fd, b"\0" * size)
    finally:
        os.close(fd)
    assert _free(directory) == 0
    return ballast


def test_an_ack_that_cannot_delete_keeps_the_rows_and_settles_later(small_disk: Path) -> None:
    """No byte left and no reserve: the ack deletes nothing, says so once, keeps every
    row (not sent again by this run); once there is room the next ack deletes them."""
    path = small_disk / "spool.db"
    store = SpoolStore.open(path, max_bytes=CAP)
    for start in range(0, 3000, 500):
        store.append([Sample("m", "P", float(i), i) for i in range(start, start + 500)])
    store.reclaim(max_pages=None)  # checkpointed: the WAL holds nothing
    reserve_path(path).unlink()
    ballast = _fill_to_the_last_byte(small_disk)
    first = take_points(store, 1000)
    second = take_points(store, 1000)
    with structlog.testing.capture_logs() as logs:
        assert store.ack(Kind.SAMPLES, [r.id for r in first]) == 0
        assert store.ack(Kind.SAMPLES, [r.id for r in second]) == 0
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert [e["rows"] for e in warnings] == [1000]  # once per episode
    assert warnings[0]["event"].startswith("disk full: cannot delete delivered rows")
    assert store.counts().samples == 3000
    store.release_all()  # a lost connection: delivered rows are not sent again
    assert [r.value for r in take_points(store, 5000)] == [float(i) for i in range(2000, 3000)]
    store.release_all()
    ballast.unlink()
    with structlog.testing.capture_logs() as logs:
        assert store.ack(Kind.SAMPLES, []) == 2000
    assert [(e["event"], e["rows"]) for e in logs if e["log_level"] == "info"] == [
        ("delivered rows deleted again: the spool shrinks", 2000)
    ]
    assert store.counts().samples == 1000
    assert [r.value for r in take_points(store, 5000)] == [float(i) for i in range(2000, 3000)]
    store.close()


def test_a_dead_letter_that_cannot_be_written_keeps_the_rows(small_disk: Path) -> None:
    """No byte left: rejected rows cannot move to the dead letters; they go back to the
    pool (said once), nothing is lost or counted twice, and with room the move works."""
    path = small_disk / "spool.db"
    store = SpoolStore.open(path, max_bytes=CAP)
    store.append([Sample("m", "P", float(i), i) for i in range(300)])
    store.reclaim(max_pages=None)
    reserve_path(path).unlink()
    ballast = _fill_to_the_last_byte(small_disk)
    rows = take_points(store, 300)
    with structlog.testing.capture_logs() as logs:
        assert store.dead_letter(Kind.SAMPLES, [r.id for r in rows[:100]], 1, "bad", 7) == 0
        assert store.dead_letter(Kind.SAMPLES, [r.id for r in rows[100:]], 1, "bad", 7) == 0
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert [(e["event"].split(";")[0], e["rows"]) for e in warnings] == [
        ("disk full: cannot settle rejected rows", 100)
    ]
    counts = store.counts()
    assert (counts.samples, counts.dead_letters, counts.in_flight_samples) == (300, 0, 0)
    ballast.unlink()
    again = take_points(store, 300)
    assert [r.value for r in again] == [float(i) for i in range(300)]
    assert store.dead_letter(Kind.SAMPLES, [r.id for r in again], 1, "bad", 7) == 300
    assert (store.counts().samples, store.counts().dead_letters) == (0, 300)
    store.close()


# -- kill -9 while appending -----------------------------------------------------------

_WRITER = textwrap.dedent(
    """
    import sys
    from gatewayd.samples import Sample
    from gatewayd.spool.store import SpoolStore

    store = SpoolStore.open(sys.argv[1], max_bytes=64 << 20)
    n = 0
    while True:
        store.append([Sample("m", "P", n + i, n + i) for i in range(100)])
        n += 100
        print(n, flush=True)
    """
)


def test_kill_9_loses_no_committed_row(tmp_path: Path) -> None:
    """A writer killed with SIGKILL mid-stream: every row it reported committed is there."""
    path = tmp_path / f"spool-{uuid.uuid4().hex}.db"
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(path)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert writer.stdout is not None
    reported = 0
    try:
        for line in writer.stdout:
            reported = int(line)
            if reported >= 30_000:
                break
    finally:
        writer.send_signal(signal.SIGKILL)
        writer.wait(timeout=10)
    assert writer.returncode == -signal.SIGKILL
    assert reported >= 30_000
    store = SpoolStore.open(path, max_bytes=64 << 20)
    values = [r.value for r in take_points(store, 10**7)]
    # Everything reported is there, in order; rows committed after the last report may be too.
    assert values[:reported] == list(range(reported))
    assert values == list(range(len(values)))
    assert len(values) % 100 == 0  # whole transactions only
    store.close()
