"""The uplink: keeps one EnOS gateway session alive and runs delivery and commands on it.

Per connection (PROTOCOL.md §6): CONNECT, subscribe the reply topics as requests need
them, log the sub-devices in with `combine.login.batch` in chunks (partial success handled;
`thing.topo.add` for devices that answer 740 when `auto_topo` is on), then deliver. On
loss: every sub-device is offline, rows in flight return to the spool, and the next
connect waits for `ReconnectPolicy`: a TCP connect that fails costs no CONNECT and is
retried within seconds; CONNECTs back off (jittered) and never exceed 4 in 2 minutes,
counting the ones a previous run sent (`ConnectHistoryFile`). An outage logs one warning
per kind of failure and one "connected to EnOS again" line.
On shutdown the sub-devices are logged out within a bounded time.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import structlog

from gatewayd.clock import Clock
from gatewayd.config.models import Config
from gatewayd.config.models import HistoricalEvents as HistoricalEventsMode
from gatewayd.config.risks import config_warnings
from gatewayd.enos import messages
from gatewayd.enos.codes import ReplyCode, describe
from gatewayd.enos.connect_history import ConnectHistoryFile
from gatewayd.enos.ids import IdGenerator
from gatewayd.enos.reconnect import ReconnectPolicy
from gatewayd.enos.session import (
    BrokerUnavailable,
    BrokerUnreachable,
    ConnectRefused,
    Endpoint,
    GatewaySession,
    Inbound,
    ReplyTimeout,
    tls_context,
)
from gatewayd.episodes import Episodes
from gatewayd.uplink.asking import lookup_timeout
from gatewayd.uplink.attributes import AttributeSource, AttributeSync
from gatewayd.uplink.cloudmodel import CloudModelCheck
from gatewayd.uplink.delivery import Delivery, DeliveryStats
from gatewayd.uplink.dispatch import CommandDispatcher, ReplyOutbox
from gatewayd.uplink.endpoint import gateway_endpoint
from gatewayd.uplink.historical import EventClaims, HistoricalEvents
from gatewayd.uplink.ports import SpoolPort
from gatewayd.uplink.registration import Registration, RegistrationStore
from gatewayd.uplink.sentstate import SentState
from gatewayd.uplink.subdevices import SubDevice, SubDeviceRegistry
from gatewayd.uplink.tags import TagSync
from gatewayd.uplink.topology import TopoDiff, TopologyReport, read_topology

log = structlog.get_logger(__name__)

#: How often sub-devices that failed to log in are tried again (not the disabled ones).
RELOGIN_INTERVAL_S = 60.0
#: Bound on logging sub-devices out at shutdown.
LOGOUT_BUDGET_S = 5.0
#: Login codes after which retrying cannot help until something changes in the cloud.
DISABLED = 723
NOT_IN_TOPOLOGY = 740

#: What the command layer does with a decoded command: (code, data, message).
CommandHandler = Callable[[messages.Command], Awaitable[tuple[int, object, str]]]
#: Told when the cloud disables, enables or deletes a sub-device (to stop/start polling).
LifecycleHook = Callable[[str, messages.CommandKind], None]


@dataclass
class UplinkStatus:
    """What `STATUS=` and `gatewayd status` show about the uplink."""

    state: str = "starting"
    retry_at_ms: int | None = None  # wall time of the next CONNECT while reconnecting
    connects: int = 0
    refused: int = 0
    last_error: str = ""

    def describe(self, now_ms: int) -> str:
        """The state as of `now_ms`: a reconnect countdown stays current between reports."""
        if self.retry_at_ms is not None and self.state.startswith("reconnecting"):
            return f"reconnecting in {max(0, self.retry_at_ms - now_ms) / 1000:.0f}s"
        return self.state


def _first_cause(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The exception that ended a task group: the transport loss if there was one."""
    leaves: list[BaseException] = []
    pending: list[BaseException] = [group]
    while pending:
        item = pending.pop()
        if isinstance(item, BaseExceptionGroup):
            pending.extend(item.exceptions)
        else:
            leaves.append(item)
    for leaf in leaves:
        if isinstance(leaf, BrokerUnavailable):
            return leaf
    return leaves[0]


class Uplink:
    """Owns the gateway's MQTT connection for the daemon's lifetime."""

    def __init__(
        self,
        config: Config,
        spool: SpoolPort,
        registry: SubDeviceRegistry,
        *,
        clock: Clock,
        rng: random.Random | None = None,
        commands: CommandHandler | None = None,
        on_lifecycle: LifecycleHook | None = None,
        secret_path: Path | None = None,
        policy: ReconnectPolicy | None = None,
        connect_history: ConnectHistoryFile | None = None,
        attributes: tuple[SentState, AttributeSource] | None = None,
        tags: SentState | None = None,
        registrations: RegistrationStore | None = None,
        on_secret: Callable[[str], None] | None = None,
        channel_policy: Callable[[], ReconnectPolicy] | None = None,
        channel_history: Callable[[str], ConnectHistoryFile] | None = None,
    ) -> None:
        """`connect_history` persists the CONNECTs of the last throttle window across
        restarts (None: in memory only, as in tests with a private broker); `attributes`
        (what EnOS holds, how to read a device's registers) turns attribute sync on, `tags`
        (what EnOS holds) tag sync, `registrations` (where registered devices' secrets are
        kept) the registration of `register:` devices; `on_secret` masks such a secret.
        With `historical_events: integration`, `channel_policy` makes each integration
        channel's reconnect policy (default: the gateway's rules) and `channel_history` its
        persisted CONNECT window, by product key."""
        self._config = config
        self._spool = spool
        self.registry = registry
        self._clock = clock
        self._rng = rng or random.Random()
        self._policy = policy or ReconnectPolicy(rng=self._rng)
        self._ids = IdGenerator.from_time_ms(int(clock.time() * 1000))
        self._commands = commands
        self._on_lifecycle = on_lifecycle
        self._secret_path = secret_path
        self._delivery: Delivery | None = None
        self.stats = DeliveryStats()
        self.status = UplinkStatus()
        self._login_wanted = asyncio.Event()
        #: Called when a session is up (the daemon has the report filters send every
        #: point's next reading: the first values after a reconnect always go).
        self.on_session: Callable[[], None] | None = None
        # Commands outlive a session (never half-run, then run again): the dispatcher is ours.
        self.commands = CommandDispatcher(self._execute)
        # The CONNECT timestamp is an opaque string that only has to match the sign; keep
        # it per process like the SDKs do.
        self._timestamp = str(int(clock.time() * 1000))
        self._history = connect_history
        self._session_up = False
        # The current outage: since when (monotonic), failed connects, kinds warned about.
        self._down_since: float | None = None
        self._failed_connects = 0
        self._warned = Episodes(log)
        self.registration: Registration | None = None
        if registrations is not None:
            self.registration = Registration(
                registrations, ids=self._ids, monotonic=clock.monotonic,
                on_secret=on_secret or (lambda _secret: None),
            )  # fmt: skip
            self.registration.restore(config, registry)
        #: The topology read at the start of each session (extras reported once).
        self.topology = TopologyReport()
        #: The products' cloud models against the YAML models; what is withheld.
        self.model_check = CloudModelCheck()
        self.attributes: AttributeSync | None = None
        if attributes is not None:
            sent, source = attributes
            self.attributes = AttributeSync(
                config, sent, source, clock=clock, ids=self._ids,
                request_login=self._login_wanted.set,
            )  # fmt: skip
        # Events the live stream holds, so a channel never overtakes one of them.
        self._claims = EventClaims()
        self.historical: HistoricalEvents | None = None
        if config.uplink.historical_events is HistoricalEventsMode.INTEGRATION:
            self.historical = HistoricalEvents(
                config, spool, registry, clock=clock, ids=self._ids,
                cutoff_ms=self._events_cutoff_ms, claims=self._claims,
                policy=channel_policy, history=channel_history, rng=self._rng,
            )  # fmt: skip
        self.tags: TagSync | None = None
        if tags is not None:
            self.tags = TagSync(
                config, tags, clock=clock, ids=self._ids, request_login=self._login_wanted.set
            )

    # ------------------------------------------------------------------ public

    def reconfigure(self, config: Config) -> None:
        """A reload changed devices: log in the new ones now (identity changes need a restart)."""
        self._config = config
        self._login_wanted.set()
        for sync in self._device_syncs():
            sync.reconfigure(config)
        self.model_check.reconfigure()
        if self.registration is not None:
            self.registration.reconfigure()

    def notify_new_data(self) -> None:
        """The spool writer appended rows: wake the delivery streams."""
        if self._delivery is not None:
            self._delivery.wake()
        if self.historical is not None:
            self.historical.wake()

    def _events_cutoff_ms(self) -> int:
        """Events older than this are backlog: the session's live cutoff; before delivery
        starts (logins done, model check running) or between sessions the same rule on the
        logins so far (now, when no sub-device is logged in: every event is backlog)."""
        if self._delivery is not None:
            return self._delivery.live_cutoff_ms()
        now = self._now_ms()
        logins = [d.online_since_ms for d in self.registry if d.publishable]
        window_ms = int(self._config.uplink.live_window * 1000)
        return max(now - window_ms, min(logins)) if logins else now

    async def run(self) -> None:
        """Connect, serve, reconnect - until cancelled (then log out and close)."""
        for warning in config_warnings(self._config):  # the same list `gatewayd check` prints
            log.warning(warning.render())
        self._restore_connect_history()
        try:
            if self.historical is None:
                await self._run_sessions()
            else:
                # The integration channels live beside the gateway session: backlog events
                # go out while it is down, and a failing channel never stops it.
                async with asyncio.TaskGroup() as group:
                    group.create_task(self.historical.run(), name="uplink-historical")
                    group.create_task(self._run_sessions(), name="uplink-sessions")
        finally:
            await self.commands.close()

    async def _run_sessions(self) -> None:
        while True:
            attempt_at = self._policy.next_attempt(self._clock.monotonic())
            wait = attempt_at - self._clock.monotonic()
            if wait > 0:
                self.status.state = f"reconnecting in {wait:.0f}s"
                self.status.retry_at_ms = int((self._clock.time() + wait) * 1000)
                await self._clock.sleep(wait)
            self.status.state = "connecting"
            self.status.retry_at_ms = None
            self._session_up = False
            try:
                await self._connect_and_serve()
            except BrokerUnreachable as exc:
                # No CONNECT went out: EnOS' budget is untouched, retry in seconds.
                self._policy.unreachable(self._clock.monotonic())
                self._fail("unreachable", f"cannot reach the EnOS broker (no CONNECT sent): {exc}")
            except ConnectRefused as exc:
                self._policy.failed(self._clock.monotonic(), refused=True)
                self.status.refused += 1
                self._fail("refused", f"EnOS refused CONNECT (return code {exc.rc})")
            except BrokerUnavailable as exc:
                self._policy.failed(self._clock.monotonic())
                if self._session_up:
                    self._fail("lost", f"EnOS connection lost: {exc}")
                else:
                    reason = f"EnOS did not accept CONNECT: {exc}{self._tls_hint()}"
                    self._fail("no-connack", reason)
            except Exception as exc:
                # A bug in delivery must not take the daemon down: the rows are safe in
                # the spool, so log it loudly and start over with a fresh session.
                log.exception("uplink failed; reconnecting")
                self._policy.failed(self._clock.monotonic())
                self._fail("error", f"uplink error: {exc!r}")
            finally:
                self.registry.mark_all_offline()

    # ------------------------------------------------------------------ connection

    def _now_ms(self) -> int:
        return int(self._clock.time() * 1000)

    def _fail(self, kind: str, reason: str) -> None:
        """One warning per kind of failure per outage (lost, unreachable, no-connack,
        refused, error);
        the retries that fail the same way are logged at debug level only."""
        self.status.state = "disconnected"
        self.status.last_error = reason
        if self._down_since is None:
            self._down_since = self._clock.monotonic()
        self._failed_connects += 1
        if not self._warned.start(kind, reason):
            log.debug(reason)

    def _recovered(self) -> None:
        """The one 'recovered' line of an outage (or the first connect's line)."""
        host = self._config.gateway.broker.host
        if self._down_since is None:
            log.info("connected to EnOS", host=host)
            return
        log.info(
            "connected to EnOS again",
            host=host,
            down_s=round(self._clock.monotonic() - self._down_since, 1),
            failed_attempts=self._failed_connects,
        )
        self._down_since = None
        self._failed_connects = 0
        self._warned.forget(self._warned.open)

    def _tls_hint(self) -> str:
        """A CONNECT that got no CONNACK on plain TCP often means the port speaks TLS."""
        broker = self._config.gateway.broker
        if broker.tls.enabled:
            return ""
        return (
            f" (the broker closed or ignored the connection after CONNECT; if port"
            f" {broker.port} expects TLS, set gateway.broker.tls.enabled: true)"
        )

    def _restore_connect_history(self) -> None:
        """Start with the CONNECTs a previous run sent in the last window."""
        if self._history is None:
            return
        wall = self._history.load(self._clock.time())
        self._policy.throttle.restore(wall, self._clock.monotonic(), self._clock.time())

    def _connect_sending(self) -> None:
        """A CONNECT is about to go out (called from the connecting thread, while the
        loop awaits the connect): count it and persist the window before it leaves."""
        now = self._clock.monotonic()
        self._policy.attempted(now)
        self.status.connects += 1
        if self._history is not None:
            self._history.save(self._policy.throttle.wall_times(now, self._clock.time()))

    def _endpoint(self) -> Endpoint:
        return gateway_endpoint(self._config, self._secret_path, self._timestamp)

    async def _connect_and_serve(self) -> None:
        tls = tls_context(self._config.gateway.broker.tls)
        session = GatewaySession(
            self._endpoint(),
            tls=tls,
            reply_timeout=self._config.uplink.reply_timeout,
            on_connect_sending=self._connect_sending,
        )
        async with session:
            self._session_up = True
            self._policy.succeeded()
            self.status.state = "connected"
            self._recovered()
            if self.on_session is not None:
                self.on_session()
            try:
                await self._serve(session)
            finally:
                if not session.lost.is_set():
                    await self._logout_all(session)

    async def _serve(self, session: GatewaySession) -> None:
        # Commands arrive as soon as the session is up: their replies may queue meanwhile.
        replies = ReplyOutbox(session.publish_reply)
        self.commands.attach(replies)
        # Devices to register get their secret first, then topology and login as any other.
        if self.registration is not None:
            await self.registration.run(session, self._config, self.registry)
        # Sub-devices missing from the topology cannot log in (740): add them first.
        await self._sync_topology(session)
        # Log in before delivering so live data goes out live, not as resume.
        await self._login_pending(session)
        # Points the cloud model lacks are withheld before anything is sent (a 1204 would
        # refuse the whole batch they are in).
        await self.model_check.run(session, self._config, self.registry, self._ids)
        # Rows a previous session left in flight go back to the pool. Its delivery releases
        # what it was sending when it ends, but that release is itself an await that a
        # second cancellation (the session's task group tearing down) can cut short, and
        # rows left in flight would never be sent again before a restart.
        # Not the events an integration channel is sending (it outlives this session): the
        # spool knows them by their backlog takes, even one queued just before this call.
        keep = self.historical is not None
        if released := await self._spool.release_all(keep_backlog_events=keep):
            log.info("rows left in flight by the last session returned to the spool", rows=released)
        delivery = Delivery(
            self._config,
            self._spool,
            session,
            self.registry,
            clock=self._clock,
            ids=self._ids,
            request_login=self._login_wanted.set,
            stats=self.stats,
            withheld=self.model_check.withheld,
            historical=frozenset() if self.historical is None else self.historical.devices,
            claims=self._claims,
        )
        self._delivery = delivery
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._watch(session), name="uplink-watch")
                group.create_task(self._login_loop(session), name="uplink-login")
                group.create_task(replies.run(), name="uplink-replies")
                group.create_task(self._inbound_loop(session), name="uplink-inbound")
                group.create_task(delivery.run(), name="uplink-delivery")
                for sync in self._device_syncs():
                    group.create_task(sync.run(session, self.registry), name="uplink-sync")
        except BaseExceptionGroup as group:
            raise _first_cause(group) from None
        finally:
            self._delivery = None
            self.commands.detach(replies)

    def _device_syncs(self) -> list[AttributeSync | TagSync]:
        """What passes over each sub-device after its login (attributes, tags)."""
        return [s for s in (self.attributes, self.tags) if s is not None]

    async def _watch(self, session: GatewaySession) -> None:
        await session.lost.wait()
        raise BrokerUnavailable(session.lost_reason or "connection lost")

    # ------------------------------------------------------------------ sub-devices

    async def _login_loop(self, session: GatewaySession) -> None:
        while True:
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancellation
            # that races with the event, and the loop would outlive the shutdown.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(RELOGIN_INTERVAL_S):
                    await self._login_wanted.wait()
            self._login_wanted.clear()
            if self.registration is not None:
                before = {d.name for d in self.registry if d.secret}
                await self.registration.run(session, self._config, self.registry)
                if {d.name for d in self.registry if d.secret} != before:
                    await self._sync_topology(session)  # bind the newly registered
            await self._login_pending(session)
            for sync in self._device_syncs():
                sync.wake()

    async def _sync_topology(self, session: GatewaySession) -> None:
        """Read the cloud topology; add what is missing (`auto_topo`); report extras."""
        gateway = self._config.gateway
        found, why = await read_topology(
            session,
            gateway.product_key,
            gateway.device_key,
            self._ids.next_id(),
            timeout=lookup_timeout(self._config.uplink.reply_timeout),
        )
        if found is None:
            self.topology.read_failed(why)
            return
        configured = {d.keys: d for d in self.registry if d.wanted}
        diff = TopoDiff.of(configured, found)
        self.topology.seen(diff, {k: d.name for k, d in configured.items()})
        registering = {d.name for d in self._config.devices if d.registration is not None}
        # Devices the gateway registered are bound to it as well, with or without auto_topo.
        missing = [
            configured[k]
            for k in diff.missing
            if configured[k].secret
            and (self._config.uplink.auto_topo or configured[k].name in registering)
        ]
        if not missing:
            return
        size = self._config.uplink.login_batch_size
        for start in range(0, len(missing), size):
            chunk = missing[start : start + size]
            request = messages.topo_add(
                gateway.product_key,
                gateway.device_key,
                id=self._ids.next_id(),
                devices=[self._credentials(d) for d in chunk],
                timestamp=str(int(self._clock.time() * 1000)),
                sign_method=gateway.sign_method,
            )
            reply = await self._ask(session, request)
            names = [d.name for d in chunk]
            if reply is not None and reply.ok:
                log.info("sub-devices added to the gateway topology", devices=names)
            elif reply is not None:
                # The 740 path at login retries one by one and names each device's refusal.
                log.warning("thing.topo.add refused", devices=names, code=describe(reply.code),
                            message=reply.message)  # fmt: skip

    async def _login_pending(self, session: GatewaySession) -> None:
        now = self._clock.monotonic()
        # A refused login (740 without auto_topo, 742, 705, ...) is asked again only after
        # the re-login interval: delivery asks for logins on every 1212, and retrying a
        # refusal at that rate cannot help (the cloud must change first).
        pending = [
            d
            for d in self.registry
            if d.wanted
            and d.secret  # a device still to register has none yet
            and not d.online
            and d.last_error != "disabled"
            and (d.refused_at is None or now - d.refused_at >= RELOGIN_INTERVAL_S)
        ]
        size = self._config.uplink.login_batch_size
        for start in range(0, len(pending), size):
            await self._login_chunk(session, pending[start : start + size])

    def _credentials(self, device: SubDevice) -> messages.SubDeviceCredentials:
        return messages.SubDeviceCredentials(device.product_key, device.device_key, device.secret)

    async def _ask(
        self, session: GatewaySession, request: messages.Request
    ) -> messages.Reply | None:
        try:
            raw = await session.request(request.topic, request.id, request.payload)
            return messages.decode_reply(raw.payload)
        except ReplyTimeout:
            log.warning("no reply from EnOS", method=request.method)
        except messages.MalformedMessage as exc:
            log.warning("unreadable reply from EnOS", method=request.method, reason=str(exc))
        return None

    async def _login_chunk(self, session: GatewaySession, chunk: list[SubDevice]) -> None:
        gateway = self._config.gateway
        request = messages.combine_login_batch(
            gateway.product_key,
            gateway.device_key,
            id=self._ids.next_id(),
            devices=[self._credentials(d) for d in chunk],
            timestamp=str(int(self._clock.time() * 1000)),
            sign_method=gateway.sign_method,
        )
        reply = await self._ask(session, request)
        if reply is None:
            return
        result = messages.login_batch_result(reply)
        for logged in result.logged_in:
            device = self.registry.by_keys(logged.product_key, logged.device_key)
            if device is not None:
                device.logged_in(self._now_ms())
        if result.whole_request_failed:
            log.error(
                "sub-device batch login failed", code=describe(reply.code), message=reply.message
            )
        # The batch reply names failed devices but only the first error code: log each
        # failed device in on its own to learn (and act on) its exact code.
        failed = [d for d in chunk if not d.online]
        for device in failed:
            await self._login_one(session, device, topo_retry=self._config.uplink.auto_topo)
        online = sum(1 for d in chunk if d.online)
        log.info("sub-devices logged in", online=online, failed=len(chunk) - online)

    async def _login_one(
        self, session: GatewaySession, device: SubDevice, *, topo_retry: bool
    ) -> None:
        gateway = self._config.gateway
        timestamp = str(int(self._clock.time() * 1000))
        request = messages.combine_login(
            gateway.product_key,
            gateway.device_key,
            id=self._ids.next_id(),
            device=self._credentials(device),
            timestamp=timestamp,
            sign_method=gateway.sign_method,
        )
        reply = await self._ask(session, request)
        if reply is None:
            return
        if reply.ok:
            device.logged_in(self._now_ms())
            return
        if reply.code == NOT_IN_TOPOLOGY and topo_retry:
            topo = messages.topo_add(
                gateway.product_key,
                gateway.device_key,
                id=self._ids.next_id(),
                devices=[self._credentials(device)],
                timestamp=timestamp,
                sign_method=gateway.sign_method,
            )
            added = await self._ask(session, topo)
            if added is not None and added.ok:
                log.info("sub-device added to the gateway topology", device=device.name)
                await self._login_one(session, device, topo_retry=False)
                return
        device.last_error = "disabled" if reply.code == DISABLED else describe(reply.code)
        device.refused_at = self._clock.monotonic()
        log.error(
            "sub-device login refused",
            device=device.name,
            code=describe(reply.code),
            message=reply.message,
        )

    async def _logout_all(self, session: GatewaySession) -> None:
        gateway = self._config.gateway
        online = [d for d in self.registry if d.online]
        with contextlib.suppress(TimeoutError, BrokerUnavailable, ReplyTimeout):
            async with asyncio.timeout(LOGOUT_BUDGET_S):
                for device in online:
                    request = messages.combine_logout(
                        gateway.product_key,
                        gateway.device_key,
                        id=self._ids.next_id(),
                        device=messages.DeviceRef(device.product_key, device.device_key),
                    )
                    await session.request(request.topic, request.id, request.payload, timeout=2)
                    device.online = False

    # ------------------------------------------------------------------ commands

    async def _inbound_loop(self, session: GatewaySession) -> None:
        async for inbound in session.inbound():
            # Never blocks: each command runs on its own, a full queue is refused at once.
            try:
                self.commands.submit(inbound)
            except Exception:
                # `submit` handles bad input itself; anything escaping it is a bug, and one
                # command's bug must not end the session that carries every other message.
                log.exception("cloud command failed", topic=inbound.topic)

    async def answer(self, inbound: Inbound) -> tuple[str, bytes] | None:
        """The (reply topic, payload) for a downstream message; None when none is due.

        Never raises for bad input: a malformed command gets an error reply when it can be
        addressed (it has an id and a command topic), and is logged and dropped otherwise.
        Duplicates and backpressure as for commands from the session (`CommandDispatcher`).
        """
        return await self.commands.answer(inbound)

    async def _execute(self, command: messages.Command) -> tuple[int, object, str]:
        kind = command.kind
        if kind is messages.CommandKind.ACTIVATE_INFO:
            return self._activate(command)
        if kind in (
            messages.CommandKind.COMBINE_ENABLE,
            messages.CommandKind.COMBINE_DISABLE,
            messages.CommandKind.COMBINE_DELETE,
        ):
            return self._lifecycle(command)
        if self._commands is None:
            return 1101, None, "downstream command handler not registered"
        try:
            return await self._commands(command)
        except Exception as exc:  # a handler bug must cost one error reply, not the uplink
            log.exception("cloud command handler failed", method=command.method)
            return 1102, None, f"command handler failed: {exc}"

    def _activation_refusal(self, command: messages.Command) -> str | None:
        """Why `thing.activate.info` must not be honoured now, or None (honour it).

        Only a mode-3 gateway still waiting for its secret takes one, and only for its own
        keys: anything else would let a cloud (or whoever can publish on the topic) plant
        a secret file or replace the secret of an activated gateway.
        """
        gateway = self._config.gateway
        own = (gateway.product_key, gateway.device_key)
        activation = command.activation
        if gateway.secure_mode != 3:
            return f"the gateway uses secure mode {gateway.secure_mode}, not 3"
        if activation is None or own != (command.product_key, command.device_key):
            return "not addressed to this gateway"
        if own != (activation.product_key, activation.device_key):
            return "the secret is for another device"
        if self._secret_path is None or self._secret_path.exists():
            return "no activation pending (already activated)"
        return None

    def _activate(self, command: messages.Command) -> tuple[int, object, str]:
        refusal = self._activation_refusal(command)
        if refusal is not None:
            log.warning(
                "thing.activate.info ignored",
                reason=refusal,
                product_key=command.product_key,
                device_key=command.device_key,
            )
            return ReplyCode.ACTIVATION_REFUSED, None, f"activation refused: {refusal}"
        activation = command.activation
        assert activation is not None  # checked above
        assert self._secret_path is not None
        self._secret_path.parent.mkdir(parents=True, exist_ok=True)
        temp = self._secret_path.with_suffix(".tmp")
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(activation.device_secret)
            handle.flush()
            os.fsync(handle.fileno())
        temp.replace(self._secret_path)
        log.info("gateway activated; device secret persisted", path=str(self._secret_path))
        return 200, None, "device activate success"

    def _lifecycle(self, command: messages.Command) -> tuple[int, object, str]:
        unknown = []
        for ref in command.devices:
            device = self.registry.by_keys(ref.product_key, ref.device_key)
            if device is None:
                unknown.append(f"{ref.product_key}&{ref.device_key}")
                continue
            if command.kind is messages.CommandKind.COMBINE_DISABLE:
                device.enabled = False
                device.online = False
                device.last_error = "disabled"
            elif command.kind is messages.CommandKind.COMBINE_ENABLE:
                device.enabled = True
                device.last_error = ""
                device.refused_at = None
                self._login_wanted.set()
            else:
                device.deleted = True
                device.online = False
            log.info("cloud changed a sub-device", device=device.name, action=command.method)
            if self._on_lifecycle is not None:
                self._on_lifecycle(device.name, command.kind)
        if unknown:
            return 2004, None, "unknown sub-device: " + ", ".join(unknown)
        return 200, None, ""
