"""File events in process: outbox → store → upload to the emulated cloud over loopback HTTP.

The watcher, store and sender are the daemon's own (`gatewayd.integration.filetask` wires
them the same way); the cloud parses every upload with the stdlib `email` parser.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import structlog
import structlog.testing

from gatewayd.backoff import Backoff
from gatewayd.clock import SystemClock
from gatewayd.config.loader import load_config
from gatewayd.config.models import Config
from gatewayd.integration import filestore
from gatewayd.integration.drops import catalogue
from gatewayd.integration.filestore import FileStore
from gatewayd.integration.filetask import open_store
from gatewayd.integration.http import HttpSettings, IntegrationClient
from gatewayd.integration.message import EventRecord, FileAttachment
from gatewayd.integration.outbox import OutboxWatcher, capture_dir, store_dir
from gatewayd.integration.replies import UploadOutcome
from gatewayd.integration.sender import FileEventSender
from gatewayd.mapping.capture import (
    Append,
    Begin,
    DeviceCaptures,
    Finish,
    capture_specs,
    point_intervals_ms,
)
from gatewayd.mapping.capture_store import CaptureStore
from gatewayd.samples import Event
from gatewayd.sim.emulator.http_cloud import HttpRequest, HttpResponse, IntegrationCloud
from gatewayd.sim.emulator.http_server import IntegrationHttpServer
from tests.integration.file_events_support import CAPTURE_MODEL, MODEL, drop, write_site
from tests.integration.integration_http_support import integration_spec
from tests.support import async_wait_until, free_port

TIME_MS = 1_764_928_800_000


@dataclass
class Pipeline:
    config: Config
    outbox: Path
    store: FileStore
    watcher: OutboxWatcher
    sender: FileEventSender
    cloud: IntegrationCloud

    def stored_md5s(self) -> list[str]:
        return [hashlib.md5(f.data).hexdigest() for f in self.cloud.files.values()]


@contextlib.asynccontextmanager
async def pipeline(
    tmp_path: Path,
    cloud: IntegrationCloud,
    address: str,
    max_bytes: str = "1GiB",
    model: str = MODEL,
) -> AsyncIterator[Pipeline]:
    """The daemon's file event parts for a site whose integration.http is `address`."""
    site = write_site(tmp_path, address, max_bytes=max_bytes, model=model)
    config = load_config(site, environ={})
    store = await open_store(config)
    capture_dir(config).mkdir(exist_ok=True)
    assert config.integration.http is not None
    assert config.integration.outbox is not None
    async with IntegrationClient(HttpSettings.from_config(config.integration.http)) as client:

        async def post(record: EventRecord, file: FileAttachment, realtime: bool) -> UploadOutcome:
            return await client.post_event([record], [file], realtime=realtime)

        # Short retries: the outage test waits through a few of them.
        sender = FileEventSender(
            store,
            post,
            clock=SystemClock(),
            live_window=config.uplink.live_window,
            backoff=Backoff(initial=0.05, maximum=0.5),
        )
        watcher = OutboxWatcher(
            [config.integration.outbox, capture_dir(config)], store, catalogue(config)
        )
        yield Pipeline(config, config.integration.outbox, store, watcher, sender, cloud)


async def drain(p: Pipeline) -> None:
    """Scan once, then send until the store holds nothing pending."""
    await p.watcher.scan()
    while await p.sender.send_one():
        pass


@pytest.fixture
def cloud_server() -> IntegrationHttpServer:
    server = IntegrationHttpServer(IntegrationCloud(integration_spec()))
    server.start()
    yield server  # type: ignore[misc]
    server.stop()


async def test_a_dropped_file_arrives_once_with_its_md5_length_name_and_params(
    tmp_path: Path, cloud_server: IntegrationHttpServer
) -> None:
    """One drop: the cloud stores the bytes under the sidecar's filename, the event carries
    the params and the file's URI, the outbox is empty and the store holds nothing."""
    data = os.urandom(200_000) + b"\r\n--boundary-like--\r\n"
    async with pipeline(tmp_path, cloud_server.cloud, cloud_server.url) as p:
        md5 = drop(p.outbox, "trip-1.bin", data, time=TIME_MS, filename="inv-trip-10h00.bin")
        await drain(p)
        assert sorted(os.listdir(p.outbox)) == []
        assert p.store.pending() == []
        assert p.store.dead_letters() == []
    cloud = cloud_server.cloud
    assert cloud.rejections == []
    (event,) = cloud.events
    (stored,) = cloud.files.values()
    assert (stored.original_filename, hashlib.md5(stored.data).hexdigest(), len(stored.data)) == (
        "inv-trip-10h00.bin",
        md5,
        len(data),
    )
    assert (event.event_id, event.time_ms, event.realtime) == ("tripRecord", TIME_MS, False)
    assert event.params == {"reason": 7, "note": "trip-1.bin", "capture": stored.uri}


async def test_a_fresh_drop_goes_realtime_and_takes_its_time_from_the_sidecar_mtime(
    tmp_path: Path, cloud_server: IntegrationHttpServer
) -> None:
    """Without `time`, the event's time is the sidecar's mtime; younger than live_window
    it goes as realtime; without `filename` EnOS keeps the payload's name."""
    async with pipeline(tmp_path, cloud_server.cloud, cloud_server.url) as p:
        drop(p.outbox, "now.csv", b"t,v\n1,2\n")
        mtime_ms = (p.outbox / "now.csv.json").stat().st_mtime_ns // 1_000_000
        await drain(p)
    (event,) = cloud_server.cloud.events
    (stored,) = cloud_server.cloud.files.values()
    assert (event.time_ms, event.realtime, stored.original_filename) == (mtime_ms, True, "now.csv")


async def test_drops_are_sent_oldest_first(
    tmp_path: Path, cloud_server: IntegrationHttpServer
) -> None:
    """Five drops written one after another arrive in the order they were dropped."""
    async with pipeline(tmp_path, cloud_server.cloud, cloud_server.url) as p:
        for index in range(5):
            drop(p.outbox, f"f{index}.bin", bytes([index]) * 1000, time=TIME_MS + index)
            # Distinct mtimes even on a coarse clock: the scan orders by sidecar mtime.
            os.utime(p.outbox / f"f{index}.bin.json", ns=(index * 10**9, index * 10**9))
        await drain(p)
    assert [e.params["note"] for e in cloud_server.cloud.events] == [
        f"f{i}.bin" for i in range(5)
    ]


@pytest.mark.parametrize(
    ("sidecar", "make_payload", "error"),
    [
        (
            {"device": "meter-9"},
            True,
            "unknown device 'meter-9' (configured: ['meter-1'])",
        ),
        (
            {"event": "overVoltage"},
            True,
            "device 'meter-1': event 'overVoltage' is not in its model's file_events "
            "(declared: ['faultLog', 'tripRecord'])",
        ),
        (
            {"params": {"reason": "7", "note": "x"}},
            True,
            "event 'tripRecord': param 'reason' must be int, not str '7'",
        ),
        (
            {"params": {"reason": 7}},
            True,
            "event 'tripRecord': missing params ['note']",
        ),
        ({}, False, "the file 'bad.bin' the sidecar describes does not exist"),
        (
            {"file_param": "log"},
            True,
            "event 'tripRecord': file_param 'log' is not the declared 'capture'",
        ),
    ],
    ids=[
        "unknown-device",
        "unknown-event",
        "bad-param-type",
        "missing-param",
        "missing-file",
        "wrong-file-param",
    ],
)
async def test_a_bad_drop_is_moved_to_rejected_with_its_reason(
    tmp_path: Path,
    cloud_server: IntegrationHttpServer,
    sidecar: dict[str, object],
    make_payload: bool,
    error: str,
) -> None:
    """A drop the site cannot take goes to rejected/ with NAME.error saying why; nothing is
    committed or sent, and a good drop next to it still goes."""
    async with pipeline(tmp_path, cloud_server.cloud, cloud_server.url) as p:
        drop(p.outbox, "bad.bin", b"payload", **sidecar)
        if not make_payload:
            (p.outbox / "bad.bin").unlink()
        drop(p.outbox, "good.bin", b"fine")
        await drain(p)
        rejected = p.outbox / "rejected"
        assert (rejected / "bad.bin.error").read_text() == error + "\n"
        expected = {"bad.bin.error", "bad.bin.json"} | ({"bad.bin"} if make_payload else set())
        assert set(os.listdir(rejected)) == expected
        assert os.listdir(p.outbox) == ["rejected"]
    assert [e.params["note"] for e in cloud_server.cloud.events] == ["good.bin"]


async def test_a_file_over_100_mb_is_refused_without_being_read(
    tmp_path: Path, cloud_server: IntegrationHttpServer
) -> None:
    """A sparse 100 MiB + 1 byte payload is rejected with its size and EnOS' limit."""
    async with pipeline(tmp_path, cloud_server.cloud, cloud_server.url) as p:
        drop(p.outbox, "huge.bin", b"")
        os.truncate(p.outbox / "huge.bin", 100 * 1024 * 1024 + 1)
        await drain(p)
        error = (p.outbox / "rejected" / "huge.bin.error").read_text()
    assert error == "file is 104857601 bytes, over EnOS' limit of 104857600\n"
    assert cloud_server.cloud.calls.get("postEvent", 0) == 0


async def test_a_message_over_512_kb_is_refused_at_commit(
    tmp_path: Path, cloud_server: IntegrationHttpServer
) -> None:
    """A note of 600 KB makes the request message too big: refused before it is stored."""
    async with pipeline(tmp_path, cloud_server.cloud, cloud_server.url) as p:
        drop(p.outbox, "long.csv", b"x", params={"reason": 1, "note": "n" * 600_000})
        await drain(p)
        error = (p.outbox / "rejected" / "long.csv.error").read_text()
        assert list((store_dir(p.config) / "pending").iterdir()) == []
    assert "over EnOS' 524288" in error
    assert cloud_server.cloud.calls.get("postEvent", 0) == 0


async def test_a_1204_rejection_is_dead_lettered_and_the_next_event_delivered(
    tmp_path: Path, cloud_server: IntegrationHttpServer
) -> None:
    """faultLog is not file-typed in the cloud's model: 1204, kept aside with the reply,
    not retried; the tripRecord behind it is delivered."""
    async with pipeline(tmp_path, cloud_server.cloud, cloud_server.url) as p:
        drop(p.outbox, "a-fault.log", b"log", event="faultLog", file_param="log", params={})
        os.utime(p.outbox / "a-fault.log.json", ns=(10**9, 10**9))
        drop(p.outbox, "b-trip.csv", b"trip")
        await drain(p)
        (letter,) = p.store.dead_letters()
        assert (letter.event.event, letter.event.filename, letter.code) == (
            "faultLog",
            "a-fault.log",
            1204,
        )
        assert "faultLog" in letter.msg
        assert p.sender.stats.dead_lettered == 1
        assert p.sender.stats.delivered == 1
    assert [e.event_id for e in cloud_server.cloud.events] == ["tripRecord"]
    assert cloud_server.cloud.calls["postEvent"] == 2  # the rejected one was sent once


async def test_a_token_expiring_mid_upload_is_renewed_and_the_upload_sent_once(
    tmp_path: Path, cloud_server: IntegrationHttpServer
) -> None:
    """The token is good when the second upload starts and expires while its 2 MB body is
    in flight (the cloud expires it on receiving the body, before checking the token):
    401, a fresh token, the upload again; stored once, with the right md5."""
    cloud = cloud_server.cloud
    original = cloud.handle
    uploads: list[str] = []

    def expire_on_second_upload(request: HttpRequest) -> HttpResponse:
        if "action=postEvent" in request.target:
            uploads.append(request.target)
            if len(uploads) == 2:
                cloud.expire_tokens()
        return original(request)

    cloud.handle = expire_on_second_upload  # type: ignore[method-assign]
    async with pipeline(tmp_path, cloud, cloud_server.url) as p:
        drop(p.outbox, "one.bin", b"1" * 50_000)
        await drain(p)
        md5 = drop(p.outbox, "two.bin", os.urandom(2_000_000))
        await drain(p)
    assert cloud.tokens_issued == 2
    assert len(uploads) == 3  # one, two refused for its token, two again
    assert (401, "access token missing, unknown or expired") in cloud.rejections
    assert [hashlib.md5(f.data).hexdigest() for f in cloud.files.values()].count(md5) == 1
    assert len(cloud.events) == 2


async def test_an_outage_is_retried_and_the_file_arrives_once(tmp_path: Path) -> None:
    """The cloud is down (nothing listens, then 503s): the event stays committed, the sender
    backs off, and once the cloud is back it arrives exactly once."""
    port = free_port()
    cloud = IntegrationCloud(integration_spec())
    async with pipeline(tmp_path, cloud, f"http://127.0.0.1:{port}") as p:
        md5 = drop(p.outbox, "while-down.bin", os.urandom(100_000))
        await p.watcher.scan()
        assert os.listdir(p.outbox) == []  # committed: the drop is the store's now
        for _ in range(2):
            assert await p.sender.send_one()  # refused TCP: retry later
        assert p.sender.stats.retries == 2
        assert len(p.store.pending()) == 1
        with IntegrationHttpServer(cloud, port=port):
            cloud.faults.fail_next(2, 503, endpoint="postEvent")
            await async_wait_until(
                lambda: _sent(p), timeout=60, what="the event delivered after the outage"
            )
    assert p.sender.stats.retries == 4
    assert [hashlib.md5(f.data).hexdigest() for f in cloud.files.values()] == [md5]
    assert len(cloud.events) == 1


async def _sent(p: Pipeline) -> bool:
    await p.sender.send_one()
    return p.store.pending() == []


async def test_the_byte_cap_drops_the_oldest_counts_them_and_warns_once(
    tmp_path: Path, cloud_server: IntegrationHttpServer
) -> None:
    """Five 400 KiB drops under a 1 MiB cap while nothing is sent: the three oldest are
    dropped and counted (persisted), with one warning; a small drop that fits ends the
    episode with the count; the newest two and the small one are delivered."""
    async with pipeline(tmp_path, cloud_server.cloud, cloud_server.url, max_bytes="1MiB") as p:
        md5s = []
        for index in range(5):
            md5s.append(drop(p.outbox, f"c{index}.bin", bytes([index]) * (400 * 1024)))
            os.utime(p.outbox / f"c{index}.bin.json", ns=(index * 10**9, index * 10**9))
        with structlog.testing.capture_logs() as logs:
            await p.watcher.scan()
            small = drop(p.outbox, "small.bin", b"s" * 1000)
            await p.watcher.scan()
        assert (p.store.dropped.events, p.store.dropped.bytes > 3 * 400 * 1024) == (3, True)
        assert p.store.held_bytes() <= 1 << 20
        cap_lines = [(e["log_level"], e["event"], e.get("dropped")) for e in logs
                     if "max_bytes" in e["event"]]  # fmt: skip
        assert cap_lines == [
            ("warning", "file events over integration.max_bytes: dropping the oldest", None),
            ("info", "file events fit under integration.max_bytes again", 3),
        ]
        reopened = FileStore.open(store_dir(p.config), 1 << 20, wall_ms=lambda: 0)
        assert reopened.dropped == p.store.dropped
        assert [e.filename for e in reopened.pending()] == ["c3.bin", "c4.bin", "small.bin"]
        while await p.sender.send_one():
            pass
    assert p.stored_md5s() == [*md5s[3:], small]


async def test_a_restart_delivers_what_was_committed_and_never_commits_a_drop_twice(
    tmp_path: Path, cloud_server: IntegrationHttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash after the commit and before the drop's files were removed (the removal made
    to fail here): the reopened store removes the drop, the watcher finds nothing more,
    and the event is delivered once."""

    async with pipeline(tmp_path, cloud_server.cloud, cloud_server.url) as p:
        md5 = drop(p.outbox, "crash.bin", b"c" * 10_000)

        def crash(sidecar: Path) -> None:
            raise OSError(5, "simulated crash before the drop was removed")

        monkeypatch.setattr(filestore, "remove_drop", crash)
        await p.watcher.scan()  # committed; removal "crashed"
        assert p.store.oldest() is None  # held: not sent while its drop is still there
        monkeypatch.undo()
        reopened = await open_store(p.config)  # a restart
        assert sorted(os.listdir(p.outbox)) == []
        assert [e.filename for e in reopened.pending()] == ["crash.bin"]
        p.watcher.store = p.sender.store = reopened
        await drain(p)
    assert p.stored_md5s() == [md5]


async def test_a_capture_dir_drop_is_committed_like_an_outbox_drop(
    tmp_path: Path, cloud_server: IntegrationHttpServer
) -> None:
    """The gateway's own capture writer drops into <state>/captures/ in the same format."""
    async with pipeline(tmp_path, cloud_server.cloud, cloud_server.url) as p:
        captures = capture_dir(p.config)
        assert captures == tmp_path / "state" / "captures"
        md5 = drop(captures, "meter-1-tripRecord.csv", b"t,i\n0,1\n")
        await drain(p)
        assert os.listdir(captures) == []
    assert p.stored_md5s() == [md5]
    record = json.loads(json.dumps(cloud_server.cloud.events[0].params))
    assert record["reason"] == 7


async def test_rejected_drops_keep_the_outbox_mode_under_the_daemons_umask(
    tmp_path: Path, cloud_server: IntegrationHttpServer
) -> None:
    """Under umask 0077 (the daemon's), rejected/ gets the outbox's 0770 and NAME.error
    0660, so the software that dropped the file (in the outbox's group) can read why."""
    async with pipeline(tmp_path, cloud_server.cloud, cloud_server.url) as p:
        p.outbox.chmod(0o770)
        drop(p.outbox, "nobody.bin", b"x", device="meter-9")
        old = os.umask(0o077)
        try:
            await drain(p)
        finally:
            os.umask(old)
        rejected = p.outbox / "rejected"
        assert rejected.stat().st_mode & 0o777 == 0o770
        assert (rejected / "nobody.bin.error").stat().st_mode & 0o777 == 0o660


async def test_a_bad_drop_that_cannot_be_moved_warns_once_and_stays(
    tmp_path: Path, cloud_server: IntegrationHttpServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An outbox the daemon may not write to (the move to rejected/ refused): the drop stays
    where it is, and three scans log one warning, not one each."""
    async with pipeline(tmp_path, cloud_server.cloud, cloud_server.url) as p:
        drop(p.outbox, "stuck.bin", b"x", device="meter-9")

        def refuse(src: object, dst: object) -> None:
            raise PermissionError(13, "Permission denied")

        monkeypatch.setattr(os, "replace", refuse)
        with structlog.testing.capture_logs() as logs:
            for _ in range(3):
                await p.watcher.scan()
        monkeypatch.undo()
        assert sorted(os.listdir(p.outbox)) == ["rejected", "stuck.bin", "stuck.bin.json"]
    warnings = [(e["event"], e.get("error")) for e in logs if e["log_level"] == "warning"]
    assert warnings == [
        (
            "file event drop cannot be committed or moved aside; it stays in the outbox",
            "Permission denied",
        )
    ]


async def test_a_capture_written_by_the_capture_writer_is_uploaded_with_its_event(
    tmp_path: Path, cloud_server: IntegrationHttpServer
) -> None:
    """The contract with the capture rules: their pure core fires on tripRecord and their
    writer publishes the drop in captures/; the watcher takes it (the rule declared the
    file event, with measurepoint/value/reason) and the CSV arrives with the event."""
    async with pipeline(tmp_path, cloud_server.cloud, cloud_server.url, model=CAPTURE_MODEL) as p:
        model = p.config.models["meter"]
        spec = capture_specs(model)["tripRecord"]
        core = DeviceCaptures(
            "meter-1", {spec.event: spec}, point_intervals_ms(p.config.devices[0], model)
        )
        writer = CaptureStore(capture_dir(p.config))
        actions = core.observe({TIME_MS - 1000: {"voltage": 229}, TIME_MS: {"voltage": 230}})
        event = Event("meter-1", "tripRecord", TIME_MS,
                      {"measurepoint": "trip", "value": True, "reason": 7})  # fmt: skip
        kept, begins = core.fire([event])
        assert kept == []
        actions += begins + core.observe({TIME_MS + 2000: {"voltage": 231}})
        for action in actions:
            if isinstance(action, Begin):
                writer.begin(action)
            elif isinstance(action, Append):
                writer.append(action)
            elif isinstance(action, Finish):
                writer.finish(action)
        assert any(name.endswith(".json") for name in os.listdir(capture_dir(p.config)))
        await drain(p)
        assert os.listdir(capture_dir(p.config)) == []
        assert not (p.outbox / "rejected").exists()
    (stored,) = cloud_server.cloud.files.values()
    (sent,) = cloud_server.cloud.events
    # The reading past `after` ends the capture without joining it.
    assert stored.data == (
        b"time,voltage\r\n2025-12-05T09:59:59.000Z,229\r\n2025-12-05T10:00:00.000Z,230\r\n"
    )
    assert sent.params == {"measurepoint": "trip", "value": True, "reason": 7,
                           "capture": stored.uri}  # fmt: skip
    assert (sent.time_ms, sent.realtime) == (TIME_MS, False)
