"""Capture files on disk, in the outbox format the file-event watcher reads.

A complete capture is a drop: `NAME` (the CSV) and `NAME.json` (its sidecar), the sidecar
written last. While a capture runs, its files are `NAME.part` (header and rows so far)
and `NAME.json.part` (the sidecar it will get); neither looks like a drop to the watcher
(a payload never ends in `.part`, a sidecar always ends in `.json`).

Order of work, so that a kill -9 at any point loses no event:
- begin: `NAME.json.part` (written as `.tmp`, fsynced, renamed), then `NAME.part` with the
  header and the `before` rows, fsynced, then the directory fsynced;
- append: rows written through to the kernel (a killed process keeps them; the final
  fsync covers a power cut);
- finish: `NAME.part` fsynced and renamed to `NAME`, then `NAME.json.part` renamed to
  `NAME.json`, the directory fsynced after each.
`recover()` at start completes every `NAME.json.part` as it is: its `NAME.part` (or, if the
kill came between the two renames, `NAME`) becomes the payload; a capture killed before
its first row was written gets a file with the bare `time` header.

Synchronous: the daemon calls it through `asyncio.to_thread` (`captures.py`), one call at
a time, so the open files are never shared between threads.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from gatewayd.mapping.capture import Append, Begin, Finish

__all__ = ["CaptureStore", "Completed"]

PART = ".part"
SIDECAR = ".json"
TMP = ".tmp"


@dataclass(frozen=True, slots=True)
class Completed:
    """A drop published: its payload name, data rows and bytes."""

    name: str
    rows: int
    size: int


@dataclass(slots=True)
class _Open:
    name: str
    file: IO[str]
    rows: int


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class CaptureStore:
    """The capture directory: running captures' `.part` files and complete drops."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._open: dict[int, _Open] = {}

    def _free_name(self, filename: str) -> str:
        """`filename`, or `stem-2.csv`, `stem-3.csv`... if a capture of that name exists."""
        stem, dot, ext = filename.rpartition(".")
        n = 1
        while True:
            name = filename if n == 1 else f"{stem}-{n}{dot}{ext}"
            taken = (name, name + PART, name + SIDECAR, name + SIDECAR + PART)
            if not any((self.directory / t).exists() for t in taken):
                return name
            n += 1

    def begin(self, action: Begin) -> str:
        """Start a capture's files; returns its payload name."""
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        name = self._free_name(action.filename)
        pending = self.directory / (name + SIDECAR + PART)
        _write_atomically(pending, json.dumps(action.sidecar, sort_keys=True) + "\n")
        file = (self.directory / (name + PART)).open("x", encoding="utf-8", newline="")
        try:
            file.write(action.text)
            file.flush()
            os.fsync(file.fileno())
        except BaseException:
            file.close()
            raise
        _fsync_dir(self.directory)
        self._open[action.capture] = _Open(name, file, action.text.count("\n") - 1)
        return name

    def append(self, action: Append) -> None:
        """More rows of a running capture (ignored if its begin failed)."""
        running = self._open.get(action.capture)
        if running is None:
            return
        running.file.write(action.text)
        running.file.flush()
        running.rows += action.rows

    def finish(self, action: Finish) -> Completed | None:
        """Publish a capture as a drop (None if its begin failed)."""
        running = self._open.pop(action.capture, None)
        if running is None:
            return None
        with running.file as file:
            file.flush()
            os.fsync(file.fileno())
        return self._publish(running.name, running.rows)

    def _publish(self, name: str, rows: int) -> Completed:
        payload = self.directory / name
        part = self.directory / (name + PART)
        if part.exists():
            part.rename(payload)
            _fsync_dir(self.directory)
        (self.directory / (name + SIDECAR + PART)).rename(self.directory / (name + SIDECAR))
        _fsync_dir(self.directory)
        return Completed(name, rows, payload.stat().st_size)

    def recover(self) -> list[Completed]:
        """Complete the captures a crash left running, as they are (see the module doc)."""
        if not self.directory.is_dir():
            return []
        completed = []
        for stray in self.directory.glob(f"*{SIDECAR}{PART}{TMP}"):
            stray.unlink()  # a sidecar never renamed into place: its capture had no rows
        for pending in sorted(self.directory.glob(f"*{SIDECAR}{PART}")):
            name = pending.name.removesuffix(SIDECAR + PART)
            part = self.directory / (name + PART)
            payload = self.directory / name
            if part.exists():
                with part.open("r+b") as file:
                    os.fsync(file.fileno())
            elif not payload.exists():
                _write_atomically(payload, "time\r\n")
            source = part if part.exists() else payload
            with source.open("rb") as file:
                rows = max(sum(1 for _ in file) - 1, 0)
            completed.append(self._publish(name, rows))
        return completed

    def close(self) -> None:
        """Close the files of captures still running (they stay `.part`)."""
        for running in self._open.values():
            running.file.close()
        self._open.clear()


def _write_atomically(path: Path, text: str) -> None:
    """`text` into `path` via `path.tmp`, fsynced, renamed."""
    tmp = path.with_name(path.name + TMP)
    with tmp.open("w", encoding="utf-8", newline="") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    tmp.rename(path)
