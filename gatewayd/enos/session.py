"""One MQTT connection to EnOS: the only module that talks to the MQTT library.

`GatewaySession` connects with EnOS credentials, publishes requests and correlates their
`_reply` by (reply topic, id), and hands every other inbound message (cloud commands) to the
caller through `inbound()`. It does not reconnect: the uplink decides when to try again
(`gatewayd.enos.reconnect`), because EnOS punishes eager reconnects with a lock-out.

Library failures become our own errors here: `ConnectRefused(rc)` for a CONNACK error,
`BrokerUnreachable` when the TCP/TLS connection never came up (no CONNECT was sent, so
EnOS' connect budget is untouched), `BrokerUnavailable` for everything else that means
"the transport is gone", `ReplyTimeout` when the broker took the message but EnOS never
answered. `on_connect_sending` is called the moment a CONNECT is about to go out, so the
uplink counts (and persists) exactly the CONNECTs EnOS sees.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import socket
import ssl
import sys
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import aiomqtt
import structlog
from aiomqtt.exceptions import MqttConnectError

from gatewayd.cancels import KeepingCancels
from gatewayd.config.models import TlsConfig
from gatewayd.enos.mqttlog import PublishBacklog, end_library_episode, mqtt_logger

log = structlog.get_logger(__name__)

REPLY_SUFFIX = "_reply"

#: paho reports a v3.1.1 CONNACK refusal as the MQTT 5 reason code; EnOS speaks 3.1.1.
_V5_TO_V311_CONNACK = {132: 1, 133: 2, 136: 3, 134: 4, 135: 5}


class BrokerUnavailable(Exception):
    """The MQTT transport is down (connect failed, connection lost, publish impossible)."""


class BrokerUnreachable(BrokerUnavailable):
    """The TCP (or TLS) connection to the broker failed: no CONNECT packet was sent."""


class ConnectRefused(BrokerUnavailable):
    """The broker answered CONNACK with a non-zero return code (4: credentials, 5: refused)."""

    def __init__(self, rc: int, message: str = "") -> None:
        self.rc = rc
        super().__init__(message or f"broker refused CONNECT with return code {rc}")


class ReplyTimeout(Exception):
    """EnOS accepted the publish but sent no `_reply` within the timeout."""


@dataclass(frozen=True, slots=True)
class Inbound:
    """A message the cloud sent that is not a reply to one of our requests."""

    topic: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class RawReply:
    """A reply matched to its request: the payload still undecoded (the codec decodes it)."""

    topic: str
    payload: bytes


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where and as whom to connect."""

    host: str
    port: int
    client_id: str
    username: str
    password: str
    keepalive: int = 60
    connect_timeout: float = 10.0


def tls_context(tls: TlsConfig) -> ssl.SSLContext | None:
    """The SSL context for a TLS config, or None for plain TCP (only when configured)."""
    if not tls.enabled:
        return None
    context = ssl.create_default_context(cafile=str(tls.ca_file) if tls.ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.cert_file is not None and tls.key_file is not None:
        # Port 18883: EnOS verifies the gateway's X.509 certificate (mutual TLS).
        context.load_cert_chain(str(tls.cert_file), str(tls.key_file))
    if not tls.verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


def _reply_id(payload: bytes) -> str | None:
    """The `id` of a reply payload, as a string, or None when it has none."""
    try:
        message = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(message, dict) or message.get("id") is None:
        return None
    return str(message["id"])


class GatewaySession:
    """A connected EnOS gateway session; use as `async with GatewaySession(...) as s:`."""

    def __init__(
        self,
        endpoint: Endpoint,
        *,
        tls: ssl.SSLContext | None = None,
        reply_timeout: float = 30.0,
        max_inflight: int = 20,
        on_connect_sending: Callable[[], None] | None = None,
    ) -> None:
        self._endpoint = endpoint
        self._reply_timeout = reply_timeout
        self._client = aiomqtt.Client(
            endpoint.host,
            endpoint.port,
            identifier=endpoint.client_id,
            username=endpoint.username,
            password=endpoint.password,
            keepalive=endpoint.keepalive,
            timeout=endpoint.connect_timeout,
            clean_session=True,
            protocol=aiomqtt.ProtocolVersion.V311,
            tls_context=tls,
            max_inflight_messages=max_inflight,
            # Without TCP_NODELAY, Nagle holds the tail of each large batch until the
            # broker's delayed ACK (up to 40 ms): request/reply drains ran at half speed.
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            logger=mqtt_logger(),
        )
        # aiomqtt warns on every publish while more than its threshold wait for PUBACK (a
        # command burst gave 8,764 lines); PublishBacklog says it once per episode instead.
        self._client.pending_calls_threshold = sys.maxsize
        self._publishes = PublishBacklog(threshold=max_inflight)
        self._connect_sent = False
        self._hook_socket_open(on_connect_sending)
        self._pending: dict[tuple[str, str], asyncio.Future[RawReply]] = {}
        self._subscribed: set[str] = set()
        self._inbound: asyncio.Queue[Inbound | None] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._lost: asyncio.Event = asyncio.Event()
        self._lost_reason: str = ""

    def _hook_socket_open(self, on_connect_sending: Callable[[], None] | None) -> None:
        """Learn when the CONNECT goes out. paho opens the TCP socket (and completes the
        TLS handshake), calls `on_socket_open`, then sends CONNECT at once, all in the
        executor thread aiomqtt connects from; aiomqtt offers no hook of its own, so its
        paho callback is wrapped. A failure before this point sent no CONNECT."""
        paho = self._client._client
        aiomqtt_open = paho.on_socket_open

        def opened(client: Any, userdata: Any, sock: Any) -> None:
            self._connect_sent = True
            if on_connect_sending is not None:
                on_connect_sending()  # before CONNECT leaves: persisted write-ahead
            if aiomqtt_open is not None:
                aiomqtt_open(client, userdata, sock)

        paho.on_socket_open = opened

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        # aiomqtt waits for CONNACK with wait_for, which on Python 3.11 drops a cancellation
        # arriving with the CONNACK (gatewayd/cancels.py): the caller would take the
        # refusal for an answer, retry, and never stop. Raise the cancellation instead.
        task = asyncio.current_task()
        before = task.cancelling() if task is not None else 0

        def dropped() -> bool:
            return task is not None and task.cancelling() > before

        try:
            await self._client.__aenter__()
        except MqttConnectError as exc:
            if dropped():
                raise asyncio.CancelledError from None
            value = exc.rc if isinstance(exc.rc, int) else getattr(exc.rc, "value", -1)
            rc = _V5_TO_V311_CONNACK.get(int(value), int(value))
            raise ConnectRefused(rc, str(exc)) from None
        except aiomqtt.MqttError as exc:
            if dropped():
                raise asyncio.CancelledError from None
            if not self._connect_sent:
                raise BrokerUnreachable(str(exc) or "connect failed") from None
            raise BrokerUnavailable(str(exc) or "connect failed") from None
        if dropped():
            # Connected as the cancellation came: close the connection, then stop.
            with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
                async with asyncio.timeout(5):
                    await self._client.__aexit__(None, None, None)
            raise asyncio.CancelledError
        self._reader = asyncio.create_task(self._read_loop(), name="enos-session-reader")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.wait({self._reader})
        self._fail_pending("session closed")
        with contextlib.suppress(aiomqtt.MqttError, TimeoutError):
            async with asyncio.timeout(5):
                await self._client.__aexit__(None, None, None)
        end_library_episode()

    @property
    def lost(self) -> asyncio.Event:
        """Set once the connection is gone; the session is then unusable."""
        return self._lost

    @property
    def lost_reason(self) -> str:
        return self._lost_reason

    # ------------------------------------------------------------------ traffic

    async def subscribe(self, topics: Iterable[str]) -> None:
        """Subscribe (QoS 1) the topics not yet subscribed on this connection."""
        new = [t for t in dict.fromkeys(topics) if t not in self._subscribed]
        if not new:
            return
        try:
            with KeepingCancels():  # aiomqtt waits for SUBACK with wait_for
                await self._client.subscribe([(t, 1) for t in new])
        except aiomqtt.MqttError as exc:
            raise BrokerUnavailable(f"subscribe failed: {exc}") from None
        self._subscribed.update(new)

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        """Publish and wait for the broker's PUBACK (QoS 1)."""
        if self._lost.is_set():
            raise BrokerUnavailable(self._lost_reason or "connection lost")
        self._publishes.enter()
        try:
            with KeepingCancels():  # and for PUBACK
                await self._client.publish(topic, payload, qos=qos)
        except aiomqtt.MqttError as exc:
            raise BrokerUnavailable(f"publish failed: {exc}") from None
        finally:
            self._publishes.leave()

    async def publish_reply(self, topic: str, payload: bytes) -> None:
        """Publish a command reply at QoS 0 (JAVA and NODE do; the cloud takes 0 or 1:
        PROTOCOL.md §2.4).

        A reply is sent once whatever the broker says (a lost session loses it either way,
        and a redelivered command is answered from the dispatcher's ledger), so waiting
        for a PUBACK would buy nothing, while holding a slot of the in-flight window that
        data needs: a burst of replies queued behind it timed out and ended the session.
        The only wait is for the socket to take the bytes, and it has no timeout: a slow
        link is not a lost one (`lost` says when the connection is gone).
        """
        if self._lost.is_set():
            raise BrokerUnavailable(self._lost_reason or "connection lost")
        try:
            with KeepingCancels():
                await self._client.publish(topic, payload, qos=0, timeout=math.inf)
        except aiomqtt.MqttError as exc:
            raise BrokerUnavailable(f"publish failed: {exc}") from None

    async def request(
        self, topic: str, msg_id: str, payload: bytes, *, timeout: float | None = None
    ) -> RawReply:
        """Publish a request and wait for EnOS' reply with the same id on `topic_reply`."""
        reply_topic = topic + REPLY_SUFFIX
        await self.subscribe([reply_topic])
        key = (reply_topic, msg_id)
        future: asyncio.Future[RawReply] = asyncio.get_running_loop().create_future()
        self._pending[key] = future
        try:
            await self.publish(topic, payload)
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for returns a reply that
            # races with a cancellation and swallows the cancellation (shutdown would hang).
            async with asyncio.timeout(timeout or self._reply_timeout):
                return await future
        except TimeoutError:
            raise ReplyTimeout(f"no reply to {topic} id {msg_id}") from None
        finally:
            self._pending.pop(key, None)

    async def inbound(self) -> AsyncIterator[Inbound]:
        """Cloud commands and other unsolicited messages, until the connection is lost."""
        while True:
            item = await self._inbound.get()
            if item is None:
                return
            yield item

    # ------------------------------------------------------------------ internals

    async def _read_loop(self) -> None:
        try:
            async for message in self._client.messages:
                topic = message.topic.value
                payload = message.payload
                data = payload if isinstance(payload, bytes) else str(payload or "").encode()
                if topic.endswith(REPLY_SUFFIX):
                    self._resolve(topic, data)
                else:
                    self._inbound.put_nowait(Inbound(topic, data))
        except aiomqtt.MqttError as exc:
            self._lost_reason = str(exc) or "connection lost"
        else:
            self._lost_reason = "connection closed"
        self._lost.set()
        self._fail_pending(self._lost_reason)
        self._inbound.put_nowait(None)

    def _resolve(self, topic: str, payload: bytes) -> None:
        msg_id = _reply_id(payload)
        future = self._pending.get((topic, msg_id)) if msg_id is not None else None
        if future is None or future.done():
            # EnOS sometimes pushes replies nobody waits for (e.g. after a timeout).
            log.debug("unmatched reply dropped", topic=topic, id=msg_id)
            return
        future.set_result(RawReply(topic, payload))

    def _fail_pending(self, reason: str) -> None:
        for future in self._pending.values():
            if not future.done():
                future.set_exception(BrokerUnavailable(reason))
        self._pending.clear()
