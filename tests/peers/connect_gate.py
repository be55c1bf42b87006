"""A loopback TCP gate in front of mosquitto that plays the EnOS side of the connection.

mosquitto cannot check an EnOS sign, and it delivers only what a client subscribed to,
while EnOS pushes downstream commands to the device's connection without any SUBSCRIBE
(enos-protocol.md §1.9). The gate does both halves: it reads the CONNECT by hand, checks
the credentials (§1.2–1.5) and answers CONNACK 4 itself on a mismatch (the convention of
§1.8); an accepted connection is spliced through to mosquitto byte for byte, and
`inject` slips a QoS 0 PUBLISH between the broker's packets to that device.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tests.peers import mqtt_wire
from tests.peers.enos_auth import check_connect


@dataclass(frozen=True)
class ConnectAttempt:
    """One CONNECT the gate saw, with the verdict and the fields it checked."""

    client_id: str
    username: str | None
    password: str | None
    keepalive_s: int
    clean_session: bool
    protocol_level: int
    accepted: bool
    reason: str
    at_ms: int  # wall clock when the verdict was given


class _Link:
    """An accepted device connection: the writer toward the device and its write lock."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.lock = asyncio.Lock()

    async def send(self, data: bytes) -> None:
        async with self.lock:  # whole packets only: never interleave two writers' bytes
            self.writer.write(data)
            await self.writer.drain()


class ConnectGate:
    """Listens on a free loopback port; `secrets` maps (pk, dk) to device secrets,
    `product_secrets` pk to the product secrets of integration channels."""

    def __init__(
        self,
        broker_port: int,
        secrets: Mapping[tuple[str, str], str],
        on_disconnect: Callable[[tuple[str, str]], None] | None = None,
        product_secrets: Mapping[str, str] | None = None,
    ) -> None:
        self.broker_port = broker_port
        self.secrets = dict(secrets)
        #: Product key -> product secret, for mode-4 integration channels (§1.2).
        self.product_secrets = dict(product_secrets or {})
        self.attempts: list[ConnectAttempt] = []
        #: (topic, payload) of every PUBLISH the broker sent a device, once written to it.
        self.forwarded: list[tuple[str, bytes]] = []
        self.port = 0
        self._on_disconnect = on_disconnect
        self._links: dict[tuple[str, str], _Link] = {}
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._down = False

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._server is not None:
            await self._server.wait_closed()

    def go_down(self) -> None:
        """A cloud outage: drop every connection and close new ones before CONNACK."""
        self._down = True
        for link in list(self._links.values()):
            link.writer.close()

    def come_back(self) -> None:
        """End the outage: connections are checked and spliced through again."""
        self._down = False

    def connected(self, device: tuple[str, str]) -> bool:
        """Whether `device` (pk, dk) has an accepted connection open now."""
        return device in self._links

    async def inject(self, device: tuple[str, str], topic: str, payload: bytes) -> None:
        """Deliver a PUBLISH to `device`'s connection, as EnOS routes commands (§1.9)."""
        link = self._links.get(device)
        if link is None:
            raise ConnectionError(f"{device[0]}/{device[1]} is not connected")
        await link.send(mqtt_wire.build_publish_qos0(topic, payload))

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One device connection: check its CONNECT, then splice it through to mosquitto."""
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        upstream: asyncio.StreamWriter | None = None
        device: tuple[str, str] | None = None
        link = _Link(writer)
        try:
            if self._down:
                return
            packet = await asyncio.wait_for(mqtt_wire.read_packet(reader), 30)
            if not self._admit(packet):
                writer.write(mqtt_wire.build_connack(mqtt_wire.BAD_USERNAME_OR_PASSWORD))
                await writer.drain()
                return
            broker_reader, upstream = await asyncio.open_connection("127.0.0.1", self.broker_port)
            upstream.write(packet.raw)
            await upstream.drain()
            last = self.attempts[-1]
            device_key, _, product_key = (last.username or "").partition("&")
            device = (product_key, device_key)
            self._links[device] = link
            await _splice(reader, upstream, broker_reader, link, self.forwarded.append)
        except (
            asyncio.IncompleteReadError,
            ConnectionError,
            mqtt_wire.MalformedPacket,
            TimeoutError,
        ):
            pass  # the device or the broker went away: the connection simply ends
        finally:
            if device is not None and self._links.get(device) is link:
                del self._links[device]
                if self._on_disconnect is not None:
                    self._on_disconnect(device)
            for stream in (writer, upstream):
                if stream is not None:
                    stream.close()

    def _admit(self, packet: mqtt_wire.Packet) -> bool:
        """Record the CONNECT and decide: MQTT 3.1.1 only (§1.1) and a valid sign."""
        connect = mqtt_wire.parse_connect(packet)
        verdict = check_connect(
            connect.client_id,
            connect.username,
            connect.password,
            self.secrets,
            self.product_secrets,
        )
        accepted, reason = verdict.accepted, verdict.reason
        if accepted and (connect.protocol_name, connect.protocol_level) != ("MQTT", 4):
            accepted, reason = False, f"protocol {connect.protocol_name} {connect.protocol_level}"
        password = None if connect.password is None else connect.password.decode("latin-1")
        self.attempts.append(
            ConnectAttempt(
                connect.client_id,
                connect.username,
                password,
                connect.keepalive_s,
                connect.clean_session,
                connect.protocol_level,
                accepted,
                reason,
                int(time.time() * 1000),
            )
        )
        return accepted


async def _splice(
    device_reader: asyncio.StreamReader,
    broker_writer: asyncio.StreamWriter,
    broker_reader: asyncio.StreamReader,
    link: _Link,
    on_publish: Callable[[tuple[str, bytes]], None],
) -> None:
    """Copy bytes both ways until either side closes; toward the device whole packets only,
    so an injected PUBLISH never lands inside one of the broker's packets."""

    async def device_to_broker() -> None:
        while chunk := await device_reader.read(65536):
            broker_writer.write(chunk)
            await broker_writer.drain()

    async def broker_to_device() -> None:
        while True:
            packet = await mqtt_wire.read_packet(broker_reader)
            await link.send(packet.raw)
            if packet.kind == mqtt_wire.PUBLISH:
                topic, _, payload = mqtt_wire.parse_publish(packet)
                on_publish((topic, payload))

    tasks = [asyncio.create_task(device_to_broker()), asyncio.create_task(broker_to_device())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
