"""The outbox watcher: drops in `integration.outbox` and `<state dir>/captures/` become
committed file events.

Each scan (every second) looks for sidecars (`NAME.json`; a sidecar's presence alone
makes a drop ready, so a payload still being written is never taken), checks each against
the site (`drops.parse_sidecar`), commits it to the store (`filestore`), which then removes
both files. A drop that can never go is moved to `DIR/rejected/` with `NAME.error` (one
line: why) and logged once. A disk that refuses a commit leaves the drop where it is for
the next scan (one warning per episode).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import structlog

from gatewayd.config.models import Config
from gatewayd.episodes import Episodes
from gatewayd.integration.drops import (
    ERROR_SUFFIX,
    MAX_FILE_BYTES,
    BadDrop,
    DeviceFileEvents,
    parse_sidecar,
    payload_name,
)
from gatewayd.integration.filestore import CommitRefused, FileEvent, FileStore, SourceId
from gatewayd.mapping.capture import capture_dir

__all__ = ["OutboxWatcher", "ScanResult", "capture_dir", "store_dir"]

log = structlog.get_logger(__name__)

SCAN_INTERVAL_S = 1.0
REJECTED = "rejected"
FILE_EVENTS = "file-events"




def store_dir(config: Config) -> Path:
    """Where committed file events are kept (next to the spool)."""
    return config.spool.path.parent / FILE_EVENTS


@dataclass(frozen=True, slots=True)
class ScanResult:
    """What one scan did, by payload name."""

    committed: tuple[str, ...] = ()
    rejected: tuple[str, ...] = ()


class OutboxWatcher:
    """Scans its directories and commits what is ready; see the module docstring."""

    def __init__(
        self,
        directories: Iterable[Path],
        store: FileStore,
        devices: Mapping[str, DeviceFileEvents],
        *,
        on_commit: Callable[[], None] = lambda: None,
    ) -> None:
        self.directories = tuple(directories)
        self.store = store
        self.devices = devices
        self._on_commit = on_commit
        self._episodes = Episodes(log)
        self._dropping = False  # the commit under way dropped older events

    async def run(self) -> None:
        """Scan every `SCAN_INTERVAL_S` until cancelled."""
        while True:
            await self.scan()
            await asyncio.sleep(SCAN_INTERVAL_S)

    async def scan(self) -> ScanResult:
        """One pass over every directory."""
        committed: list[str] = []
        rejected: list[str] = []
        for directory in self.directories:
            try:
                sidecars = await asyncio.to_thread(_sidecars, directory)
            except OSError as exc:
                self._episodes.start(
                    ("list", directory),
                    "file event outbox cannot be read",
                    directory=str(directory),
                    error=exc.strerror or str(exc),
                )
                continue
            self._episodes.end(("list", directory), "file event outbox readable again",
                               directory=str(directory))  # fmt: skip
            for sidecar in sidecars:
                outcome = await asyncio.to_thread(self._take, sidecar)
                if outcome == "committed":
                    committed.append(sidecar.name.removesuffix(".json"))
                    self._on_commit()
                elif outcome == "rejected":
                    rejected.append(sidecar.name.removesuffix(".json"))
        return ScanResult(tuple(committed), tuple(rejected))

    def _take(self, sidecar: Path) -> str:
        """Commit or reject one drop (blocking): "committed", "rejected" or "" (later)."""
        payload = sidecar.with_name(sidecar.name.removesuffix(".json"))
        try:
            source = SourceId.of(sidecar)
            already = self.store.committed(source)
            if already is not None:  # committed, but its files were not removed yet
                self.store.release(already)
                return ""
            raw = sidecar.read_bytes()
        except FileNotFoundError:
            return ""  # taken away meanwhile
        except OSError as exc:
            self._disk_trouble(sidecar, exc)
            return ""
        try:
            drop = parse_sidecar(raw, self.devices)
            _check_payload(payload)
            time_ms = drop.time_ms if drop.time_ms is not None else source.mtime_ns // 1_000_000
            self._dropping = False
            event = self.store.commit(
                drop, payload, time_ms=time_ms, source=source, on_drop=self._dropped
            )
        except (BadDrop, CommitRefused) as exc:
            self._reject(sidecar, payload, str(exc))
            return "rejected"
        except OSError as exc:
            self._disk_trouble(sidecar, exc)
            return ""
        self._episodes.end(("commit", sidecar.parent), "file events committed again")
        if not self._dropping:
            self._episodes.end(("drop",), "file events fit under integration.max_bytes again",
                               count_as="dropped")  # fmt: skip
        log.info(
            "file event committed",
            device=event.device,
            event_id=event.event,
            file=payload.name,
            bytes=event.length,
            md5=event.md5,
        )
        return "committed"

    def _dropped(self, victim: FileEvent) -> None:
        self._dropping = True
        self._episodes.start(
            ("drop",),
            "file events over integration.max_bytes: dropping the oldest",
            max_bytes=self.store.max_bytes,
        )
        self._episodes.add(("drop",))
        log.debug("file event dropped", device=victim.device, seq=victim.seq, bytes=victim.size)

    def _disk_trouble(self, sidecar: Path, exc: OSError) -> None:
        self._episodes.start(
            ("commit", sidecar.parent),
            "file event drop cannot be committed or moved aside; it stays in the outbox",
            file=sidecar.name,
            error=exc.strerror or str(exc),
        )

    def _reject(self, sidecar: Path, payload: Path, why: str) -> None:
        """Move the drop to `rejected/` with a one-line `.error`; one warning."""
        rejected = sidecar.parent / REJECTED
        try:
            # The outbox's mode, not the daemon's umask (0077): whoever drops reads why.
            mode = sidecar.parent.stat().st_mode & 0o777
            if not rejected.is_dir():
                rejected.mkdir()
                rejected.chmod(mode)
            error = rejected / (payload.name + ERROR_SUFFIX)
            error.write_text(why + "\n")
            error.chmod(mode & 0o666)
            with contextlib.suppress(FileNotFoundError):
                os.replace(payload, rejected / payload.name)
            os.replace(sidecar, rejected / sidecar.name)
        except OSError as exc:
            # Left in place and found again next scan: one warning per episode, not per scan.
            self._disk_trouble(sidecar, exc)
            return
        log.warning("file event drop rejected", file=payload.name, reason=why,
                    moved_to=str(rejected))  # fmt: skip


def _check_payload(payload: Path) -> None:
    """`BadDrop` when the payload is missing or larger than EnOS takes (nothing is read)."""
    if not payload.is_file():
        raise BadDrop(f"the file {payload.name!r} the sidecar describes does not exist")
    length = payload.stat().st_size
    if length > MAX_FILE_BYTES:
        raise BadDrop(f"file is {length} bytes, over EnOS' limit of {MAX_FILE_BYTES}")


def _sidecars(directory: Path) -> list[Path]:
    """The ready drops' sidecars in `directory`, oldest first (by mtime, then name)."""
    found = []
    with os.scandir(directory) as entries:
        for entry in entries:
            if payload_name(entry.name) is None or not entry.is_file(follow_symlinks=False):
                continue
            with contextlib.suppress(FileNotFoundError):
                found.append((entry.stat().st_mtime_ns, entry.name, Path(entry.path)))
    return [path for _, _, path in sorted(found)]
