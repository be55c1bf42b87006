"""The file event sender against a real store and a scripted poster (no network)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from gatewayd.clock import SystemClock
from gatewayd.integration.drops import parse_sidecar
from gatewayd.integration.filestore import FileEvent, FileStore, SourceId
from gatewayd.integration.message import EventRecord, FileAttachment
from gatewayd.integration.replies import Accepted, Retryable, UploadOutcome
from gatewayd.integration.sender import FileEventSender, is_live
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


async def test_a_capture_completed_just_now_goes_realtime_and_an_old_drop_as_backlog(
    tmp_path: Path,
) -> None:
    """Realtime is judged from when the drop was complete (its sidecar), not from the event:
    a capture whose `after` outlasts the live window is still live news when it is sent,
    and the same drop sent a window later goes as backlog."""
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    store = FileStore.open(tmp_path / "store", 64 * MIB, wall_ms=lambda: 0)
    (outbox / "trip.csv").write_bytes(b"time,p\n")
    sidecar_path = outbox / "trip.csv.json"
    sidecar_path.write_text(json.dumps({k: v for k, v in GOOD.items() if k != "filename"}))
    drop = parse_sidecar(sidecar_path.read_bytes(), DEVICES)
    ready_s = sidecar_path.stat().st_mtime
    event_ms = int((ready_s - 60) * 1000)  # the event fired a minute before the file was done
    store.commit(drop, outbox / "trip.csv", time_ms=event_ms, source=SourceId.of(sidecar_path))
    flags: list[bool] = []

    async def refuse(record: EventRecord, file: FileAttachment, realtime: bool) -> UploadOutcome:
        flags.append(realtime)
        return Retryable("cloud away")

    clock = _FixedClock(ready_s + 1)
    sender = FileEventSender(store, refuse, clock=clock, live_window=30.0)
    await sender._attempt(store.pending()[0])
    clock.now = ready_s + 31
    await sender._attempt(store.pending()[0])
    assert flags == [True, False]


def test_a_file_finished_long_after_its_event_is_history() -> None:
    """A drop completed now about an event older than a capture can span (1 h) is
    history even when sent at once; one completed within it is live news."""
    now = 1_800_000_000_000
    fresh = SourceId("x.json", 0, 0, now * 1_000_000, 1)
    event = FileEvent(seq=1, device="d", product_key="p", device_key="k", event="e",
                      file_param="f", params={}, time_ms=now - 2 * 3_600_000, filename="x",
                      md5="", length=1, committed_ms=now, source=fresh)  # fmt: skip
    assert not is_live(event, now, 30_000)
    assert is_live(replace(event, time_ms=now - 3_600_000), now, 30_000)
    assert not is_live(replace(event, source=None, committed_ms=now - 31_000), now, 30_000)


class _FixedClock(SystemClock):
    """Wall time stands where the test puts it."""

    def __init__(self, now: float) -> None:
        self.now = now

    def time(self) -> float:
        return self.now
