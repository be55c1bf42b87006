"""`EnosEmulator`: the embedded broker, the EnOS responder and the control API in one object.

Usage (tests, demo)::

    async with EnosEmulator(EmulatorConfig.load(path), port=11883) as emu:
        ...                                    # devices connect to 127.0.0.1:11883
        reply = await emu.send_command("subPK", "meter1",
                                       "thing.service.measurepoint.set", {"setpoint": 5})
        emu.faults.answer_code(1212, n=2, method="thing.measurepoint.post.batch")
        emu.records.values(channel="resume", device="meter1")

Concurrency: one worker task per connection processes that connection's PUBLISHes in
order (and sleeps there when the rate cap says the link is congested); replies and commands
are published from tasks of the same `TaskGroup`, owned by the emulator's runner task.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from amqtt.session import Session

from gatewayd.enos import topics
from gatewayd.enos.messages import encode_request_payload
from gatewayd.sim.emulator.auth import ConnectDecision, ConnectThrottle, check_connect
from gatewayd.sim.emulator.broker import (
    EnosAuthPlugin,
    EnosBroker,
    EnosHandler,
    EnosTopicPlugin,
)
from gatewayd.sim.emulator.config import EmulatorConfig
from gatewayd.sim.emulator.control import Faults, Stats
from gatewayd.sim.emulator.records import Records
from gatewayd.sim.emulator.responder import Connection, Outcome, Responder
from gatewayd.sim.emulator.state import CloudState, Key
from gatewayd.tokenbucket import TokenBucket

log = logging.getLogger(__name__)

_DECISION_ATTR = "gatewayd.emulator.decision"
_ACTIVATION_ATTR = "gatewayd.emulator.activation"
_COMMAND_QOS = 1
_LOGIN_METHODS = frozenset({"combine.login", "combine.login.batch"})


class DeviceNotConnected(LookupError):
    """A command was addressed to a device with no connection (nor online gateway)."""


class CommandTimeout(TimeoutError):
    """The device did not answer a command in time."""


@dataclass(eq=False)
class _Link:
    """One live, accepted MQTT connection."""

    conn: Connection
    handler: EnosHandler
    queue: asyncio.Queue[tuple[str, bytes]] = field(default_factory=asyncio.Queue)
    worker: asyncio.Task[None] | None = None
    bucket: TokenBucket | None = None


@dataclass(eq=False)
class _Command:
    """A downstream command on its way (or cached until its device is reachable)."""

    device: Key
    topic: str
    payload: bytes
    expires: float | None = None


class EnosEmulator:
    """A faithful EnOS cloud on 127.0.0.1 for tests, the demo and commissioning.

    `clock` (seconds, monotonic) drives the connect throttle; `wall_ms` (epoch ms) stamps
    records and fills missing `time` fields; `secret_factory` issues device secrets on
    dynamic activation; `rng` decides probabilistic reply drops. All are injectable.
    """

    def __init__(
        self,
        config: EmulatorConfig,
        *,
        host: str = "127.0.0.1",
        port: int = 11883,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] | None = None,
        secret_factory: Callable[[Key], str] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.config = config
        self.host = host
        self.port = port
        self.clock = clock
        self.wall_ms = wall_ms or (lambda: int(time.time() * 1000))
        self.state = CloudState(config, secret_factory=secret_factory)
        self.records = Records()
        self.stats = Stats()
        self.faults = Faults(rng)
        spec = config.options.connect_throttle
        self.throttle = ConnectThrottle(
            max_connects=spec.max_connects, window=spec.window, block=spec.block
        )
        self.throttle.enabled = spec.enabled
        self.auto_subscribe = config.options.auto_subscribe
        self.responder = Responder(
            self.state,
            self.records,
            max_payload_bytes=config.options.max_payload_bytes,
            online_cap_code=config.options.online_cap_code,
        )
        self._links: dict[str, _Link] = {}  # by MQTT client id
        self._pending: dict[tuple[str, str], asyncio.Future[dict[str, Any]]] = {}
        self._parked: list[_Command] = []  # cached commands (pending_ttl)
        self._ids = itertools.count(int(time.time()) % 1_000_000 * 1000)
        self._broker: EnosBroker | None = None
        self._runner: asyncio.Task[None] | None = None
        self._group: asyncio.TaskGroup | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._stopping = asyncio.Event()

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on host:port; returns once CONNECTs are accepted."""
        ready = asyncio.Event()
        self._stopping = asyncio.Event()
        self._runner = asyncio.create_task(self._run(ready), name="enos-emulator")
        await ready.wait()
        hooks = {"hooks": self}
        broker = EnosBroker(
            {
                "listeners": {"default": {"type": "tcp", "bind": f"{self.host}:{self.port}"}},
                "plugins": {
                    f"{EnosAuthPlugin.__module__}.EnosAuthPlugin": hooks,
                    f"{EnosTopicPlugin.__module__}.EnosTopicPlugin": hooks,
                },
            }
        )
        try:
            await broker.start()
        except BaseException:
            await self._stop_runner()
            raise
        self._broker = broker
        log.info("EnOS emulator listening on %s:%d", self.host, self.port)

    async def stop(self) -> None:
        """Close every connection and the listener; pending commands fail."""
        if self._broker is not None:
            broker, self._broker = self._broker, None
            await broker.shutdown()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(DeviceNotConnected("emulator stopped"))
        self._pending.clear()
        await self._stop_runner()

    async def __aenter__(self) -> EnosEmulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _run(self, ready: asyncio.Event) -> None:
        async with asyncio.TaskGroup() as group:
            self._group = group
            ready.set()
            await self._stopping.wait()
            # Workers, delayed replies, publishes in flight: nothing outlives the emulator.
            for task in list(self._tasks):
                task.cancel()
            self._links.clear()
        self._group = None

    async def _stop_runner(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            with contextlib.suppress(asyncio.CancelledError):
                await runner

    def _spawn(self, coro: Any) -> asyncio.Task[Any] | None:
        if self._group is None or self._stopping.is_set():
            coro.close()
            return None
        task = self._group.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # --- broker hooks (called by the amqtt plugins) -------------------------------------------

    def decide_connect(self, session: Session) -> int:
        """CONNACK code for a CONNECT (0 accepts); activates a mode-3 device at once."""
        forced = self.faults.refuse_connect()
        if forced is not None:
            decision = ConnectDecision(forced, "refused by fault injection")
        else:
            decision = check_connect(
                self.state,
                self.throttle,
                client_id=session.client_id,
                username=session.username,
                password=session.password,
                over_tls=session.ssl_object is not None,
                now=self.clock(),
            )
        if not decision.accepted:
            self.stats.refused_connects += 1
            self.stats.refused_by_code[decision.return_code] += 1
            log.info(
                "CONNECT %s refused with %d: %s",
                session.client_id,
                decision.return_code,
                decision.reason,
            )
            return decision.return_code
        self.stats.connects += 1
        session.attributes[_DECISION_ATTR] = decision
        if decision.secure_mode == 3 and decision.device is not None:
            # Activate now, atomically with the check: a second mode-3 CONNECT must fail.
            session.attributes[_ACTIVATION_ATTR] = self.state.activate(decision.device)
        return 0

    def client_connected(self, client_id: str, session: Session) -> None:
        """Register the EnOS connection; kick an older one of the same device."""
        decision: ConnectDecision | None = session.attributes.get(_DECISION_ATTR)
        handler = self._broker.handler_of(client_id) if self._broker else None
        if decision is None or decision.device is None or handler is None:
            return
        old = self._links.pop(client_id, None)
        if old is not None:
            self._drop(old)
        for other in list(self._links.values()):
            if other.conn.device == decision.device:
                # EnOS keeps one session per device: the newest wins.
                self._links.pop(other.conn.client_id, None)
                self._drop(other)
                self._spawn(other.handler.handle_connection_closed())
        link = _Link(Connection(client_id, decision.device, decision.integration), handler)
        self._links[client_id] = link
        link.worker = self._spawn(self._work(link))
        secret = session.attributes.pop(_ACTIVATION_ATTR, None)
        if secret is not None:
            self._publish_activation(link, secret)
        self._deliver_parked()

    def client_disconnected(self, client_id: str, session: Session) -> None:
        """A connection ended: its sub-devices go offline (unless it was taken over)."""
        link = self._links.get(client_id)
        if link is None:
            return
        entry = self._broker.sessions.get(client_id) if self._broker else None
        if (
            entry is not None
            and entry[1] is link.handler
            and (entry[0].transitions.state == "connected")
        ):
            return  # the event of an older connection that this one took over
        del self._links[client_id]
        self._drop(link)

    def message_received(self, client_id: str, topic: str, payload: bytes) -> None:
        """Queue one PUBLISH for its connection's worker."""
        self.stats.messages_in += 1
        self.stats.bytes_in += len(payload)
        link = self._links.get(client_id)
        if link is None:
            log.warning("PUBLISH from unregistered connection %s dropped", client_id)
            return
        link.queue.put_nowait((topic, payload))

    def _drop(self, link: _Link) -> None:
        self.stats.disconnects += 1
        if link.worker is not None:
            link.worker.cancel()
        gone = self.state.gateway_gone(link.conn.device)
        log.info("device %s/%s disconnected; %d sub-devices offline", *link.conn.device, len(gone))

    # --- upstream processing ----------------------------------------------------------------------

    async def _work(self, link: _Link) -> None:
        loop = asyncio.get_running_loop()
        while True:
            topic, payload = await link.queue.get()
            rate = self.faults.rate_limit
            if rate:
                if link.bucket is None or link.bucket.rate != rate:
                    link.bucket = TokenBucket(rate=rate, burst=rate)
                wait = link.bucket.reserve(len(payload), loop.time())
                if wait > 0:
                    self.stats.rate_limited_messages += 1
                    self.stats.rate_limited_seconds += wait
                    await asyncio.sleep(wait)  # a congested link: late, not lost
            try:
                outcome = self.responder.handle(
                    link.conn, topic, payload, self.wall_ms(), override=self.faults.forced_code
                )
            except Exception:
                # Malformed input gets error replies inside the responder; this is a bug.
                log.exception("responder failed on %s", topic)
                continue
            self._after(link, outcome)
            if outcome.method in _LOGIN_METHODS and self._parked:
                self._deliver_parked()  # after the login reply, like the cloud

    def _after(self, link: _Link, outcome: Outcome) -> None:
        if outcome.command_reply is not None:
            reply_topic, body = outcome.command_reply
            future = self._pending.pop((reply_topic, str(body.get("id"))), None)
            if future is not None and not future.done():
                future.set_result(body)
            return
        if outcome.reply is None or outcome.reply_topic is None:
            return
        if outcome.method is not None:
            self.stats.requests_by_method[outcome.method] += 1
        if outcome.code is not None:
            self.stats.replies_by_code[outcome.code] += 1
        fate = self.faults.reply_fate(outcome.method)
        if fate.drop:
            self.stats.replies_dropped += 1
            return
        qos = (
            self._broker.subscribed_qos(link.conn.client_id, outcome.reply_topic)
            if (self._broker)
            else None
        )
        if qos is None:
            if not self.auto_subscribe:
                self.stats.replies_unsubscribed += 1
                return
            qos = 1
        self._spawn(
            self._publish(link, outcome.reply_topic, outcome.reply, min(qos, 1), fate.delay)
        )

    async def _publish(
        self, link: _Link, topic: str, payload: bytes, qos: int, delay: float = 0.0
    ) -> None:
        if delay > 0:
            await asyncio.sleep(delay)
        await link.handler.started.wait()
        if self._links.get(link.conn.client_id) is not link:
            return  # the connection is gone; so is what it was waiting for
        self.stats.messages_out += 1
        self.stats.bytes_out += len(payload)
        try:
            await link.handler.mqtt_publish(topic, payload, qos, retain=False)
        except Exception as exc:  # a connection dying mid-publish is not our failure
            log.info("publish to %s on %s failed: %r", link.conn.client_id, topic, exc)

    def _publish_activation(self, link: _Link, secret: str) -> None:
        pk, dk = link.conn.device
        device = self.state.devices[(pk, dk)]
        params = {
            "assetId": device.asset_id,
            "productKey": pk,
            "deviceKey": dk,
            "deviceSecret": secret,
        }
        payload = encode_request_payload(str(next(self._ids)), "thing.activate.info", params)
        self._spawn(self._publish(link, topics.activate_info(pk, dk), payload, _COMMAND_QOS))

    # --- control API ------------------------------------------------------------------------------

    async def send_command(
        self,
        product_key: str,
        device_key: str,
        method: str,
        params: Any,
        timeout: float = 30.0,
        *,
        pending_ttl: float | None = None,
    ) -> dict[str, Any]:
        """Send a downstream command and return the device's reply (a dict with `code`).

        `method` is `thing.service.measurepoint.set|get`, `thing.service.{id}`,
        `thing.enable|disable|delete` (to the device itself) or `combine.enable|disable|
        delete` (to a gateway; `params` lists the sub-devices). combine.disable/delete change
        the cloud state first (the sub-devices go offline; delete forgets them), enable
        re-enables them -- as EnOS does before telling the gateway. The command goes over
        the device's own connection, or its gateway's while it is logged in.

        Without `pending_ttl` an unreachable device raises `DeviceNotConnected` (EnOS'
        instant command). With it the command is cached like EnOS' `pendingTtl`: delivered
        when the device next connects or is logged in, unless `pending_ttl` seconds (of the
        emulator's clock) have passed by then. Either way the reply is awaited at most
        `timeout` seconds from now, else `CommandTimeout`.
        """
        key = (product_key, device_key)
        topic = _command_topic(product_key, device_key, method)
        if method.startswith("combine."):
            self._apply_combine(key, method, params)
        msg_id = str(next(self._ids))
        command = _Command(key, topic, encode_request_payload(msg_id, method, params))
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        pending_key = (topics.reply_topic(topic), msg_id)
        self._pending[pending_key] = future
        try:
            link = self._find_route(key)
            if link is not None:
                self._deliver(link, command)
            elif pending_ttl is None:
                raise DeviceNotConnected(f"{key[0]}/{key[1]} is neither connected nor logged in")
            else:
                command.expires = self.clock() + pending_ttl
                self._parked.append(command)
            try:
                return await asyncio.wait_for(future, timeout)
            except TimeoutError:
                self.stats.command_timeouts += 1
                raise CommandTimeout(
                    f"{method} to {product_key}/{device_key}: no reply in {timeout}s"
                ) from None
        finally:
            self._pending.pop(pending_key, None)
            if command in self._parked:
                self._parked.remove(command)

    def _deliver(self, link: _Link, command: _Command) -> None:
        self.stats.commands_sent += 1
        self._spawn(self._publish(link, command.topic, command.payload, _COMMAND_QOS))

    def _deliver_parked(self) -> None:
        """Send cached commands whose device became reachable; forget expired ones."""
        now = self.clock()
        for command in list(self._parked):
            if command.expires is not None and now > command.expires:
                self._parked.remove(command)  # its caller times out, as EnOS' would
                continue
            link = self._find_route(command.device)
            if link is not None:
                self._parked.remove(command)
                self._deliver(link, command)

    def _find_route(self, key: Key) -> _Link | None:
        try:
            return self._route(key)
        except DeviceNotConnected:
            return None

    def _route(self, key: Key) -> _Link:
        for link in self._links.values():
            if link.conn.device == key:
                return link
        gateway = self.state.gateway_of_online(key)
        if gateway is not None:
            for link in self._links.values():
                if link.conn.device == gateway:
                    return link
        raise DeviceNotConnected(f"{key[0]}/{key[1]} is neither connected nor logged in")

    def _apply_combine(self, gateway: Key, method: str, params: Any) -> None:
        if not isinstance(params, list):
            raise TypeError(f"{method} params must be a list of {{productKey, deviceKey}}")
        subs = [(str(p["productKey"]), str(p["deviceKey"])) for p in params]
        for sub in subs:
            if self.state.device(sub) is None:
                continue  # EnOS would not list an unknown device; the gateway must cope
            if method == "combine.disable":
                self.state.set_enabled(sub, False)
            elif method == "combine.enable":
                self.state.set_enabled(sub, True)
            elif method == "combine.delete":
                self.state.delete_device(sub)

    async def disconnect(self, product_key: str, device_key: str) -> bool:
        """Drop the connection of a device (as a network fault would); False if none."""
        for link in list(self._links.values()):
            if link.conn.device == (product_key, device_key):
                await link.handler.handle_connection_closed()
                return True
        return False

    async def disconnect_client(self, client_id: str) -> bool:
        """Drop the connection with this MQTT client id; False if none."""
        link = self._links.get(client_id)
        if link is None:
            return False
        await link.handler.handle_connection_closed()
        return True

    # --- queries --------------------------------------------------------------------------------

    def is_connected(self, product_key: str, device_key: str) -> bool:
        """Whether the device has a live accepted MQTT connection."""
        return any(link.conn.device == (product_key, device_key) for link in self._links.values())

    @property
    def cached_commands(self) -> int:
        """Commands waiting for their device (sent with `pending_ttl`)."""
        return len(self._parked)

    def connected_devices(self) -> list[Key]:
        return [link.conn.device for link in self._links.values()]

    def online_sub_devices(self, gw_product_key: str, gw_device_key: str) -> list[Key]:
        """Sub-devices logged in through the gateway, in login order."""
        return self.state.online_sub_devices((gw_product_key, gw_device_key))

    def values(self, **filters: Any) -> list[Any]:
        """Shortcut for `records.values(channel=..., device=..., point=..., product=...)`."""
        return self.records.values(**filters)

    def snapshot(self) -> dict[str, Any]:
        """Records, stats and online state as one JSON-ready dict."""
        return {
            "records": self.records.to_json(),
            "stats": self.stats.to_json(),
            "connected": [f"{pk}/{dk}" for pk, dk in self.connected_devices()],
            "online": {
                f"{d.product_key}/{d.device_key}": [
                    f"{pk}/{dk}" for pk, dk in self.state.online_sub_devices(d.key)
                ]
                for d in self.state
                if self.state.online_sub_devices(d.key)
            },
        }

    def dump(self, path: Path) -> None:
        """Write `snapshot()` as JSON to `path` (atomically)."""
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.snapshot(), indent=1, default=str), encoding="utf-8")
        tmp.replace(path)


def _command_topic(pk: str, dk: str, method: str) -> str:
    fixed = {
        "thing.service.measurepoint.set": topics.measurepoint_set,
        "thing.service.measurepoint.get": topics.measurepoint_get,
        "combine.enable": topics.combine_enable,
        "combine.disable": topics.combine_disable,
        "combine.delete": topics.combine_delete,
        "thing.enable": topics.thing_enable,
        "thing.disable": topics.thing_disable,
        "thing.delete": topics.thing_delete,
    }
    builder = fixed.get(method)
    if builder is not None:
        return builder(pk, dk)
    if method.startswith("thing.service."):
        return topics.service(pk, dk, method.removeprefix("thing.service."))
    raise ValueError(f"{method!r} is not a downstream command method")
