"""`gatewayd run` with a spool it cannot write: one line naming the path and the fix, exit 73.

Tests run as root, which ignores file modes, so "read-only" is made real with the
immutable attribute (`chattr +i`): nobody, root included, may write the file or create
files in the directory. Skipped, with the reason, where the file system has no such flag.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from gatewayd.samples import Sample
from gatewayd.spool.store import SpoolStore
from tests.integration.test_run_e2e import write_site
from tests.support import free_port

pytestmark = pytest.mark.skipif(not shutil.which("chattr"), reason="needs chattr (e2fsprogs)")


@pytest.fixture
def immutable() -> Iterator[list[Path]]:
    """Paths appended to the list are made immutable; always made mutable again after."""
    made: list[Path] = []
    yield made
    for path in reversed(made):
        subprocess.run(["chattr", "-i", str(path)], check=False)


def _make_immutable(paths: list[Path], path: Path) -> None:
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot set the immutable flag here: {done.stderr.strip()}")
    paths.append(path)


def _site(tmp_path: Path) -> tuple[Path, Path]:
    """A site whose spool is state/spool.db; nothing listens on its device or broker ports."""
    config = write_site(tmp_path, free_port(), free_port())
    config.write_text(config.read_text().replace("path: spool.db", "path: state/spool.db"))
    (tmp_path / "state").mkdir()
    return config, tmp_path / "state" / "spool.db"


def _run(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gatewayd", "run", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_read_only_state_directory_exits_73_naming_it(
    tmp_path: Path, immutable: list[Path]
) -> None:
    """No spool yet and a directory nobody may write: exit 73 (EX_CANTCREAT), one line."""
    config, spool = _site(tmp_path)
    _make_immutable(immutable, spool.parent)
    done = _run(config)
    assert done.returncode == os.EX_CANTCREAT == 73, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        f"gatewayd: cannot open the spool {spool}: cannot create files in {spool.parent}: "
        f"Operation not permitted (SQLite keeps its -wal and -shm files, the reserve and "
        f"the status file there: make {spool.parent} writable by the user gatewayd runs "
        f"as (uid {os.geteuid()}), or point spool.path at a writable directory)"
    ]
    assert sorted(spool.parent.iterdir()) == []


def test_existing_spool_in_a_read_only_directory_exits_73_and_keeps_its_rows(
    tmp_path: Path, immutable: list[Path]
) -> None:
    """A spool with rows in a directory turned read-only: refused at start, rows untouched."""
    config, spool = _site(tmp_path)
    store = SpoolStore.open(spool)
    store.append([Sample("meter-1", "voltage", float(i), 1000 + i) for i in range(7)])
    store.close()
    before = spool.read_bytes()
    _make_immutable(immutable, spool.parent)
    done = _run(config)
    assert done.returncode == 73, done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(f"gatewayd: cannot open the spool {spool}: cannot create files in")
    assert spool.read_bytes() == before


def test_read_only_spool_file_exits_73_naming_it(tmp_path: Path, immutable: list[Path]) -> None:
    """An immutable spool file: exit 73 with the file, the cause and the fix; rows kept."""
    config, spool = _site(tmp_path)
    store = SpoolStore.open(spool)
    store.append([Sample("meter-1", "voltage", 1.0, 1000)])
    store.close()
    before = spool.read_bytes()
    _make_immutable(immutable, spool)
    done = _run(config)
    assert done.returncode == 73, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.splitlines() == [
        f"gatewayd: cannot open the spool {spool}: the file is not writable: Operation not "
        f"permitted (make it writable by the user gatewayd runs as (uid {os.geteuid()}) "
        "(chown/chmod; chattr -i if immutable; a read-only file system must be remounted "
        "read-write))"
    ]
    assert spool.read_bytes() == before
    assert [p.name for p in spool.parent.iterdir() if ".corrupt-" in p.name] == []
