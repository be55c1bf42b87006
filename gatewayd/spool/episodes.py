"""Trouble episodes of the spool: one warning when one starts, one line when it is over.

An episode (the byte cap dropping rows, a full disk, failing writes) counts the rows it
cost while it lasts, so its closing line says what it cost in all.
"""

from __future__ import annotations

import structlog

log = structlog.get_logger()


class Episodes:
    """The open episodes by name, each with the rows it cost so far."""

    def __init__(self) -> None:
        self._open: dict[str, int] = {}

    def __contains__(self, name: str) -> bool:
        return name in self._open

    def start(self, name: str, message: str, **fields: object) -> bool:
        """Open `name` with a warning unless it is open already; True if it was new."""
        if name in self._open:
            return False
        self._open[name] = 0
        log.warning(message, **fields)
        return True

    def end(self, name: str, message: str, *, count_as: str | None = "dropped_rows") -> None:
        """Close `name` with an info line naming its count under `count_as` (if open)."""
        if name not in self._open:
            return
        rows = self._open.pop(name)
        if count_as is None:
            log.info(message)
        else:
            log.info(message, **{count_as: rows})

    def add(self, name: str, rows: int) -> None:
        """Count `rows` to `name` (opening it silently if it is not open)."""
        self._open[name] = self._open.get(name, 0) + rows

    def set(self, name: str, rows: int) -> None:
        """Set the count of `name` (opening it silently if it is not open)."""
        self._open[name] = rows
