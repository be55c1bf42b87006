"""File events through `gatewayd run` as a subprocess: delivery, dead letters, kill -9.

The cloud is the emulated integration channel in this process (its `email`-parsing upload
checks); the daemon's broker and Modbus device are absent on purpose: file events need
neither, and must flow while the uplink reconnects.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import random
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from gatewayd.app import Daemon as Gateway
from gatewayd.config.loader import load_config
from gatewayd.sim.emulator.http_cloud import HttpRequest, HttpResponse, IntegrationCloud
from gatewayd.sim.emulator.http_server import IntegrationHttpServer
from gatewayd.systemd import Notifier
from tests.integration.file_events_support import MODEL, drop, write_site
from tests.integration.integration_http_support import integration_spec
from tests.support import async_wait_until, free_port

READY = "file events ready"


class Daemon:
    """`gatewayd run` in `root`, its output appended to root/gatewayd.log."""

    def __init__(self, root: Path, config: Path) -> None:
        self.root, self.config, self.log = root, config, root / "gatewayd.log"
        self.process: asyncio.subprocess.Process | None = None
        self.starts = 0

    async def start(self) -> int:
        with self.log.open("ab") as handle:
            self.process = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "gatewayd", "run", str(self.config),
                stdout=handle, stderr=handle, cwd=self.root,
            )  # fmt: skip
        self.starts += 1
        await async_wait_until(
            lambda: self.log.read_text().count(READY) >= self.starts, 60, "file events ready"
        )
        return self.process.pid

    async def stop(self) -> int:
        assert self.process is not None
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
        return await asyncio.wait_for(self.process.wait(), 60)

    async def killed(self) -> None:
        """Wait for the SIGKILL someone sent it."""
        assert self.process is not None
        assert await asyncio.wait_for(self.process.wait(), 60) == -signal.SIGKILL

    def log_lines(self) -> list[dict[str, object]]:
        return [json.loads(x) for x in self.log.read_text().splitlines() if x.startswith("{")]


def committed_lines(daemon: Daemon) -> int:
    return daemon.log.read_text().count('"file event committed"')


def stored_md5s(cloud: IntegrationCloud) -> list[str]:
    return [hashlib.md5(f.data).hexdigest() for f in list(cloud.files.values())]


def pending_entries(root: Path) -> list[str]:
    pending = root / "state" / "file-events" / "pending"
    return sorted(os.listdir(pending)) if pending.is_dir() else []


async def test_the_daemon_delivers_a_drop_and_lists_a_dead_letter(tmp_path: Path) -> None:
    """A good drop arrives once; a faultLog (not file-typed in the cloud: 1204) is kept
    aside and `gatewayd files dead-letters` lists it with the reply."""
    cloud = IntegrationCloud(integration_spec())
    with IntegrationHttpServer(cloud) as server:
        config = write_site(tmp_path, server.url)
        daemon = Daemon(tmp_path, config)
        await daemon.start()
        try:
            md5 = drop(tmp_path / "outbox", "trip.csv", b"t,i\n0,12.5\n")
            drop(tmp_path / "outbox", "fault.log", b"oops", event="faultLog",
                 file_param="log", params={})  # fmt: skip
            await async_wait_until(
                lambda: len(cloud.rejections) == 1 and stored_md5s(cloud) == [md5],
                60,
                "one delivered, one refused",
            )
            await async_wait_until(lambda: pending_entries(tmp_path) == [], 30, "store empty")
            # The status file is rewritten every few seconds: wait for one with both outcomes.
            expected = "  file events: 0 waiting, 1 dead letters, 0 dropped; 1 delivered, 0 retries"
            await async_wait_until(
                lambda: expected in status_text(config), 60, "status shows the file events"
            )
        finally:
            assert await daemon.stop() == 0
    listing = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "gatewayd", "files", "dead-letters", str(config), "--json"],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    (letter,) = [json.loads(line) for line in listing.stdout.splitlines()]
    assert listing.stderr.decode().startswith(
        "1 dead letter(s), 0 pending, 0 dropped at integration.max_bytes (0 bytes) in "
    )
    assert (letter["device"], letter["event"], letter["filename"], letter["code"]) == (
        "meter-1",
        "faultLog",
        "fault.log",
        1204,
    )
    assert letter["md5"] == hashlib.md5(b"oops").hexdigest()
    assert os.listdir(tmp_path / "outbox") == []
    delivered = [e for e in daemon.log_lines() if e.get("event") == "file event delivered"]
    assert [e["file"] for e in delivered] == ["trip.csv"]


def status_text(config: Path) -> str:
    """What `gatewayd status CONFIG` prints now."""
    run = subprocess.run(
        [sys.executable, "-m", "gatewayd", "status", str(config)],
        capture_output=True, timeout=60, check=False, text=True,
    )  # fmt: skip
    return run.stdout


def kill_on_upload(cloud: IntegrationCloud, victim: Callable[[], int | None]) -> None:
    """Make the cloud kill -9 `victim()` when an upload has reached it, before it is
    stored: the gateway never hears back and must send it again."""
    original = cloud.handle

    def handle(request: HttpRequest) -> HttpResponse:
        pid = victim() if "action=postEvent" in request.target else None
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            return HttpResponse(503, {}, b"")
        return original(request)

    cloud.handle = handle  # type: ignore[method-assign]


async def test_kill_9_fuzz_every_file_is_delivered_exactly_once(tmp_path: Path) -> None:
    """Rounds of drops with kill -9 at random points (while committing with the cloud away,
    and on the k-th upload of a round, once the cloud holds its body but before it stored
    it), then a clean run: every file is stored exactly once with its md5, nothing is left
    in the outbox, the store or rejected/."""
    rng = random.Random(1705)  # the same kill points every run
    port = free_port()
    cloud = IntegrationCloud(integration_spec())
    config = write_site(tmp_path, f"http://127.0.0.1:{port}")
    outbox = tmp_path / "outbox"
    daemon = Daemon(tmp_path, config)
    expected: list[str] = []
    kill_at: list[int] = []  # uploads left before the kill, this round

    def victim() -> int | None:
        if not kill_at or daemon.process is None:
            return None
        kill_at[0] -= 1
        if kill_at[0] > 0:
            return None
        kill_at.clear()
        return daemon.process.pid

    kill_on_upload(cloud, victim)
    counter = 0
    kills = 0
    for round_no in range(6):
        cloud_up = round_no % 2 == 1
        count = rng.randint(2, 5)
        server = IntegrationHttpServer(cloud, port=port) if cloud_up else None
        if server is not None:
            server.start()
            kill_at[:] = [rng.randint(1, count)]
        try:
            await daemon.start()
            before = committed_lines(daemon)
            for _ in range(count):
                size = rng.choice([1, 10_000, 300_000, 2_000_000])
                expected.append(drop(outbox, f"d{counter:03d}.bin", rng.randbytes(size)))
                counter += 1
            assert daemon.process is not None
            if cloud_up:
                await async_wait_until(
                    lambda p=daemon.process: p.returncode is not None, 90, "the kill on an upload"
                )
            elif rng.random() < 0.5:
                await asyncio.sleep(rng.uniform(0.0, 1.5))  # a random point of the scans
                daemon.process.send_signal(signal.SIGKILL)
            else:  # between two commits of one scan, while the next one is being written
                await async_wait_until(
                    lambda n=before: committed_lines(daemon) > n, 60, "a commit"
                )
                daemon.process.send_signal(signal.SIGKILL)
            await daemon.killed()
            kills += 1
        finally:
            kill_at.clear()
            if server is not None:
                server.stop()
    with IntegrationHttpServer(cloud, port=port):
        await daemon.start()
        try:
            await async_wait_until(
                lambda: sorted(stored_md5s(cloud)) == sorted(expected)
                and pending_entries(tmp_path) == [],
                120,
                "every file delivered",
            )
        finally:
            assert await daemon.stop() == 0
    assert kills == 6
    stored = stored_md5s(cloud)
    assert len(stored) == len(expected)
    assert sorted(stored) == sorted(expected)  # each exactly once
    assert sorted(os.listdir(outbox)) == []
    assert cloud.rejections == []


async def test_a_reload_that_declares_a_file_event_lets_its_drops_through(
    tmp_path: Path,
) -> None:
    """In process: tripRecord not declared → its drop is rejected; after SIGHUP's reload
    with it declared, the next one is delivered (without a restart)."""

    cloud = IntegrationCloud(integration_spec())
    with IntegrationHttpServer(cloud) as server:
        config_path = write_site(tmp_path, server.url)
        model = tmp_path / "models" / "meter.yaml"
        without = MODEL.replace(
            "  - {event: tripRecord, file_param: capture, params: {reason: int, note: string}}\n",
            "",
        )
        model.write_text(without)
        gateway = Gateway(config_path, load_config(config_path), notifier=Notifier(environ={}))
        task = asyncio.create_task(gateway.run())
        outbox = tmp_path / "outbox"
        try:
            await asyncio.wait_for(gateway.ready.wait(), 30)
            drop(outbox, "early.csv", b"early")
            await async_wait_until(
                (outbox / "rejected" / "early.csv.error").exists, 30, "a rejection"
            )
            model.write_text(MODEL)
            gateway.request_reload()
            await async_wait_until(
                lambda: any(
                    m.event == "tripRecord"
                    for m in gateway.config.models["meter"].file_events
                ),
                30,
                "the reload",
            )
            md5 = drop(outbox, "late.csv", b"late")
            await async_wait_until(lambda: stored_md5s(cloud) == [md5], 30, "late.csv stored")
        finally:
            gateway.request_stop()
            assert await asyncio.wait_for(task, 30) == 0
    error = (outbox / "rejected" / "early.csv.error").read_text()
    assert "event 'tripRecord' is not in its model's file_events" in error


async def test_a_kill_after_the_cloud_stored_an_upload_sends_it_again(tmp_path: Path) -> None:
    """The documented limit: kill -9 after EnOS stored the upload, before its reply reached
    the gateway. The upload has no idempotency key, so the restarted daemon sends it again:
    the cloud holds it twice, nothing is lost, and it is sent no third time."""
    cloud = IntegrationCloud(integration_spec())
    original = cloud.handle
    victims: list[int] = []

    def store_then_kill(request: HttpRequest) -> HttpResponse:
        response = original(request)
        if victims and "action=postEvent" in request.target:
            os.kill(victims.pop(), signal.SIGKILL)  # the reply never reaches it
        return response

    cloud.handle = store_then_kill  # type: ignore[method-assign]
    with IntegrationHttpServer(cloud) as server:
        daemon = Daemon(tmp_path, write_site(tmp_path, server.url))
        victims.append(await daemon.start())
        md5 = drop(tmp_path / "outbox", "once.bin", b"1" * 1000)
        await daemon.killed()
        assert stored_md5s(cloud) == [md5]
        await daemon.start()
        try:
            await async_wait_until(lambda: pending_entries(tmp_path) == [], 60, "sent again")
        finally:
            assert await daemon.stop() == 0
    assert stored_md5s(cloud) == [md5, md5]
    assert cloud.calls["postEvent"] == 2
