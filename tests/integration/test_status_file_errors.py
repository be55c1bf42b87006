"""The status file under a write error: one warning per episode, one "recovered" line.

The status loop rewrites `status.json` every few seconds; a state directory that turns
read-only (a file system remounted read-only on errors) made that one warning per loop,
720 lines an hour. The write error here is real: a directory sits where the temporary
file must be written (no root tricks), and removing it ends the episode.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
import structlog

from gatewayd import app
from gatewayd.app import STATUS_FILE, Daemon, state_dir
from gatewayd.config.loader import load_config
from gatewayd.spool.worker import Spool
from gatewayd.systemd import Notifier
from tests.integration.test_run_e2e import write_site
from tests.support import async_wait_until, free_port


class CountingNotifier(Notifier):
    """A notifier outside systemd that counts the status lines (one per loop turn)."""

    def __init__(self) -> None:
        super().__init__(environ={})
        self.turns = 0

    def status(self, text: str) -> bool:
        self.turns += 1
        return False


async def test_status_write_errors_log_once_per_episode(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """19+ failed writes log one warning with the path; the first good write after them logs
    one "recovered" line with the count, and the file is there again."""
    monkeypatch.setattr(app, "STATUS_INTERVAL_S", 0.01)
    config_path = write_site(tmp_path, free_port(), free_port())
    config = load_config(config_path)
    status = state_dir(config) / STATUS_FILE
    blocker = status.with_suffix(".tmp")
    blocker.mkdir(parents=True)
    notifier = CountingNotifier()
    daemon = Daemon(config_path, config, notifier=notifier)
    async with await Spool.open(config.spool) as spool:
        with structlog.testing.capture_logs() as logs:
            loop = asyncio.create_task(daemon._status_loop(spool))
            try:
                await async_wait_until(lambda: notifier.turns >= 20, 30, "20 status turns")
                failing = [e for e in logs if "status file" in e["event"]]
                blocker.rmdir()
                await async_wait_until(status.exists, 30, "the status file written again")
                await async_wait_until(
                    lambda: len([e for e in logs if "status file" in e["event"]]) == 2,
                    30,
                    "the recovered line",
                )
                turns = notifier.turns
                await async_wait_until(lambda: notifier.turns >= turns + 5, 30, "more turns")
            finally:
                loop.cancel()
                await asyncio.gather(loop, return_exceptions=True)
    assert [(e["log_level"], e["path"]) for e in failing] == [("warning", str(status))]
    assert "Is a directory" in failing[0]["error"]
    events = [e for e in logs if "status file" in e["event"]]
    assert [e["log_level"] for e in events] == ["warning", "info"]
    # Turn 20 began after write 19 failed; write 20 may already see the directory gone.
    assert events[1]["failures"] >= 19
    assert json.loads(status.read_text())["pid"] > 0
