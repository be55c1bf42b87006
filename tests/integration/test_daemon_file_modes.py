"""Files the daemon writes are private (0600, directories 0700) whatever umask starts it."""

from __future__ import annotations

import shlex
import signal
import stat
import subprocess
import sys
from pathlib import Path

from tests.integration.test_run_e2e import write_site
from tests.support import free_port, wait_until


def _mode(path: Path) -> str:
    return f"{stat.S_IMODE(path.stat().st_mode):04o}"


def test_daemon_started_under_umask_022_writes_only_private_files(tmp_path: Path) -> None:
    """Under umask 022 (a shell, a careless unit) the spool, its WAL and shm, the reserve,
    the status file and the state directory it creates are 0600/0700, not 0644/0755."""
    config = write_site(tmp_path, free_port(), free_port())
    config.write_text(config.read_text().replace("path: spool.db", "path: state/spool.db"))
    state = tmp_path / "state"
    command = shlex.join([sys.executable, "-m", "gatewayd", "run", str(config)])
    process = subprocess.Popen(
        ["sh", "-c", f"umask 022 && exec {command}"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        names = ["spool.db", "spool.db-shm", "spool.db-wal", "spool.db.reserve", "status.json"]
        wait_until(
            lambda: all((state / name).exists() for name in names),
            60,
            "the spool files and the status file",
        )
        assert process.poll() is None
        modes = {name: _mode(state / name) for name in names}
        assert modes == dict.fromkeys(names, "0600")
        assert _mode(state) == "0700"
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
