"""The spool file on disk: open it with the right pragmas, check it, move a bad one aside.

A spool file that SQLite cannot read (empty, garbage, truncated, failed `quick_check`,
or written by a newer gatewayd) is renamed to `<name>.corrupt-<UTC time>` together with its
`-wal` and `-shm` companions (so the pair can still be opened for forensics) and a fresh
file takes its place: the daemon keeps running and nothing on disk is deleted.
Errors that a fresh file would not cure (permissions, a locked file, I/O errors) are
raised, never answered by moving the file.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from pathlib import Path
from urllib.parse import quote

import structlog

from gatewayd.config.models import SyncMode
from gatewayd.spool import openerror, schema
from gatewayd.spool.frames import FrameEncoder

log = structlog.get_logger()

#: Primary SQLite result codes that mean "this file is not a usable database".
_SQLITE_CORRUPT = 11
_SQLITE_NOTADB = 26
#: The companions SQLite keeps next to a WAL-mode database file.
COMPANION_SUFFIXES = ("-wal", "-shm")
#: The reserve file given up when the disk fills (see `store.py`).
RESERVE_SUFFIX = ".reserve"


class SpoolCorruptError(Exception):
    """The spool file failed its integrity check."""


def is_corruption(exc: BaseException) -> bool:
    """True for the SQLite errors that mean the file itself is damaged."""
    if isinstance(exc, (SpoolCorruptError, schema.SchemaTooNewError)):
        return True
    code = getattr(exc, "sqlite_errorcode", None)
    return (
        isinstance(exc, sqlite3.DatabaseError)
        and code is not None
        and (code & 0xFF in (_SQLITE_CORRUPT, _SQLITE_NOTADB))
    )


def file_bytes(path: Path) -> int:
    """Bytes the spool occupies on disk: the database, its WAL, shm and reserve files."""
    total = 0
    suffixes = (*COMPANION_SUFFIXES, RESERVE_SUFFIX)
    for candidate in (path, *(Path(f"{path}{suffix}") for suffix in suffixes)):
        with contextlib.suppress(FileNotFoundError):
            total += candidate.stat().st_size
    return total


def connect(
    path: Path, synchronous: SyncMode, *, check: bool, encoder: FrameEncoder | None = None
) -> sqlite3.Connection:
    """Open (creating if needed) the spool read-write, in WAL mode, migrated to the latest.

    Raises the SQLite error (or `SpoolCorruptError`/`SchemaTooNewError`) when the file is
    unusable; `is_corruption` tells whether moving it aside would help. `encoder` shapes
    the values an upgrade converts into frames (`schema.migrate`).
    """
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        _prepare(conn, synchronous, check=check, encoder=encoder)
    except BaseException:
        conn.close()
        raise
    return conn


def _prepare(
    conn: sqlite3.Connection,
    synchronous: SyncMode,
    *,
    check: bool,
    encoder: FrameEncoder | None,
) -> None:
    is_new = (
        schema.version(conn) == 0
        and not conn.execute("SELECT 1 FROM sqlite_master LIMIT 1").fetchone()
    )
    if is_new:
        # Must precede WAL mode and the first table, or SQLite ignores it.
        conn.execute("PRAGMA auto_vacuum = INCREMENTAL")
    mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if mode != "wal":
        raise sqlite3.OperationalError(f"spool: cannot enable WAL mode (got {mode!r})")
    conn.execute(f"PRAGMA synchronous = {synchronous.value.upper()}")
    # Freed pages need not be zeroed (Debian builds SQLite with secure_delete on):
    # FAST zeroes only when it costs no extra I/O.
    conn.execute("PRAGMA secure_delete = FAST")
    conn.execute("PRAGMA temp_store = MEMORY")
    if check:
        verdict = conn.execute("PRAGMA quick_check").fetchall()
        if verdict != [("ok",)]:
            raise SpoolCorruptError("; ".join(str(row[0]) for row in verdict[:5]))
    schema.migrate(conn, encoder=encoder)


def connect_read_only(path: Path) -> sqlite3.Connection:
    """Open an existing spool for reading while the daemon may be writing it (WAL)."""
    conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, isolation_level=None)
    conn.execute("PRAGMA query_only = 1")
    conn.execute("PRAGMA busy_timeout = 2000")
    return conn


def reserve_path(path: Path) -> Path:
    """Where the reserve file of the spool at `path` lives."""
    return Path(f"{path}{RESERVE_SUFFIX}")


def free_bytes(directory: Path) -> int:
    """Bytes an unprivileged process may still write on the file system of `directory`."""
    stat = os.statvfs(directory)
    return stat.f_bavail * stat.f_frsize


def reserve_size(path: Path) -> int:
    """Size of the current reserve file (0 if there is none)."""
    try:
        return reserve_path(path).stat().st_size
    except FileNotFoundError:
        return 0


def make_reserve(path: Path, size: int) -> bool:
    """Create the reserve file of `size` real blocks if twice that is free; True if made."""
    reserve = reserve_path(path)
    if free_bytes(path.parent) < 2 * size:
        return False
    try:
        with reserve.open("wb") as handle:
            try:
                os.posix_fallocate(handle.fileno(), 0, size)
            except OSError:  # a file system without fallocate: write the zeros
                handle.write(bytes(size))
    except OSError:
        reserve.unlink(missing_ok=True)
        return False
    return True


def release_reserve(path: Path) -> bool:
    """Delete the reserve file; True if there was one to give up."""
    reserve = reserve_path(path)
    try:
        reserve.unlink()
    except FileNotFoundError:
        return False
    return True


def move_aside(path: Path, reason: str) -> Path:
    """Rename a bad spool file and its companions to `<name>.corrupt-<UTC time>`; log it."""
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = path.with_name(f"{path.name}.corrupt-{stamp}")
    serial = 0
    while target.exists():
        serial += 1
        target = path.with_name(f"{path.name}.corrupt-{stamp}-{serial}")
    if path.exists():
        path.rename(target)
    for suffix in COMPANION_SUFFIXES:
        companion = Path(f"{path}{suffix}")
        if companion.exists():
            companion.rename(Path(f"{target}{suffix}"))
    log.error(
        "spool file unusable: moved it aside and started a fresh spool",
        path=str(path),
        moved_to=str(target),
        reason=reason,
    )
    return target


def _is_empty_file(path: Path) -> bool:
    """True when `path` exists as a regular file of 0 bytes."""
    try:
        stat = path.stat()
    except FileNotFoundError:
        return False
    return stat.st_size == 0 and path.is_file()


def open_or_replace(
    path: Path, synchronous: SyncMode, *, check: bool, encoder: FrameEncoder | None = None
) -> sqlite3.Connection:
    """`connect`, but a corrupt or too-new file is moved aside and a fresh one opened."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # The directory is written as well as the file (-wal, -shm, the reserve, the status
    # file): SQLite can open an existing spool without them and fail later, or not at all
    # and leave the status file unwritten, so a read-only directory stops the start here.
    if (error := openerror.create_probe(path.parent)) is not None:
        raise error
    if _is_empty_file(path):
        # SQLite would take a 0-byte file for a new database, and the counters and rows it
        # held would be gone without a word: a real spool always has at least its header.
        move_aside(path, "the file is empty (0 bytes): emptied outside gatewayd")
        return connect(path, synchronous, check=False, encoder=encoder)
    try:
        return connect(path, synchronous, check=check, encoder=encoder)
    except Exception as exc:
        if not is_corruption(exc):
            raise
        move_aside(path, f"{type(exc).__name__}: {exc}")
    return connect(path, synchronous, check=False, encoder=encoder)
