"""The amqtt seam: an embedded MQTT 3.1.1 broker with EnOS hooks.

amqtt 0.12.1 gives almost everything the emulator needs through its plugin API:

- `BaseAuthPlugin.authenticate(session)` sees clientId/username/password of each CONNECT;
- broker events `on_broker_client_connected/disconnected` and
  `on_broker_message_received` (fired for every PUBLISH, before topic checks);
- `BaseTopicPlugin.topic_filtering(..., action=PUBLISH)` returning False stops the broker
  from forwarding device uplinks to other clients (EnOS consumes them; nobody else sees them);
- `broker.sessions[client_id] -> (session, handler)` and `handler.mqtt_publish(...)` let the
  cloud publish to one connection regardless of its subscriptions (downstream commands);
  `handler.handle_connection_closed()` drops a connection.

Three gaps. First, a failed `authenticate` always yields CONNACK 5 (`NOT_AUTHORIZED`), and EnOS
needs 4 (bad user name or password) too. The least invasive workaround: the auth plugin stores the
wanted code in `session.attributes`, and `EnosBroker` swaps the fresh (still unattached)
protocol handler amqtt creates per CONNECT for a subclass whose CONNACK honours it. That
override touches one private method of a pinned amqtt (`_initialize_client_session`) and
copies none of its logic. Second, `on_broker_client_connected` fires before the
connection's handler has started, and starting re-sends QoS-1 messages in flight: the same
subclass exposes `started`, and the emulator publishes only after it is set.

Third, stopping a connection (a client's DISCONNECT or lost socket, `handle_connection_closed`,
a take-over, `Broker.shutdown`) can hang for good on Python 3.11. amqtt's `stop()` cancels the
handler's reader task once and waits for it to end, but the reader waits for each packet with
`asyncio.wait_for`, which on 3.11 swallows a cancellation that lands just after the packet
arrived (the inner read is done, the reader not yet resumed): the reader reads on, `stop()`
waits forever, the socket stays open and nothing more reaches the client, while the broker
goes on reading from it. A client that keeps publishing (the daemon under load) hits that
window now and then. `EnosHandler` reads through `_EndableReader`, which reports end of
stream once `stop()` has begun, so a reader that missed its cancellation ends at its next read.

Known amqtt behaviour kept as is: a CONNECT reusing the MQTT clientId of a live connection
takes that connection over *before* authentication, so even a refused CONNECT drops it.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

from amqtt.adapters import ReaderAdapter, WriterAdapter
from amqtt.broker import Broker
from amqtt.contexts import Action, BaseContext
from amqtt.mqtt.connack import NOT_AUTHORIZED, ConnackPacket
from amqtt.mqtt.protocol.broker_handler import BrokerProtocolHandler
from amqtt.plugins.base import BaseAuthPlugin, BaseTopicPlugin
from amqtt.session import ApplicationMessage, Session

#: `session.attributes` key holding the CONNACK return code of a refused CONNECT.
CONNACK_CODE_ATTR = "gatewayd.emulator.connack"


class BrokerHooks(Protocol):
    """What the emulator implements for the broker plugins."""

    def decide_connect(self, session: Session) -> int:
        """CONNACK return code for this CONNECT: 0 accepts."""

    def client_connected(self, client_id: str, session: Session) -> None:
        """An accepted connection is up (CONNACK sent)."""

    def client_disconnected(self, client_id: str, session: Session) -> None:
        """A connection ended (or was taken over)."""

    def message_received(self, client_id: str, topic: str, payload: bytes) -> None:
        """A client published; must not block (queue it)."""


class _EndableReader(ReaderAdapter):  # type: ignore[misc]  # amqtt ships no type hints mypy reads
    """Reads from a connection until `end()`; from then on every read is end of stream."""

    def __init__(self, inner: ReaderAdapter) -> None:
        self._inner = inner
        self._ended = False

    def end(self) -> None:
        self._ended = True

    async def read(self, n: int = -1) -> bytes:
        if self._ended:
            return b""  # the adapter's end of stream: amqtt's reader loop then stops
        data: bytes = await self._inner.read(n)
        return data

    def feed_eof(self) -> None:
        self._inner.feed_eof()


class EnosHandler(BrokerProtocolHandler):  # type: ignore[misc]  # amqtt ships no type hints mypy reads
    """A broker protocol handler whose refusing CONNACK carries the code the auth chose,
    which tells when it has started (see `started`) and which always stops (see the module
    docstring)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        #: Set once the handler reads from the client. amqtt fires CLIENT_CONNECTED before
        #: that, and its start() re-sends every QoS-1 message already in flight: a publish
        #: made in between would reach the client twice. Publishers wait for this.
        self.started = asyncio.Event()
        self._input: _EndableReader | None = None

    def attach(self, session: Session, reader: ReaderAdapter, writer: WriterAdapter) -> None:
        self._input = _EndableReader(reader)
        super().attach(session, self._input, writer)

    async def start(self) -> None:
        await super().start()
        self.started.set()

    async def stop(self) -> None:
        # Before amqtt cancels the reader: should wait_for swallow that cancellation, the
        # reader's next read sees end of stream and the reader ends anyway.
        if self._input is not None:
            self._input.end()
        await super().stop()

    async def mqtt_connack_authorize(self, authorize: bool) -> None:
        if authorize or self.session is None:
            await super().mqtt_connack_authorize(authorize)
            return
        code = self.session.attributes.get(CONNACK_CODE_ATTR, NOT_AUTHORIZED)
        # [MQTT-3.2.2-4]: a refusing CONNACK has session-present 0.
        await self._send_packet(ConnackPacket.build(0, code))


class EnosBroker(Broker):  # type: ignore[misc]  # amqtt ships no type hints mypy reads
    """amqtt's broker with the CONNACK-code handler (see the module docstring)."""

    async def _initialize_client_session(
        self,
        reader: ReaderAdapter,
        writer: WriterAdapter,
        remote_address: str,
        remote_port: int,
    ) -> tuple[BrokerProtocolHandler, Session]:
        _unused, session = await super()._initialize_client_session(
            reader, writer, remote_address, remote_port
        )
        return EnosHandler(self.plugins_manager, loop=self._loop), session

    def handler_of(self, client_id: str) -> EnosHandler | None:
        """The protocol handler of the live connection of `client_id`, if any."""
        entry = self.sessions.get(client_id)
        if entry is None or entry[0].transitions.state != "connected":
            return None
        handler = entry[1]
        return handler if isinstance(handler, EnosHandler) else None

    def subscribed_qos(self, client_id: str, topic: str) -> int | None:
        """The QoS `client_id` subscribed `topic` with (through any filter), or None."""
        best: int | None = None
        for topic_filter, subscribers in self.subscriptions.items():
            if not topic_matches(topic_filter, topic):
                continue
            for session, qos in subscribers:
                if session.client_id == client_id:
                    best = qos if best is None else max(best, qos)
        return best


def topic_matches(topic_filter: str, topic: str) -> bool:
    """MQTT 3.1.1 topic-filter matching with `+` and `#` (no `$` topics are involved here)."""
    filter_levels = topic_filter.split("/")
    topic_levels = topic.split("/")
    for index, level in enumerate(filter_levels):
        if level == "#":
            return index == len(filter_levels) - 1
        if index >= len(topic_levels) or level not in ("+", topic_levels[index]):
            return False
    return len(filter_levels) == len(topic_levels)


class EnosAuthPlugin(BaseAuthPlugin):  # type: ignore[misc]  # amqtt ships no type hints mypy reads
    """Verifies each CONNECT through the emulator and tracks connection lifetimes."""

    @dataclass
    class Config:
        hooks: Any = None

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        self.hooks: BrokerHooks = self.config.hooks

    async def authenticate(self, *, session: Session) -> bool | None:
        code = self.hooks.decide_connect(session)
        if code:
            session.attributes[CONNACK_CODE_ATTR] = code
            return False
        session.attributes.pop(CONNACK_CODE_ATTR, None)
        return True

    async def on_broker_client_connected(self, *, client_id: str, client_session: Session) -> None:
        self.hooks.client_connected(client_id, client_session)

    async def on_broker_client_disconnected(
        self, *, client_id: str, client_session: Session
    ) -> None:
        self.hooks.client_disconnected(client_id, client_session)


class EnosTopicPlugin(BaseTopicPlugin):  # type: ignore[misc]  # amqtt ships no type hints mypy reads
    """Hands every PUBLISH to the emulator and keeps device uplinks away from other clients."""

    @dataclass
    class Config:
        hooks: Any = None

    def __init__(self, context: BaseContext) -> None:
        super().__init__(context)
        self.hooks: BrokerHooks = self.config.hooks

    async def topic_filtering(
        self,
        *,
        session: Session | None = None,
        topic: str | None = None,
        action: Action | None = None,
    ) -> bool:
        # Subscribing is free (replies need it); client-to-client forwarding never happens.
        return action is not Action.PUBLISH

    async def on_broker_message_received(
        self, *, client_id: str, message: ApplicationMessage | None
    ) -> None:
        if message is None or not message.topic:
            return
        self.hooks.message_received(client_id, message.topic, bytes(message.data or b""))
