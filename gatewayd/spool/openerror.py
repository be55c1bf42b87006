"""Why the spool could not be opened at start, said in one line with the fix and an exit status.

A damaged spool is moved aside (`files.py`); what a fresh file would not cure (a read-only
file, directory or file system, a lock, an I/O error) stops the daemon. SQLite's own words
("unable to open database file", "attempt to write a readonly database") name neither the
file nor the cause, so on such a failure the file and its directory are probed with plain
`open` calls, whose errors do (`EROFS`, `EACCES`, `EPERM` for an immutable file).

Exit statuses are sysexits(3), which the systemd unit does not restart on (a restart would
only fail again): `EX_CANTCREAT` (73) when the spool cannot be written or created,
`EX_IOERR` (74) for other I/O errors. A spool locked by another process is `EX_TEMPFAIL`
(75): that one may clear, so systemd may try again.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import tempfile
from pathlib import Path

_SQLITE_BUSY = 5
_SQLITE_LOCKED = 6


class SpoolOpenError(Exception):
    """The spool cannot be used for a reason outside it; `render()` is the one-line report."""

    def __init__(self, path: Path, problem: str, hint: str, exit_status: int) -> None:
        self.path = path
        self.problem = problem
        self.hint = hint
        self.exit_status = exit_status
        super().__init__(self.render())

    def render(self) -> str:
        """`cannot open the spool PATH: problem (hint)`."""
        return f"cannot open the spool {self.path}: {self.problem} ({self.hint})"


def _write_probe(path: Path) -> OSError | None:
    """The error opening the existing `path` for writing raises (nothing is written)."""
    try:
        with path.open("r+b"):
            return None
    except FileNotFoundError:
        return None
    except OSError as exc:
        return exc


def create_probe(directory: Path) -> OSError | None:
    """The error creating a file in `directory` raises (the probe file is removed again)."""
    try:
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".gatewayd-probe-"):
            return None
    except OSError as exc:
        return exc


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _fix(error: OSError, target: str) -> str:
    """What makes `target` (the file, or a directory) writable, for this `error`."""
    if error.errno == errno.EROFS:
        return f"{target} is on a read-only file system: remount it read-write"
    if error.errno == errno.EPERM:
        return f"{target} is probably immutable: lsattr shows the 'i' flag, chattr -i clears it"
    return f"make {target} writable by uid {os.geteuid()}, the user gatewayd runs as"


def explain(path: Path, exc: BaseException) -> SpoolOpenError:
    """Turn a failure to open the spool at `path` into a `SpoolOpenError` naming the cause."""
    directory = path.parent
    if not directory.is_dir():
        return SpoolOpenError(
            path,
            f"cannot create its directory {directory}: {_describe(exc)}",
            f"create {directory} writable by uid {os.geteuid()}, the user gatewayd runs "
            "as, or point spool.path elsewhere",
            os.EX_CANTCREAT,
        )
    if (error := _write_probe(path)) is not None:
        return SpoolOpenError(
            path,
            f"the file is not writable: {_reason(error)}",
            _fix(error, "the file"),
            os.EX_CANTCREAT,
        )
    if (error := create_probe(directory)) is not None:
        # SQLite keeps its -wal and -shm files there, and the reserve and status files live
        # there too: the directory must be writable, not only the file.
        return SpoolOpenError(
            path,
            f"cannot create files in its directory {directory}: {_reason(error)}",
            _fix(error, "the directory"),
            os.EX_CANTCREAT,
        )
    code = getattr(exc, "sqlite_errorcode", None) if isinstance(exc, sqlite3.Error) else None
    if code is not None and code & 0xFF in (_SQLITE_BUSY, _SQLITE_LOCKED):
        return SpoolOpenError(
            path,
            f"the file is locked: {_describe(exc)}",
            "is another gatewayd using the same spool.path?",
            os.EX_TEMPFAIL,
        )
    return SpoolOpenError(
        path,
        _describe(exc),
        "check the disk and the file system (dmesg), then start again",
        os.EX_IOERR,
    )


def _describe(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return f"{type(exc).__name__}: {exc}"
