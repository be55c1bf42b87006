"""The file events the emulated cloud stored, as the demo shows them; and what is left.

A file event reaches the cloud over the HTTP integration (`integration?action=postEvent`):
the cloud keeps the event, with each file parameter replaced by the stored file's
`enos-connect://` URI, and the file itself. `stored_file_events` joins the two per file,
with the md5 the upload declared and whether it matches the bytes the cloud holds.
`file_events_left` counts, on disk after the daemon stopped, the file events it did not
upload (committed, or captures still in `captures/`): they would go at its next start.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gatewayd.config.models import Config
from gatewayd.integration.filestore import read_counts
from gatewayd.integration.outbox import capture_dir, store_dir
from gatewayd.sim.emulator.http_cloud import IntegrationCloud, StoredFile

__all__ = ["StoredFileEvent", "file_events_left", "save_stored_files", "stored_file_events"]


@dataclass(frozen=True, slots=True)
class StoredFileEvent:
    """One file of one event as the cloud stored it."""

    event: str
    device: str  # the gatewayd device name (the keys when no device has them)
    time_ms: int  # the event's time
    param: str  # the file-typed parameter
    filename: str  # originalFilename: the name EnOS keeps and a download returns
    size: int
    md5: str  # of the bytes the cloud holds
    md5_verified: bool  # the upload declared this md5 (the cloud checked it on receipt)
    realtime: bool  # isRealtimeIntegration of the upload
    uri: str

    def to_json(self) -> dict[str, Any]:
        """The summary's JSON shape."""
        return asdict(self)


def stored_file_events(config: Config, cloud: IntegrationCloud) -> tuple[StoredFileEvent, ...]:
    """Every file of every event the cloud stored, in the order they arrived.

    Reads the cloud's lists while its server thread may append: copies taken first."""
    names = {(d.product_key, d.device_key): d.name for d in config.devices}
    files: dict[str, StoredFile] = dict(cloud.files)
    found: list[StoredFileEvent] = []
    for event in list(cloud.events):
        keys = (event.asset.product_key, event.asset.device_key)
        for param, value in event.params.items():
            stored = files.get(value) if isinstance(value, str) else None
            if stored is None:
                continue
            md5 = hashlib.md5(stored.data, usedforsecurity=False).hexdigest()
            found.append(
                StoredFileEvent(
                    event=event.event_id,
                    device=names.get(keys, "/".join(keys)),
                    time_ms=event.time_ms,
                    param=param,
                    filename=stored.original_filename,
                    size=len(stored.data),
                    md5=md5,
                    md5_verified=stored.md5 == md5,
                    realtime=event.realtime,
                    uri=stored.uri,
                )
            )
    return tuple(found)


def save_stored_files(cloud: IntegrationCloud, directory: Path) -> int:
    """Write the files the cloud holds into `directory` under their original names (for
    `--keep`: what EnOS would return to a download); returns how many."""
    directory.mkdir(parents=True, exist_ok=True)
    stored = list(dict(cloud.files).values())
    for file in stored:
        # The name comes from the upload: keep only its last component.
        (directory / Path(file.original_filename).name).write_bytes(file.data)
    return len(stored)


def file_events_left(config: Config) -> int:
    """File events the stopped daemon left on disk: committed but not delivered (dead
    letters excluded), and finished captures not committed yet."""
    pending, _dropped = read_counts(store_dir(config))
    captures = capture_dir(config)
    drops = sum(1 for _ in captures.glob("*.json")) if captures.is_dir() else 0
    return pending + drops
