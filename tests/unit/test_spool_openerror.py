"""`openerror.explain`: which exit status and words a spool that will not open gets."""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

import pytest

from gatewayd.spool.openerror import SpoolOpenError, explain
from gatewayd.spool.store import SpoolStore


def test_a_spool_locked_by_another_process_is_a_temporary_failure(tmp_path: Path) -> None:
    """A spool another connection holds exclusively: EX_TEMPFAIL (75), which systemd retries."""
    path = tmp_path / "spool.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(SpoolOpenError) as caught:
            SpoolStore.open(path)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert caught.value.exit_status == os.EX_TEMPFAIL == 75
    assert caught.value.render() == (
        f"cannot open the spool {path}: the file is locked: OperationalError: database is "
        "locked (is another gatewayd using the same spool.path?)"
    )


def test_an_io_error_on_a_writable_spool_is_ex_ioerr(tmp_path: Path) -> None:
    """An I/O error where the file and directory are writable: EX_IOERR (74), errno's words."""
    path = tmp_path / "spool.db"
    error = explain(path, OSError(errno.EIO, os.strerror(errno.EIO)))
    assert error.exit_status == os.EX_IOERR == 74
    assert error.render() == (
        f"cannot open the spool {path}: Input/output error (check the disk and the file "
        "system (dmesg), then start again)"
    )


def test_a_missing_directory_that_cannot_be_made_is_ex_cantcreat(tmp_path: Path) -> None:
    """The spool's directory is missing (its parent is a file): EX_CANTCREAT (73)."""
    (tmp_path / "file").write_text("x")
    path = tmp_path / "file" / "state" / "spool.db"
    with pytest.raises(SpoolOpenError) as caught:
        SpoolStore.open(path)
    assert caught.value.exit_status == 73
    assert caught.value.problem == f"cannot create its directory {path.parent}: Not a directory"

