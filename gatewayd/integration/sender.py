"""The file event sender: committed file events to EnOS, oldest first, one at a time.

One upload at a time keeps every device's events in order (and the store's order is the
order of commits). An event leaves the store only after EnOS accepted it; a permanent
refusal (e.g. 1204: the product model has no such file-typed event) moves it to the dead
letters with the reply; anything that may pass (network, 5xx, auth) is tried again with
the shared backoff, one warning per episode and one "recovered" line. It runs as its own
task, so a slow or failing upload never holds back measurepoints.

An event goes as backlog (`isRealtimeIntegration: false`) by the measurepoints' rule,
counted from when its drop was complete (`is_live`): a capture's file is only ready
`after` its event, and is still live news then.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from gatewayd.backoff import Backoff
from gatewayd.clock import Clock
from gatewayd.config.models import CAPTURE_MAX_WINDOW_S
from gatewayd.episodes import Episodes
from gatewayd.integration.filestore import FileEvent, FileStore
from gatewayd.integration.message import BadEventRequest, EventRecord, FileAttachment
from gatewayd.integration.replies import Accepted, Rejected, UploadOutcome
from gatewayd.integration.stream import FileChanged

log = structlog.get_logger(__name__)

#: Posts one upload: (record, file, realtime) -> outcome (`IntegrationClient.post_event`).
Poster = Callable[[EventRecord, FileAttachment, bool], Awaitable[UploadOutcome]]
RETRY = Backoff(initial=1.0, maximum=120.0)


def is_live(event: FileEvent, now_ms: float, window_ms: float) -> bool:
    """Whether `event` goes as realtime: sent within `window_ms` of its drop becoming
    complete, which itself came within a capture's longest `after` of the event (a file
    finished later than that about an old event is history, whenever it is sent)."""
    ready_ms = max(event.time_ms, event.ready_ms)
    completed_in_time = ready_ms - event.time_ms <= CAPTURE_MAX_WINDOW_S * 1000 + window_ms
    return completed_in_time and now_ms - ready_ms <= window_ms
IDLE_WAKE_S = 5.0


@dataclass
class SenderStats:
    delivered: int = 0
    dead_lettered: int = 0
    retries: int = 0


class FileEventSender:
    """Delivers the store's file events; see the module docstring."""

    def __init__(
        self,
        store: FileStore,
        post: Poster,
        *,
        clock: Clock,
        live_window: float,
        backoff: Backoff = RETRY,
        rng: random.Random | None = None,
    ) -> None:
        self.store = store
        self._post = post
        self._clock = clock
        self._live_window_ms = live_window * 1000
        self._backoff = backoff
        self._rng = rng or random.Random()
        self._wake = asyncio.Event()
        self._failures = 0
        self._episodes = Episodes(log)
        self.stats = SenderStats()

    def wake(self) -> None:
        """Something was committed: look now rather than at the next idle check."""
        self._wake.set()

    async def run(self) -> None:
        """Deliver until cancelled."""
        while True:
            if not await self.send_one():
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(IDLE_WAKE_S):
                        await self._wake.wait()

    async def send_one(self) -> bool:
        """Try the oldest event once (waiting out its backoff after a failure); False when
        there is none."""
        event = self.store.oldest()
        if event is None:
            return False
        # In flight until its outcome is recorded: a commit needing room meanwhile must
        # not take it for a cap victim (it would count a delivered event as dropped).
        self.store.in_flight = event.seq
        try:
            outcome = await self._attempt(event)
            if isinstance(outcome, Accepted):
                await asyncio.to_thread(self.store.delivered, event)
            elif isinstance(outcome, Rejected):
                await asyncio.to_thread(self.store.dead_letter, event, outcome.code, outcome.msg)
        finally:
            self.store.in_flight = None
        if isinstance(outcome, Accepted):
            self.stats.delivered += 1
            self._failures = 0
            self._episodes.ok("upload", "file event uploads recovered")
            log.info("file event delivered", device=event.device, event_id=event.event,
                     file=event.filename, bytes=event.length)  # fmt: skip
        elif isinstance(outcome, Rejected):
            self.stats.dead_lettered += 1
            self._failures = 0
            log.warning("file event refused by EnOS: dead-lettered", device=event.device,
                        event_id=event.event, file=event.filename, code=outcome.code,
                        msg=outcome.msg)  # fmt: skip
        else:
            # Not in flight while it waits: the cap may drop it, the oldest, as it should.
            self._failures += 1
            self.stats.retries += 1
            delay = self._backoff.delay(self._failures, self._rng)
            self._episodes.failed("upload", "file event upload failed; retrying",
                                  reason=outcome.reason, retry_s=round(delay, 1))  # fmt: skip
            await self._clock.sleep(delay)
        return True

    async def _attempt(self, event: FileEvent) -> UploadOutcome:
        """One upload; a payload that cannot be sent as committed is a permanent refusal."""
        now_ms = self._clock.time() * 1000
        realtime = is_live(event, now_ms, self._live_window_ms)
        try:
            return await self._post(
                event.record(), event.attachment(self.store.payload(event)), realtime
            )
        except (FileChanged, BadEventRequest) as exc:
            return Rejected(None, f"not sent: {exc}")
        except FileNotFoundError as exc:
            return Rejected(None, f"not sent: payload missing from the store: {exc}")
