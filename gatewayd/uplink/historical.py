"""Historical events: backlog events imported over each product's mode-4 integration channel.

With `uplink.historical_events: integration`, an event that goes out as backlog (the rule
of `resume.batch` for samples: older than the live cutoff, i.e. older than the live window
or taken before its sub-device's login) is sent with `integration.event.post` (seeds
001/002, PROTOCOL.md §3.8, integration/PROTOCOL.md §5) on the MQTT connection of its
product (secure mode 4, username ``%channel%&{pk}``, signed with the product secret), not
as `thing.event.post`:
EnOS stores it as history, so cloud alarms do not fire on it as if it were new. The
sub-device need not be logged in, and the gateway session need not be up.

One `ProductChannel` per product key in use. It connects only when it has events to send
and closes after `integration.mqtt.idle_close` without any; its CONNECTs follow the
gateway's rules (`ReconnectPolicy`: quick TCP retries cost nothing, at most 4 CONNECTs in
2 minutes, persisted across restarts when a history file is given). A channel that fails
keeps its events in the spool and blocks nothing else: the gateway session, live events
and the other products' channels run on.

Per-device order: a channel has one message in flight at a time and sends events in spool
order; a message that is not acknowledged stops the round and returns it and everything
after it to the spool. An event the live stream still holds keeps the same device's later
events back (`EventClaims`), so a backlog event never overtakes an older one of its device.

Replies: 200 acknowledges the message; 1204 (model validate failed), 1257 (device not
found) and 1008 (too large) halve the message until the refused event is alone, then
dead-letter it with the reply (one error line naming device, event and code); anything
else (no reply, other codes, transport) leaves the events in the spool and retries with
backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

import structlog

from gatewayd.backoff import Backoff
from gatewayd.clock import Clock
from gatewayd.config.models import BrokerConfig, Config
from gatewayd.enos import messages
from gatewayd.enos.codes import describe
from gatewayd.enos.connect_history import ConnectHistoryFile
from gatewayd.enos.ids import IdGenerator
from gatewayd.enos.reconnect import ReconnectPolicy
from gatewayd.enos.session import (
    BrokerUnavailable,
    BrokerUnreachable,
    ConnectRefused,
    Endpoint,
    GatewaySession,
    ReplyTimeout,
    tls_context,
)
from gatewayd.enos.sign import INTEGRATION_DEVICE_KEY, SECURE_MODE_INTEGRATION, mqtt_credentials
from gatewayd.episodes import Episodes
from gatewayd.spool.rows import Kind, SpooledEvent
from gatewayd.uplink.ports import SpoolPort
from gatewayd.uplink.subdevices import SubDeviceRegistry

log = structlog.get_logger(__name__)

#: EnOS refuses messages of 512 KiB or more (PROTOCOL.md §5); keep a margin.
MAX_MESSAGE_BYTES = 512 * 1024 - 1024
#: Events taken from the spool per round (sent in as many messages as the limits need).
TAKE_EVENTS = 1000
#: How long an idle channel waits for the spool writer's signal before looking again.
IDLE_WAIT_S = 1.0
#: After no reply or a retryable code: 1 s doubled per failure up to 30 s.
RETRY_BACKOFF = Backoff(initial=1.0, maximum=30.0, jitter=0.0)
#: Codes after which the refused event is dead-lettered (alone) or the message halved.
REFUSED = frozenset({1204, 1257, 1008})


@dataclass
class HistoricalStats:
    """Counters for status lines and tests."""

    messages: int = 0
    events: int = 0
    dead_lettered: int = 0
    timeouts: int = 0
    connects: int = 0
    refused_connects: int = 0
    by_code: dict[int, int] = field(default_factory=dict)


class EventClaims:
    """Events the live stream holds right now (id -> device), so the historical channel
    never sends a device's event ahead of an older one the live stream has not settled."""

    def __init__(self) -> None:
        self._held: dict[int, str] = {}

    def hold(self, events: Iterable[SpooledEvent]) -> None:
        self._held.update((e.id, e.device) for e in events)

    def settle(self, events: Iterable[SpooledEvent]) -> None:
        for event in events:
            self._held.pop(event.id, None)

    def oldest_by_device(self) -> dict[str, int]:
        """Per device, the smallest event id the live stream holds."""
        oldest: dict[str, int] = {}
        for event_id, device in self._held.items():
            if event_id < oldest.get(device, event_id + 1):
                oldest[device] = event_id
        return oldest


def behind_live(events: Sequence[SpooledEvent], oldest_live: dict[str, int]) -> list[int]:
    """Ids of `events` that must wait: a device's events after one the live stream holds."""
    return [e.id for e in events if e.id > oldest_live.get(e.device, e.id)]


def pack_events(
    pk: str, entries: Sequence[messages.IntegrationEventRecord], max_bytes: int, max_entries: int
) -> list[int]:
    """Split `entries`, in order, into messages of at most `max_entries` entries and
    `max_bytes` bytes; returns the number of entries of each message. An entry too big on
    its own gets a message of its own (EnOS answers 1008 and it is dead-lettered)."""
    empty = len(messages.integration_event_post(pk, id="0" * 16, records=[]).payload)
    sizes: list[int] = []
    count, size = 0, empty
    for entry in entries:
        single = len(messages.integration_event_post(pk, id="0" * 16, records=[entry]).payload)
        extra = single - empty + 1  # the entry and a comma
        if count and (size + extra > max_bytes or count >= max_entries):
            sizes.append(count)
            count, size = 0, empty
        count += 1
        size += extra
    if count:
        sizes.append(count)
    return sizes


def channel_endpoint(pk: str, secret: str, broker: BrokerConfig, timestamp: str) -> Endpoint:
    """The mode-4 CONNECT of product `pk`'s integration channel (PROTOCOL.md §1.2-1.5):
    clientId param = product key, username ``%channel%&{pk}``, signed with the product
    secret."""
    credentials = mqtt_credentials(
        pk,
        INTEGRATION_DEVICE_KEY,
        secret,
        timestamp=timestamp,
        secure_mode=SECURE_MODE_INTEGRATION,
    )
    return Endpoint(
        host=broker.host,
        port=broker.port,
        client_id=credentials.client_id,
        username=credentials.username,
        password=credentials.password,
        keepalive=int(broker.keepalive),
        connect_timeout=broker.connect_timeout,
    )


class _Stop(Exception):
    """A round ends early: what is left goes back to the spool (retry later)."""


class ProductChannel:
    """The integration channel of one product: connects when there is work, sends, closes."""

    def __init__(
        self,
        pk: str,
        *,
        config: Config,
        spool: SpoolPort,
        registry: SubDeviceRegistry,
        clock: Clock,
        ids: IdGenerator,
        cutoff_ms: Callable[[], int],
        claims: EventClaims,
        in_flight: set[int],
        stats: HistoricalStats,
        policy: ReconnectPolicy,
        history: ConnectHistoryFile | None,
    ) -> None:
        mqtt = config.integration.mqtt
        assert mqtt is not None  # only built for configured products
        secret = mqtt.products[pk].product_secret
        assert secret is not None  # the loader reads the secret file
        self.pk = pk
        self._secret = secret.get_secret_value()
        self._broker = mqtt.broker or config.gateway.broker
        self._idle_close_s = mqtt.idle_close
        self._reply_timeout = config.uplink.reply_timeout
        self._batch = config.uplink.batch_size
        self._spool = spool
        self._registry = registry
        self._clock = clock
        self._ids = ids
        self._cutoff_ms = cutoff_ms
        self._claims = claims
        self._in_flight = in_flight
        self.stats = stats
        self._policy = policy
        self._history = history
        self._timestamp = str(int(clock.time() * 1000))
        self._ready = asyncio.Event()
        self._episodes = Episodes(log, clock=clock.monotonic)
        self._failures = 0
        self.connected = False

    def wake(self) -> None:
        self._ready.set()

    # ------------------------------------------------------------------ connection

    async def run(self) -> None:
        """Until cancelled: wait for backlog events, connect, send them, close when idle."""
        if self._history is not None:
            wall = self._history.load(self._clock.time())
            self._policy.throttle.restore(wall, self._clock.monotonic(), self._clock.time())
        while True:
            try:
                if not await self._has_work():
                    await self._idle()
                    continue
                await self._connect_and_send()
            except Exception:
                # A bug here must not end the gateway session or the other channels: the
                # events are safe in the spool; log it loudly and try again later.
                log.exception("integration channel failed", product=self.pk)
                self._policy.failed(self._clock.monotonic())

    async def _has_work(self) -> bool:
        events = await self._take(1)
        await self._give_back([e.id for e in events])
        return bool(events)

    async def _idle(self) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(IDLE_WAIT_S):
                await self._ready.wait()
        self._ready.clear()

    def _connect_sending(self) -> None:
        now = self._clock.monotonic()
        self._policy.attempted(now)
        self.stats.connects += 1
        if self._history is not None:
            self._history.save(self._policy.throttle.wall_times(now, self._clock.time()))

    async def _connect_and_send(self) -> None:
        wait = self._policy.next_attempt(self._clock.monotonic()) - self._clock.monotonic()
        if wait > 0:
            await self._clock.sleep(wait)
        endpoint = channel_endpoint(self.pk, self._secret, self._broker, self._timestamp)
        session = GatewaySession(
            endpoint,
            tls=tls_context(self._broker.tls),
            reply_timeout=self._reply_timeout,
            on_connect_sending=self._connect_sending,
        )
        up = False
        try:
            async with session:
                up = True
                self._policy.succeeded()
                self.connected = True
                self._episodes.ok("channel", "integration channel connected again", product=self.pk)
                log.info("integration channel open", product=self.pk)
                await self._serve(session)
                log.info("integration channel closed (idle)", product=self.pk)
        except BrokerUnreachable as exc:
            self._policy.unreachable(self._clock.monotonic())
            self._episodes.failed(
                "channel", "cannot reach the integration channel's broker (no CONNECT sent)",
                product=self.pk, reason=str(exc),
            )  # fmt: skip
        except ConnectRefused as exc:
            self._policy.failed(self._clock.monotonic(), refused=True)
            self.stats.refused_connects += 1
            self._episodes.failed(
                "channel",
                "EnOS refused the integration channel's CONNECT; backlog events stay in the"
                " spool",
                level="error",
                product=self.pk,
                return_code=exc.rc,
                hint=f"check integration.mqtt.products.{self.pk}'s product secret",
            )
        except BrokerUnavailable as exc:
            self._policy.failed(self._clock.monotonic())
            what = "integration channel lost" if up else "integration channel got no CONNACK"
            self._episodes.failed("channel", what, product=self.pk, reason=str(exc))
        finally:
            self.connected = False

    async def _serve(self, session: GatewaySession) -> None:
        idle_since = self._clock.monotonic()
        while True:
            if session.lost.is_set():
                raise BrokerUnavailable(session.lost_reason or "connection lost")
            events = await self._take(TAKE_EVENTS)
            if not events:
                if self._clock.monotonic() - idle_since >= self._idle_close_s:
                    return
                await self._idle()
                continue
            await self._send(session, events)
            idle_since = self._clock.monotonic()

    # ------------------------------------------------------------------ events

    def _excluded(self) -> frozenset[str]:
        """Devices whose events this channel leaves alone: other products', disabled ones."""
        return frozenset(
            d.name for d in self._registry if d.product_key != self.pk or not d.enabled
        )

    async def _take(self, limit: int) -> list[SpooledEvent]:
        events = await self._spool.take_events(
            limit, older_than_ms=self._cutoff_ms(), exclude_devices=self._excluded()
        )
        self._in_flight.update(e.id for e in events)
        gone = []
        for event in events:
            sub = self._registry.get(event.device)
            if sub is None or sub.deleted:
                gone.append(event.id)  # the device left the configuration or the cloud
        if gone:
            await self._settle(self._spool.ack(Kind.EVENTS, gone), gone)
        waiting = behind_live(events, self._claims.oldest_by_device())
        if waiting:
            await self._give_back(waiting)
        keep = set(gone) | set(waiting)
        return [e for e in events if e.id not in keep]

    async def _settle(self, done: Awaitable[int], ids: Sequence[int]) -> None:
        """Await the spool call that settles `ids` (ack, release, dead letter); either
        way this channel no longer holds them."""
        try:
            await done
        finally:
            self._in_flight.difference_update(ids)

    async def _give_back(self, ids: Sequence[int]) -> None:
        if ids:
            await self._settle(self._spool.release(Kind.EVENTS, ids), ids)

    def _record(self, event: SpooledEvent) -> messages.IntegrationEventRecord:
        sub = self._registry.get(event.device)
        assert sub is not None  # unknown devices were acked as gone when taken
        return messages.IntegrationEventRecord(
            sub.device_key, {event.event_id: event.params}, event.ts_ms
        )

    async def _send(self, session: GatewaySession, events: list[SpooledEvent]) -> None:
        """Send `events` in order, one message at a time; whatever stops the round
        returns the events not yet settled to the spool."""
        entries = [self._record(e) for e in events]
        start = 0
        try:
            for count in pack_events(self.pk, entries, MAX_MESSAGE_BYTES, self._batch):
                part = events[start : start + count]
                await self._send_part(session, part, entries[start : start + count])
                start += count
        except _Stop:
            pass
        finally:
            await self._give_back([e.id for e in events[start:] if e.id in self._in_flight])

    async def _send_part(
        self,
        session: GatewaySession,
        events: list[SpooledEvent],
        entries: list[messages.IntegrationEventRecord],
    ) -> None:
        """One message; refused ones are halved down to the event EnOS refuses. Raises
        `_Stop` when the rest must wait (no reply, retryable code)."""
        request = messages.integration_event_post(
            self.pk, id=self._ids.next_id(), records=entries
        )
        reply = await self._request(session, request)
        if reply is None:
            await self._retry_pause()
            raise _Stop
        ids = [e.id for e in events]
        if reply.ok:
            self._failures = 0
            self.stats.events += len(ids)
            await self._settle(self._spool.ack(Kind.EVENTS, ids), ids)
            return
        if reply.code not in REFUSED:
            log.warning(
                "EnOS asked to retry historical events",
                product=self.pk, code=describe(reply.code), message=reply.message,
            )  # fmt: skip
            await self._retry_pause()
            raise _Stop
        if len(events) > 1:
            middle = len(events) // 2
            await self._send_part(session, events[:middle], entries[:middle])
            await self._send_part(session, events[middle:], entries[middle:])
            return
        event = events[0]
        log.error(
            "EnOS refused a historical event; dead-lettered",
            device=event.device,
            event_id=event.event_id,
            code=describe(reply.code),
            message=reply.message,
        )
        self.stats.dead_lettered += 1
        now_ms = int(self._clock.time() * 1000)
        await self._settle(
            self._spool.dead_letter(Kind.EVENTS, ids, reply.code, reply.message, now_ms), ids
        )

    async def _request(
        self, session: GatewaySession, request: messages.Request
    ) -> messages.Reply | None:
        self.stats.messages += 1
        try:
            raw = await session.request(request.topic, request.id, request.payload)
        except ReplyTimeout:
            self.stats.timeouts += 1
            log.warning("no reply to integration.event.post", product=self.pk, id=request.id)
            return None
        try:
            reply = messages.decode_reply(raw.payload)
        except messages.MalformedMessage as exc:
            log.warning("unreadable integration reply", product=self.pk, reason=str(exc))
            return None
        self.stats.by_code[reply.code] = self.stats.by_code.get(reply.code, 0) + 1
        return reply

    async def _retry_pause(self) -> None:
        self._failures += 1
        await self._clock.sleep(RETRY_BACKOFF.delay(self._failures, None))


class HistoricalEvents:
    """Every product's integration channel, for `historical_events: integration`."""

    def __init__(
        self,
        config: Config,
        spool: SpoolPort,
        registry: SubDeviceRegistry,
        *,
        clock: Clock,
        ids: IdGenerator,
        cutoff_ms: Callable[[], int],
        claims: EventClaims,
        policy: Callable[[], ReconnectPolicy] | None = None,
        history: Callable[[str], ConnectHistoryFile] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """`cutoff_ms`: events older than this (epoch ms) are backlog; `policy` makes each
        channel's reconnect policy, `history` its persisted CONNECT window (None: memory)."""
        mqtt = config.integration.mqtt
        products = [] if mqtt is None else list(mqtt.products)
        used = {d.product_key for d in registry}
        self.stats = HistoricalStats()
        #: Event ids the channels hold: the gateway session must not release them.
        self.in_flight: set[int] = set()
        make_policy = policy or (lambda: ReconnectPolicy(rng=rng or random.Random()))
        self.channels = [
            ProductChannel(
                pk,
                config=config,
                spool=spool,
                registry=registry,
                clock=clock,
                ids=ids,
                cutoff_ms=cutoff_ms,
                claims=claims,
                in_flight=self.in_flight,
                stats=self.stats,
                policy=make_policy(),
                history=None if history is None else history(pk),
            )
            for pk in products
            if pk in used
        ]
        #: Devices whose backlog events a channel takes (the live stream leaves them).
        self.devices = frozenset(
            d.name for d in registry if d.product_key in {c.pk for c in self.channels}
        )

    def wake(self) -> None:
        """New rows were committed: wake idle channels."""
        for channel in self.channels:
            channel.wake()

    async def run(self) -> None:
        """Every channel until cancelled; a failing channel never ends the others."""
        if not self.channels:
            return
        async with asyncio.TaskGroup() as group:
            for channel in self.channels:
                group.create_task(channel.run(), name=f"integration-{channel.pk}")
