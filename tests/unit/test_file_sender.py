"""The file event sender against a real store and a scripted poster (no network)."""

from __future__ import annotations

import json
from pathlib import Path

from gatewayd.clock import SystemClock
from gatewayd.integration.drops import parse_sidecar
from gatewayd.integration.filestore import FileStore
from gatewayd.integration.message import EventRecord, FileAttachment
from gatewayd.integration.replies import Accepted, UploadOutcome
from gatewayd.integration.sender import FileEventSender
from tests.unit.test_file_drops import DEVICES, GOOD

MIB = 1 << 20


def _commit(store: FileStore, outbox: Path, name: str, size: int) -> None:
    (outbox / name).write_bytes(b"x" * size)
    sidecar = {k: v for k, v in GOOD.items() if k != "filename"}  # EnOS keeps NAME
    drop = parse_sidecar(json.dumps(sidecar).encode(), DEVICES)
    store.commit(drop, outbox / name, time_ms=1, source=None)


async def test_an_accepted_event_is_not_counted_as_dropped_while_it_is_being_removed(
    tmp_path: Path,
) -> None:
    """A commit that needs room while the sender removes the event EnOS just accepted must
    not take that event for a cap victim: it was delivered, not lost (dropped stays 0)."""
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    store = FileStore.open(tmp_path / "store", MIB, wall_ms=lambda: 0)
    _commit(store, outbox, "first.bin", 700 * 1024)
    delivered = store.delivered

    def commit_then_remove(event: object) -> None:
        # The watcher's thread commits a drop that needs the room right now.
        _commit(store, outbox, "second.bin", 700 * 1024)
        delivered(event)  # type: ignore[arg-type]

    store.delivered = commit_then_remove  # type: ignore[method-assign]

    async def accept(record: EventRecord, file: FileAttachment, realtime: bool) -> UploadOutcome:
        return Accepted("r1")

    sender = FileEventSender(store, accept, clock=SystemClock(), live_window=30.0)
    assert await sender.send_one()
    assert store.dropped.events == 0
    assert [e.filename for e in store.pending()] == ["second.bin"]
