"""The status file `gatewayd status` reads: written atomically, its failures logged once.

The daemon rewrites it every few seconds. A state directory that cannot be written (a
file system remounted read-only, a full disk) must not flood the journal with the same
warning every time: one warning when writing starts to fail, one "recovered" line (with
how many writes failed and for how long) when it works again, silence in between.
"""

from __future__ import annotations

from pathlib import Path

import structlog

from gatewayd.episodes import Episodes

log = structlog.get_logger(__name__)


class StatusFile:
    """Writes the daemon's status report to `path` (used from one thread at a time)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._edge = Episodes(log)

    def write(self, text: str) -> bool:
        """Replace the file with `text` (temp file + rename); False if that failed."""
        temp = self.path.with_suffix(".tmp")
        try:
            temp.write_text(text)
            temp.replace(self.path)
        except OSError as exc:
            # Acquisition goes on: the spool copes with the disk, and the status file is
            # only a convenience for `gatewayd status` (it shows "not running" meanwhile).
            self._edge.failed(
                "status-file", "cannot write the status file", path=str(self.path), error=str(exc)
            )
            return False
        self._edge.ok("status-file", "status file written again", path=str(self.path))
        return True
