"""The CONNECTs of the last throttle window, kept in the state directory across restarts.

Without it a restart (or a crash loop under systemd) starts with an empty history and can
send a fifth CONNECT inside EnOS' 2-minute window, which locks the gateway out for five
minutes. The file is small JSON (`{"version": 1, "connects": [epoch seconds, ...]}`),
written atomically (temporary file, fsync, rename) with mode 0600, before each CONNECT
goes out.

A missing file is an empty history (first start). A file that cannot be read or parsed is
taken on the safe side: as if the whole budget had been spent when the file was last
written (its mtime, which is the last CONNECT), so the gateway waits out at most one
window (about 2 minutes) instead of risking a 5-minute lock-out.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from pathlib import Path

import structlog

from gatewayd.enos.reconnect import THROTTLE_ATTEMPTS

log = structlog.get_logger(__name__)

FILE_NAME = "connects.json"
VERSION = 1


def channel_connects_file(product_key: str) -> str:
    """The history file of product `product_key`'s integration channel (mode 4): EnOS
    counts its CONNECTs apart from the gateway's, so it keeps its own window."""
    safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in product_key)
    return f"connects-integration-{safe}.json"


def parse(text: str) -> list[float]:
    """The CONNECT times of a history document, oldest first; ValueError if malformed."""
    document = json.loads(text)
    if not isinstance(document, dict) or document.get("version") != VERSION:
        raise ValueError("not a version-1 CONNECT history")
    connects = document.get("connects")
    if not isinstance(connects, list):
        raise ValueError("no list of CONNECT times")  # noqa: TRY004 (one error: malformed)
    times = [
        t
        for t in connects
        if isinstance(t, int | float) and not isinstance(t, bool) and math.isfinite(t)
    ]
    if len(times) != len(connects):
        raise ValueError("a CONNECT time is not a number")
    return sorted(float(t) for t in times)


class ConnectHistoryFile:
    """Loads and saves the wall-clock times of recent CONNECTs."""

    def __init__(self, path: Path, *, keep: int = THROTTLE_ATTEMPTS) -> None:
        self.path = path
        self._keep = keep
        self._write_failed = False

    def load(self, now_wall: float | None = None) -> list[float]:
        """The persisted CONNECT times (epoch seconds), oldest first."""
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        except OSError as exc:
            return self._assume_spent(f"unreadable: {exc.strerror or exc}", now_wall)
        try:
            times = parse(text)
        except ValueError as exc:
            return self._assume_spent(f"corrupt: {exc}", now_wall)
        return times[-self._keep :]

    def _assume_spent(self, why: str, now_wall: float | None) -> list[float]:
        now = time.time() if now_wall is None else now_wall
        try:
            written = min(self.path.stat().st_mtime, now)
        except OSError:
            written = now
        log.warning(
            "CONNECT history file is unusable; assuming the EnOS connect budget was spent"
            " when it was last written (the first CONNECT may wait up to 2 minutes)",
            path=str(self.path),
            reason=why,
        )
        return [written] * self._keep

    def save(self, wall_times: Sequence[float]) -> None:
        """Write the latest CONNECTs (as many as the budget allows) atomically (0600). A
        failure is logged once and not raised: the in-memory history still guards this run."""
        kept = sorted(wall_times)[-self._keep :]
        document = {"version": VERSION, "connects": [round(t, 3) for t in kept]}
        temp = self.path.with_name(self.path.name + ".tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                json.dump(document, handle)
                handle.flush()
                os.fsync(handle.fileno())
            temp.replace(self.path)
        except OSError as exc:
            temp.unlink(missing_ok=True)  # e.g. a full disk: leave no half-written file
            if not self._write_failed:
                log.warning(
                    "cannot persist the CONNECT history; a restart may not know recent CONNECTs",
                    path=str(self.path),
                    error=str(exc),
                )
            self._write_failed = True
            return
        if self._write_failed:
            log.info("CONNECT history persisted again", path=str(self.path))
            self._write_failed = False
