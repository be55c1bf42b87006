"""The daemon's file events task: open the store, watch the outboxes, send what is committed.

Started by `gatewayd run` only when `integration.http` is configured; httpx is imported
here, lazily, for that case only. Nothing here may stop the daemon: a store that cannot
be opened is logged and tried again, and measurepoints flow meanwhile.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from gatewayd.clock import Clock
from gatewayd.config.models import Config
from gatewayd.integration.drops import catalogue
from gatewayd.integration.filestore import FileStore
from gatewayd.integration.message import EventRecord, FileAttachment
from gatewayd.integration.outbox import SCAN_INTERVAL_S, OutboxWatcher, capture_dir, store_dir
from gatewayd.integration.replies import UploadOutcome
from gatewayd.integration.sender import FileEventSender

log = structlog.get_logger(__name__)

REOPEN_S = 60.0


@dataclass
class FileEventsView:
    """What `gatewayd status` shows of file events; filled in once the store is open."""

    store: FileStore | None = None
    sender: FileEventSender | None = None

    def snapshot(self) -> dict[str, int] | None:
        """Counts for the status file, or None before the store is open."""
        if self.store is None or self.sender is None:
            return None
        return {
            "pending": len(self.store.pending()),
            "dead_letters": self.store.dead_count(),
            "dropped": self.store.dropped.events,
            "delivered": self.sender.stats.delivered,
            "retries": self.sender.stats.retries,
        }


def _wall_ms() -> int:
    return time.time_ns() // 1_000_000


async def open_store(config: Config) -> FileStore:
    """The file event store of `config`, with the drops a crash left behind released."""
    store = await asyncio.to_thread(
        FileStore.open, store_dir(config), config.integration.max_bytes, wall_ms=_wall_ms
    )
    released = await asyncio.to_thread(store.release_sources)
    if released:
        log.info("file event drops removed that were committed before a restart", count=released)
    return store


async def run_file_events(
    config: Config,
    clock: Clock,
    current: Callable[[], Config] | None = None,
    view: FileEventsView | None = None,
) -> None:
    """Run the watcher and the sender until cancelled; a crash is logged and restarted,
    never passed on to the daemon (measurepoints must keep flowing).

    `current()` is the configuration in force (after a reload): drops are checked against
    its devices and models. The store, outbox and account stay those of `config`.
    `view`, when given, is pointed at the store and the sender for `gatewayd status`.
    """
    while True:
        try:
            await _run(config, clock, current or (lambda: config), view or FileEventsView())
        except Exception as exc:
            log.error("file events task crashed; restarting", error=repr(exc),
                      retry_s=REOPEN_S, exc_info=exc)  # fmt: skip
        await clock.sleep(REOPEN_S)


async def _run(
    config: Config, clock: Clock, current: Callable[[], Config], view: FileEventsView
) -> None:
    http = config.integration.http
    assert http is not None
    while True:
        try:
            store = await open_store(config)
            await asyncio.to_thread(capture_dir(config).mkdir, exist_ok=True)
            break
        except OSError as exc:
            log.error("file event store cannot be opened; retrying", path=str(store_dir(config)),
                      error=exc.strerror or str(exc), retry_s=REOPEN_S)  # fmt: skip
            await clock.sleep(REOPEN_S)
    # The one place the daemon loads httpx, and only with integration.http configured.
    from gatewayd.integration.http import (  # noqa: PLC0415 - the httpx seam, lazily
        HttpSettings,
        IntegrationClient,
    )

    async with IntegrationClient(HttpSettings.from_config(http)) as client:

        async def post(record: EventRecord, file: FileAttachment, realtime: bool) -> UploadOutcome:
            return await client.post_event([record], [file], realtime=realtime)

        sender = FileEventSender(store, post, clock=clock, live_window=config.uplink.live_window)
        view.store, view.sender = store, sender
        directories = [capture_dir(config)]
        if config.integration.outbox is not None:
            directories.insert(0, config.integration.outbox)
        watcher = OutboxWatcher(directories, store, catalogue(config), on_commit=sender.wake)
        pending = len(store.pending())
        log.info("file events ready", pending=pending, directories=[str(d) for d in directories])
        async with asyncio.TaskGroup() as group:
            group.create_task(_watch(watcher, current), name="file-outbox")
            group.create_task(sender.run(), name="file-sender")


async def _watch(watcher: OutboxWatcher, current: Callable[[], Config]) -> None:
    """`watcher.run`, checking drops against the devices of the configuration in force."""
    while True:
        watcher.devices = catalogue(current())
        await watcher.scan()
        await asyncio.sleep(SCAN_INTERVAL_S)
