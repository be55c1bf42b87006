"""Delivery over one connected session: live post, paced backlog resume, events, bisection.

A row leaves the spool only when EnOS answered 200 to the message that carried it:

    frames = take(...)              # begin: frames are in flight
    reply = request(batch(frames))  # records = the frames' pre-encoded text, concatenated
    200          -> ack(frames)     # commit: deleted
    1212 / 1009  -> release(frames) # sub-device refused: split by device, hold its rows
                                    # in the spool until it is logged in again
    1204 / 12xx  -> bisect          # isolate the rejected values, dead-letter only those
    timeout, 5xx -> release(frames) # retry with backoff
    transport    -> release(frames), then the session ends and the uplink reconnects

Bisection halves the frames of a message; a single rejected frame of several points is
parsed (the only per-point path) and bisected by point, and `rewrite_frame` settles it:
accepted points leave it, the rejected one is dead-lettered with EnOS' code and message,
the rest stays in the spool.

A sample goes out live (`post.batch`, which may fire cloud alerts) only if its sub-device
was logged in on this session when the sample was taken and the sample is still inside the
live window; everything else - taken during an outage, before a restart, before its
device's login completed, or simply old - goes out oldest first with `resume.batch` and
`allowOfflineSubDevice=true` (PROTOCOL.md §6, item 3), in messages of at most 128 KiB,
paced by token buckets in points/s and bytes/s. Samples from before a connection was lost
count as offline too: a dead link is noticed only later (keepalive), so the gateway cannot
tell which of them the cloud would still have seen live. Live and backlog are split by one
time boundary (`_live_cutoff_ms`), so the live stream never takes offline rows ahead of the
older backlog and never waits for it. Live traffic spends the same byte budget without
waiting, so the backlog gets what live data leaves and the link stays under EnOS' rate.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from gatewayd.backoff import Backoff
from gatewayd.clock import Clock
from gatewayd.config.models import Config
from gatewayd.enos import messages
from gatewayd.enos.codes import Disposition, classify, describe
from gatewayd.enos.ids import IdGenerator
from gatewayd.enos.session import ReplyTimeout
from gatewayd.spool.frames import parse_body
from gatewayd.spool.rows import Kind, SpooledEvent, SpooledFrame
from gatewayd.uplink.historical import EventClaims
from gatewayd.uplink.ports import SessionPort, SpoolPort
from gatewayd.uplink.ratelimit import BacklogPace
from gatewayd.uplink.records import (
    Bundle,
    bundle_frames,
    frame_ids,
    point_count,
    point_record,
)
from gatewayd.uplink.subdevices import SubDevice, SubDeviceRegistry

log = structlog.get_logger(__name__)

#: EnOS refuses messages of 512 KiB or more (PROTOCOL.md §5); keep a margin for safety.
MAX_MESSAGE_BYTES = 512 * 1024 - 1024
#: Largest resume (backlog) message; live posts may use the whole 512 KiB.
BACKLOG_MESSAGE_BYTES = 128 * 1024
#: Frames (one device's points of one poll instant each) taken from the spool per round;
#: they go out in as many messages as the size limit and `uplink.batch_size` (records per
#: message) ask for.
TAKE_FRAMES = 1000
#: How long an idle stream waits for the poller's "new data" signal before looking again.
IDLE_WAIT_S = 1.0
#: Backoff after a reply timeout or a retryable error code: 1 s doubled per failure up to
#: 30 s, no jitter (one gateway's streams, not a fleet).
RETRY_BACKOFF = Backoff(initial=1.0, maximum=30.0, jitter=0.0)
#: How long a refused sub-device's rows wait before one more try (if no login came first).
HOLD_S = 60.0
#: Event posts in flight at once (each is its own message and reply).
EVENTS_IN_FLIGHT = 16
#: How long a point EnOS rejected as invalid is dead-lettered without asking again.
INVALID_TTL_S = 600.0


@dataclass
class DeliveryStats:
    """Counters for status lines and tests."""

    messages: int = 0
    live_points: int = 0
    backlog_points: int = 0
    events: int = 0
    dead_lettered: int = 0
    rejected_messages: int = 0
    timeouts: int = 0
    last_error: str = ""
    by_code: dict[int, int] = field(default_factory=dict)


def pack(bundles: Sequence[Bundle], budget: int, max_records: int) -> list[list[Bundle]]:
    """Split bundles, in order, into groups of at most `max_records` whose batch payload
    stays under `budget` bytes (what is left of a message after the envelope).

    Frames are at most `spool.frames.FRAME_MAX_BYTES` of text, well under any budget; a
    bundle over the budget anyway goes in a group of its own (EnOS answers 1008 and it
    is dead-lettered, rather than blocking the spool).
    """
    groups: list[list[Bundle]] = []
    current: list[Bundle] = []
    size = 0
    for bundle in bundles:
        extra = len(bundle.encoded) + 1  # the comma between records
        if current and (size + extra > budget or len(current) >= max_records):
            groups.append(current)
            current, size = [], 0
        current.append(bundle)
        size += extra
    if current:
        groups.append(current)
    return groups


class Delivery:
    """Moves rows from the spool to EnOS over one connected session."""

    def __init__(
        self,
        config: Config,
        spool: SpoolPort,
        session: SessionPort,
        registry: SubDeviceRegistry,
        *,
        clock: Clock,
        ids: IdGenerator,
        request_login: Callable[[], None],
        stats: DeliveryStats,
        withheld: Mapping[str, frozenset[str]] | None = None,
        historical: frozenset[str] = frozenset(),
        claims: EventClaims | None = None,
    ) -> None:
        """`withheld`: per device, measurepoints the cloud model lacks (never sent);
        `historical`: devices whose backlog events an integration channel sends
        (`uplink.historical_events: integration`), so only their live events are posted
        here; `claims` is told which events this stream holds (`uplink/historical.py`)."""
        gateway = config.gateway
        self._historical = historical
        self._claims = claims or EventClaims()
        self._withheld = withheld
        self._gw = (gateway.product_key, gateway.device_key)
        self._spool = spool
        self._session = session
        self._registry = registry
        self._clock = clock
        self._ids = ids
        self._request_login = request_login
        # Set by `wake()` when the spool writer committed a cycle: one per stream, so the
        # event stream taking the signal never costs the live stream its wake-up.
        self._samples_ready = asyncio.Event()
        self._events_ready = asyncio.Event()
        self.stats = stats
        self._live_window_ms = int(config.uplink.live_window * 1000)
        self._batch_records = config.uplink.batch_size
        self._backlog_pace = BacklogPace(
            config.uplink.backlog_points_per_second,
            config.uplink.backlog_bytes_per_second,
            MAX_MESSAGE_BYTES,
        )
        # (device, measurepoint) pairs EnOS rejected as invalid: later rows of the same
        # point are dead-lettered at once instead of bisected again every cycle.
        self._invalid: dict[tuple[str, str], tuple[int, str, float]] = {}
        # Sub-devices EnOS refused (1212/1009) → until when their rows stay in the spool.
        self._held: dict[str, float] = {}
        self._failures = 0
        # Samples at or after this instant (epoch ms) are taken by the live stream, older
        # ones by the backlog stream; it only moves forward (see `_live_cutoff_ms`).
        self._cutoff_ms = 0

    # ------------------------------------------------------------------ streams

    async def run(self) -> None:
        """Live, backlog and event streams until cancelled or the transport fails."""
        async with asyncio.TaskGroup() as group:
            group.create_task(self._live_loop(), name="uplink-live")
            group.create_task(self._backlog_loop(), name="uplink-backlog")
            group.create_task(self._event_loop(), name="uplink-events")

    def _now_ms(self) -> int:
        return int(self._clock.time() * 1000)

    def wake(self) -> None:
        """New rows were committed: wake the idle streams."""
        self._samples_ready.set()
        self._events_ready.set()

    @staticmethod
    async def _idle(ready: asyncio.Event) -> None:
        """Wait for the spool writer's signal (or a tick), so idle streams cost nothing."""
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for can swallow a cancellation
        # that arrives as the event is set, and shutdown would hang on this task.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(IDLE_WAIT_S):
                await ready.wait()
        ready.clear()

    def _live_cutoff_ms(self) -> int:
        """The boundary between live and backlog rows: the later of the live window's start
        and the earliest login on this session among logged-in sub-devices (now, when none
        is logged in). Monotonic, so a row the live stream skipped as too old is always
        taken by the backlog stream, and the backlog never takes a row live may still want.
        Devices logged in later than that (a re-login) are checked per row in
        `_deliver_samples`."""
        now = self._now_ms()
        logins = [d.online_since_ms for d in self._registry if d.publishable]
        earliest_login = min(logins) if logins else now
        self._cutoff_ms = max(self._cutoff_ms, now - self._live_window_ms, earliest_login)
        return self._cutoff_ms

    async def _live_loop(self) -> None:
        while True:
            cutoff = self._live_cutoff_ms()
            frames = await self._spool.take_frames(
                TAKE_FRAMES, newer_than_ms=cutoff, exclude_devices=self._excluded()
            )
            if not frames:
                await self._idle(self._samples_ready)
                continue
            await self._deliver_samples(frames, resume=False)

    async def _backlog_loop(self) -> None:
        while True:
            cutoff = self._live_cutoff_ms()
            frames = await self._spool.take_frames(
                TAKE_FRAMES, older_than_ms=cutoff, exclude_devices=self._excluded()
            )
            if not frames:
                await self._clock.sleep(IDLE_WAIT_S)
                continue
            await self._deliver_samples(frames, resume=True)

    def live_cutoff_ms(self) -> int:
        """The live/backlog boundary now (see `_live_cutoff_ms`), for the integration
        channels: they take the events older than it."""
        return self._live_cutoff_ms()

    async def _take_events(self) -> list[SpooledEvent]:
        """Every event (`historical_events: thing`); else only the live stream's: events
        at or after the live cutoff, and any event of a device no channel serves."""
        limit = EVENTS_IN_FLIGHT * 8
        excluded = self._excluded()
        if not self._historical:
            return await self._spool.take_events(limit, exclude_devices=excluded)
        events = await self._spool.take_events(
            limit, newer_than_ms=self._live_cutoff_ms(), exclude_devices=excluded
        )
        if any(d.name not in self._historical for d in self._registry):
            events += await self._spool.take_events(
                limit, exclude_devices=excluded | self._historical
            )
        return events

    async def _event_loop(self) -> None:
        while True:
            events = await self._take_events()
            if not events:
                await self._idle(self._events_ready)
                continue
            self._claims.hold(events)
            try:
                waiting = await self._deliver_events(events)
            finally:
                self._claims.settle(events)
            if waiting:
                # Their sub-devices are not logged in yet: look again after a pause
                # rather than spinning on the same rows.
                await self._clock.sleep(IDLE_WAIT_S)

    # ------------------------------------------------------------------ samples

    def _keys(self, device: str) -> tuple[str, str] | None:
        sub = self._registry.get(device)
        if sub is None or sub.deleted:
            return None
        return sub.keys

    async def _deliver_samples(self, frames: Sequence[SpooledFrame], *, resume: bool) -> None:
        bundles, unknown = bundle_frames(frames, self._keys, self._withheld)
        if unknown:
            # Unknown or deleted devices: EnOS cannot take their data; nothing is lost
            # that the cloud could have stored.
            await self._spool.ack(Kind.SAMPLES, unknown)
        bundles = await self._drop_known_invalid(bundles)
        if resume:
            await self._send_all(bundles, resume=True)
            return
        # post.batch refuses the whole message if one sub-device is offline (1212), and a
        # sample taken before its device's login completed is offline data: both go out as
        # resume, which allows offline sub-devices and fires no alerts.
        live: list[Bundle] = []
        late: list[Bundle] = []
        for bundle in bundles:
            (live if self._takes_live(bundle) else late).append(bundle)
        await self._send_all(live, resume=False)
        await self._send_all(late, resume=True)

    def _takes_live(self, bundle: Bundle) -> bool:
        sub = self._registry.get(bundle.device)
        return sub is not None and sub.takes_live(bundle.frame.ts_ms)

    async def _drop_known_invalid(self, bundles: list[Bundle]) -> list[Bundle]:
        """Dead-letter at once the points EnOS already rejected as invalid, keeping the rest
        of their frames (which stay in flight and go out in this round)."""
        if not self._invalid:
            return bundles
        # Forget verdicts after a while: the cloud model may have been fixed meanwhile.
        now = self._clock.monotonic()
        for key in [k for k, (_, _, at) in self._invalid.items() if now - at > INVALID_TTL_S]:
            del self._invalid[key]
        needles: dict[str, list[tuple[str, str]]] = {}  # device -> [(point, its JSON key)]
        for device, point in self._invalid:
            needles.setdefault(device, []).append((point, json.dumps(point) + ":"))
        keep: list[Bundle] = []
        for bundle in bundles:
            frame = bundle.frame
            # A cheap text test first: only a frame that may hold the point is parsed.
            suspects = [p for p, key in needles.get(frame.device, ()) if key in frame.body]
            found = [p for p in suspects if p in parse_body(frame.body)] if suspects else []
            if not found:
                keep.append(bundle)
                continue
            dead = {p: self._invalid[frame.device, p][:2] for p in found}
            self.stats.dead_lettered += len(dead)
            rest = await self._spool.rewrite_frame(frame.id, (), dead, self._now_ms())
            if rest is not None:
                keep.extend(bundle_frames([rest], self._keys, self._withheld)[0])
        return keep

    async def _send_all(self, bundles: Sequence[Bundle], *, resume: bool) -> None:
        if not bundles:
            return
        _, _, head, tail = messages.batch_envelope(*self._gw, id="0" * 12, resume=resume)
        # Backlog messages stay small: a live post queued behind one waits for it on a
        # rate-capped link, so a 512 KiB resume would cost live data half a second.
        limit = BACKLOG_MESSAGE_BYTES if resume else MAX_MESSAGE_BYTES
        budget = limit - len(head) - len(tail)
        groups = pack(bundles, budget, self._batch_records)
        for index, group in enumerate(groups):
            try:
                await self._send_group(group, resume=resume)
            except BaseException:
                # Whatever ends this send (transport loss, cancellation) returns the
                # frames of the groups not yet sent to the pool.
                await self._spool.release(
                    Kind.SAMPLES, frame_ids([b for g in groups[index + 1 :] for b in g])
                )
                raise

    async def _send_group(self, group: list[Bundle], *, resume: bool) -> None:
        ids = frame_ids(group)
        request = messages.measurepoint_batch(
            *self._gw,
            id=self._ids.next_id(),
            records=[b.encoded for b in group],
            resume=resume,
            allow_offline_sub_device=resume,
        )
        points = point_count(group)
        reply = await self._send_paced(request, points, ids, resume=resume)
        if reply is None:
            return
        disposition = classify(reply.code)
        if disposition is Disposition.SUCCESS:
            self._failures = 0
            await self._spool.ack(Kind.SAMPLES, ids)
            self._count_delivered(points, resume=resume)
            return
        self.stats.rejected_messages += 1
        if disposition is Disposition.RELOGIN:
            devices = list(dict.fromkeys(b.device for b in group))
            if len(devices) > 1:
                # One refused sub-device refuses the whole message: send each device's
                # records on their own, so only the refused one waits.
                parts = [[b for b in group if b.device == device] for device in devices]
                await self._send_parts(parts, resume=resume)
                return
            self._hold(devices[0], reply)
            await self._spool.release(Kind.SAMPLES, ids)
            return
        if disposition is Disposition.RETRY:
            log.warning("EnOS asked to retry", code=describe(reply.code), message=reply.message)
            await self._spool.release(Kind.SAMPLES, ids)
            await self._retry_pause()
            return
        # PERMANENT or SPLIT: isolate what EnOS refuses, send the rest.
        await self._bisect(group, reply, resume=resume)

    async def _send_paced(
        self, request: messages.Request, points: int, ids: list[int], *, resume: bool
    ) -> messages.Reply | None:
        """Pace (backlog) or book (live) the bytes, send, and await the reply; None after a
        timeout or an unreadable reply (the frames are released and a pause taken)."""
        if resume:
            await self._pace(points, len(request.payload))
        else:
            # Live data never waits, but it spends the shared byte budget: the backlog
            # gets what live traffic leaves of the link.
            self._backlog_pace.live(len(request.payload), self._clock.monotonic())
        try:
            reply = await self._request(request)
        except BaseException:
            await self._spool.release(Kind.SAMPLES, ids)
            raise
        if reply is None:  # timeout or unreadable reply: try again later
            await self._spool.release(Kind.SAMPLES, ids)
            await self._retry_pause()
        return reply

    def _count_delivered(self, points: int, *, resume: bool) -> None:
        if resume:
            self.stats.backlog_points += points
        else:
            self.stats.live_points += points

    async def _bisect(self, group: list[Bundle], reply: messages.Reply, *, resume: bool) -> None:
        if len(group) > 1:
            middle = len(group) // 2
            await self._send_parts([group[:middle], group[middle:]], resume=resume)
            return
        frame = group[0].frame
        points = parse_body(frame.body)
        if len(points) > 1:
            await self._isolate(frame, points, reply, resume=resume)
            return
        self._reject_point(frame.device, next(iter(points)), reply)
        await self._dead_letter(Kind.SAMPLES, [frame.id], reply.code, reply.message)

    def _reject_point(self, device: str, point: str, reply: messages.Reply) -> None:
        """Remember and log a value EnOS refused for good."""
        if reply.code != 1008:  # a single value over 512 KiB is no model error
            self._invalid[(device, point)] = (reply.code, reply.message, self._clock.monotonic())
        log.error(
            "EnOS rejected a value; dead-lettered",
            device=device,
            measurepoint=point,
            code=describe(reply.code),
            message=reply.message,
        )

    async def _isolate(
        self,
        frame: SpooledFrame,
        points: dict[str, Any],
        reply: messages.Reply,
        *,
        resume: bool,
    ) -> None:
        """Bisect one rejected frame by point; settle what was learnt in the spool."""
        keys = self._keys(frame.device)
        delivered: list[str] = []
        dead: dict[str, tuple[int, str]] = {}
        # Parts EnOS rejected, each with the reply that rejected it.
        work: list[tuple[list[str], messages.Reply]] = [(list(points), reply)]
        try:
            while work and keys is not None:
                names, why = work.pop(0)
                if len(names) == 1:
                    self._reject_point(frame.device, names[0], why)
                    dead[names[0]] = (why.code, why.message)
                    self.stats.dead_lettered += 1
                    continue
                middle = len(names) // 2
                for half in (names[:middle], names[middle:]):
                    outcome = await self._try_points(keys, frame, points, half, resume=resume)
                    if outcome is None:
                        return  # refused, retry or timeout: the rest waits in the spool
                    accepted, answer = outcome
                    if accepted:
                        delivered.extend(half)
                    else:
                        work.append((half, answer))
        finally:
            rest = await self._spool.rewrite_frame(frame.id, delivered, dead, self._now_ms())
            if rest is not None:
                await self._spool.release(Kind.SAMPLES, [frame.id])

    async def _try_points(
        self,
        keys: tuple[str, str],
        frame: SpooledFrame,
        points: dict[str, Any],
        names: list[str],
        *,
        resume: bool,
    ) -> tuple[bool, messages.Reply] | None:
        """Send some of a frame's points as one record: (accepted?, reply), or None when
        EnOS refused the device, asked to retry or did not answer (stop for now)."""
        record = point_record(keys, frame, {name: points[name] for name in names})
        request = messages.measurepoint_batch(
            *self._gw,
            id=self._ids.next_id(),
            records=[record],
            resume=resume,
            allow_offline_sub_device=resume,
        )
        if resume:
            await self._pace(len(names), len(request.payload))
        else:
            self._backlog_pace.live(len(request.payload), self._clock.monotonic())
        reply = await self._request(request)
        if reply is None:
            await self._retry_pause()
            return None
        disposition = classify(reply.code)
        if disposition is Disposition.SUCCESS:
            self._count_delivered(len(names), resume=resume)
            return True, reply
        if disposition is Disposition.RELOGIN:
            self._hold(frame.device, reply)
            return None
        if disposition is Disposition.RETRY:
            await self._retry_pause()
            return None
        return False, reply

    async def _send_parts(self, parts: list[list[Bundle]], *, resume: bool) -> None:
        """Send the parts one after another; whatever ends that returns the rest."""
        for index, part in enumerate(parts):
            try:
                await self._send_group(part, resume=resume)
            except BaseException:
                await self._spool.release(
                    Kind.SAMPLES, frame_ids([b for p in parts[index + 1 :] for b in p])
                )
                raise

    def _hold(self, device: str, reply: messages.Reply) -> None:
        """EnOS refuses `device` (not logged in, disabled): keep its rows in the spool until
        it is logged in again, or until the hold expires and one more try is due."""
        sub = self._registry.get(device)
        if sub is not None:
            sub.online = False
        if device not in self._held:
            log.warning(
                "EnOS refuses a sub-device's data; holding it until it is logged in",
                device=device,
                code=describe(reply.code),
                message=reply.message,
            )
        self._held[device] = self._clock.monotonic() + HOLD_S
        self._request_login()

    def _excluded(self) -> frozenset[str]:
        """Devices whose rows stay in the spool for now: held, or disabled by the cloud."""
        now = self._clock.monotonic()
        for device, until in list(self._held.items()):
            sub = self._registry.get(device)
            if until <= now or (sub is not None and sub.online):
                del self._held[device]
        disabled = {d.name for d in self._registry if not d.enabled and not d.deleted}
        return frozenset(self._held) | disabled

    # ------------------------------------------------------------------ events

    def _sort_events(
        self, events: Sequence[SpooledEvent]
    ) -> tuple[list[int], list[SpooledEvent], list[tuple[SpooledEvent, SubDevice]], list[int]]:
        """(gone, backlog, sendable, waiting): events of devices the configuration or the
        cloud dropped; backlog of a device an integration channel serves; events to post;
        events whose sub-device is not logged in."""
        gone: list[int] = []
        backlog: list[SpooledEvent] = []
        sendable: list[tuple[SpooledEvent, SubDevice]] = []
        waiting: list[int] = []
        for event in events:
            sub = self._registry.get(event.device)
            if sub is None or sub.deleted:
                gone.append(event.id)
            elif event.device in self._historical and not sub.takes_live(event.ts_ms):
                # Taken before the device's login: its channel takes it once the live
                # cutoff has passed it.
                backlog.append(event)
            elif sub.publishable:
                sendable.append((event, sub))
            else:
                waiting.append(event.id)
        return gone, backlog, sendable, waiting

    async def _deliver_events(self, events: Sequence[SpooledEvent]) -> int:
        """Post events on their sub-devices' topics, several in flight; returns how many
        must wait (sub-device not logged in, no reply, retryable code)."""
        gone, backlog, sendable, waiting = self._sort_events(events)
        if gone:
            await self._spool.ack(Kind.EVENTS, gone)
        if backlog:
            # Back at once (not after the posts below): held here, they would keep their
            # devices' later events from the integration channel meanwhile.
            await self._spool.release(Kind.EVENTS, [e.id for e in backlog])
            self._claims.settle(backlog)
        slots = asyncio.Semaphore(EVENTS_IN_FLIGHT)

        async def post(event: SpooledEvent, sub: SubDevice) -> messages.Reply | None:
            async with slots:
                return await self._request(
                    messages.event_post(
                        sub.product_key,
                        sub.device_key,
                        id=self._ids.next_id(),
                        event_id=event.event_id,
                        params=event.params,
                        time_ms=event.ts_ms,
                    )
                )

        try:
            results = await asyncio.gather(
                *(post(event, sub) for event, sub in sendable), return_exceptions=True
            )
        except BaseException:
            await self._spool.release(Kind.EVENTS, [e.id for e, _ in sendable] + waiting)
            raise
        accepted: list[int] = []
        failure: BaseException | None = None
        for (event, _), result in zip(sendable, results, strict=True):
            if isinstance(result, BaseException):
                failure = failure or result
                waiting.append(event.id)
                continue
            disposition = Disposition.RETRY if result is None else classify(result.code)
            if disposition is Disposition.SUCCESS:
                accepted.append(event.id)
            elif disposition is Disposition.RELOGIN:
                assert result is not None
                self._hold(event.device, result)
                waiting.append(event.id)
            elif disposition is Disposition.RETRY:
                waiting.append(event.id)
            else:
                assert result is not None
                log.error(
                    "EnOS rejected an event; dead-lettered",
                    device=event.device,
                    event_id=event.event_id,
                    code=describe(result.code),
                    message=result.message,
                )
                await self._dead_letter(Kind.EVENTS, [event.id], result.code, result.message)
        if accepted:
            self.stats.events += len(accepted)
            await self._spool.ack(Kind.EVENTS, accepted)
        if waiting:
            await self._spool.release(Kind.EVENTS, waiting)
        if failure is not None:
            raise failure
        return len(waiting) + len(backlog)

    # ------------------------------------------------------------------ plumbing

    async def _request(self, request: messages.Request) -> messages.Reply | None:
        """Send and await the reply; None on timeout or an unreadable reply."""
        self.stats.messages += 1
        try:
            raw = await self._session.request(request.topic, request.id, request.payload)
        except ReplyTimeout:
            self.stats.timeouts += 1
            self.stats.last_error = f"no reply to {request.method}"
            log.warning("no reply from EnOS", method=request.method, id=request.id)
            return None
        try:
            reply = messages.decode_reply(raw.payload)
        except messages.MalformedMessage as exc:
            log.warning("unreadable reply from EnOS", method=request.method, reason=str(exc))
            return None
        self.stats.by_code[reply.code] = self.stats.by_code.get(reply.code, 0) + 1
        if reply.code != 200:
            self.stats.last_error = f"{request.method}: {describe(reply.code)} {reply.message}"
        return reply

    async def _pace(self, points: int, size: int) -> None:
        delay = self._backlog_pace.backlog(points, size, self._clock.monotonic())
        if delay > 0:
            await self._clock.sleep(delay)

    async def _retry_pause(self) -> None:
        self._failures += 1
        await self._clock.sleep(RETRY_BACKOFF.delay(self._failures, None))

    async def _dead_letter(self, kind: Kind, ids: list[int], code: int, message: str) -> None:
        self.stats.dead_lettered += len(ids)
        await self._spool.dead_letter(kind, ids, code, message, self._now_ms())
