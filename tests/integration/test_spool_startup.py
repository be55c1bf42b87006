"""`gatewayd run` with a spool it cannot write: one line naming the path and the fix, exit 73.

Tests run as root, which ignores file modes, so "read-only" is made real with the
immutable attribute (`chattr +i`): nobody, root included, may write the file or create
files in the directory; and with a read-only bind mount in a private mount namespace.
Skipped, with the reason, where neither can be had.
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
        f"gatewayd: cannot open the spool {spool}: cannot create files in its directory "
        f"{spool.parent}: Operation not permitted (the directory is probably immutable: "
        "lsattr shows the 'i' flag, chattr -i clears it)"
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
    assert line.startswith(
        f"gatewayd: cannot open the spool {spool}: cannot create files in its directory"
    )
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
        "permitted (the file is probably immutable: lsattr shows the 'i' flag, chattr -i "
        "clears it)"
    ]
    assert spool.read_bytes() == before
    assert [p.name for p in spool.parent.iterdir() if ".corrupt-" in p.name] == []


def test_read_only_file_system_says_remount(tmp_path: Path) -> None:
    """A spool directory on a read-only mount (a private mount namespace, so nothing else
    sees it): exit 73 and the hint to remount read-write."""
    if os.geteuid() != 0:
        pytest.skip("a read-only bind mount needs root")
    script = (
        "import sys; from pathlib import Path; from gatewayd.spool.store import SpoolStore\n"
        "from gatewayd.spool.openerror import SpoolOpenError\n"
        "try: SpoolStore.open(Path(sys.argv[1]))\n"
        "except SpoolOpenError as e: print(e.exit_status, e.render())\n"
    )
    state = tmp_path / "state"
    state.mkdir()
    done = subprocess.run(
        ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
         'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"',
         "sh", str(state), sys.executable, "-c", script, str(state / "spool.db")],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    if done.returncode != 0 and "mount" in done.stderr:
        pytest.skip(f"cannot make a read-only bind mount here: {done.stderr.strip()}")
    assert done.stdout.splitlines() == [
        f"73 cannot open the spool {state / 'spool.db'}: cannot create files in its directory "
        f"{state}: Read-only file system (the directory is on a read-only file system: "
        "remount it read-write)"
    ], done.stderr
