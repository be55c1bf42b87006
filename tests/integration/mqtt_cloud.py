"""A cloud written from the spec, for gatewayd on a real mosquitto (no gatewayd.enos code).

`SpecCloud` is a paho client speaking raw JSON per enos-protocol.md: it answers the
gateway's requests (§2.2 replies; `combine.login.batch` logs every listed sub-device in,
§3.2; everything else 200), sends commands (§3.7) with ids of either JSON type, and keeps
every reply the gateway sends to them as raw bytes.

`GatewayLink` is a TCP proxy between gatewayd and the broker whose `cut()` drops the
gateway's connection (and refuses new ones until `restore()`) while the cloud stays
connected: an uplink outage seen from both sides.

mosquitto delivers only to subscribers, while EnOS routes a device's command topics to it
without a SUBSCRIBE (§1.9); `command_subscriptions()` makes each gateway session
subscribe them, the one thing the tests change in the product's behaviour.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import threading
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import yaml

from gatewayd.app import Daemon
from gatewayd.commands import command_handler_factory
from gatewayd.config.loader import load_config
from gatewayd.config.models import Table
from gatewayd.enos.reconnect import ConnectThrottle, ReconnectPolicy
from gatewayd.enos.session import GatewaySession
from gatewayd.sim.device import DeviceSimulator, SimulatedUnit
from gatewayd.sim.device_motion import Motion
from gatewayd.systemd import Notifier
from gatewayd.uplink.uplink import Uplink
from tests.integration.commands_site import PK, device_key, model, write_site
from tests.support import async_wait_until, free_port, wait_until

#: The command topics EnOS would route to the gateway without a SUBSCRIBE.
COMMAND_TOPICS = ("/sys/+/+/thing/service/#", "/ext/session/+/+/thing/activate/info")
SET = "thing.service.measurepoint.set"
#: mosquitto's default per-client queue (1000) would drop a 5000-command burst.
BROKER_OPTIONS = ("max_queued_messages 0", "max_inflight_messages 20")


def set_topic(unit: int) -> str:
    """The measurepoint.set topic of sub-device `unit` (§3.7)."""
    return f"/sys/{PK}/{device_key(unit)}/thing/service/measurepoint/set"


@contextlib.contextmanager
def command_subscriptions() -> Iterator[None]:
    """Every gateway session subscribes `COMMAND_TOPICS` once connected (see module doc)."""
    original = GatewaySession.__aenter__

    async def entered(self: GatewaySession) -> GatewaySession:
        session = await original(self)
        await session.subscribe(COMMAND_TOPICS)
        return session

    GatewaySession.__aenter__ = entered  # type: ignore[method-assign,assignment]
    try:
        yield
    finally:
        GatewaySession.__aenter__ = original  # type: ignore[method-assign,assignment]


@dataclass
class Reply:
    """One reply the gateway published: its topic and exact bytes."""

    topic: str
    raw: bytes

    @property
    def body(self) -> dict[str, Any]:
        """The decoded JSON."""
        decoded: dict[str, Any] = json.loads(self.raw)
        return decoded


class SpecCloud:
    """The cloud side: answers requests, sends commands, records replies (thread-safe)."""

    def __init__(self, port: int) -> None:
        self._lock = threading.Lock()
        self._replies: list[Reply] = []
        self.requests: defaultdict[str, int] = defaultdict(int)
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="spec-cloud")
        self.client.max_queued_messages_set(0)
        self.client.max_inflight_messages_set(100)
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        wait_until(self.client.is_connected, 10, "the cloud to connect")

    def _on_connect(self, client: mqtt.Client, *_: Any) -> None:
        client.subscribe([("/sys/#", 1), ("/ext/session/#", 1)])

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        topic = msg.topic
        if "/thing/service/" in topic or "/thing/activate/info" in topic:
            if topic.endswith("_reply"):  # the gateway answering one of our commands
                with self._lock:
                    self._replies.append(Reply(topic, bytes(msg.payload)))
            return  # our own command, echoed back by the broker
        if topic.endswith("_reply"):
            return
        request = json.loads(msg.payload)  # a request from the gateway (§2.1)
        method = request.get("method", "")
        with self._lock:
            self.requests[method] += 1
        data: Any = {}
        if method == "combine.login.batch":
            logged = [
                {"productKey": d["productKey"], "deviceKey": d["deviceKey"], "assetId": "a"}
                for d in request["params"]["subDevices"]
            ]
            data = {"loginedSubDevices": logged, "failedSubDevices": []}
        reply = {"id": request["id"], "code": 200, "message": "", "data": data}
        client.publish(topic + "_reply", json.dumps(reply), qos=1)

    def send(self, topic: str, msg_id: str | int, params: Any, method: str = SET) -> None:
        """Publish a command (§2.1) with `msg_id` exactly as given (string or integer)."""
        body = {"id": msg_id, "version": "1.0", "method": method, "params": params}
        self.client.publish(topic, json.dumps(body), qos=1)

    def replies(self) -> list[Reply]:
        """Every command reply so far, in arrival order."""
        with self._lock:
            return list(self._replies)

    def reply_count(self) -> int:
        """How many command replies arrived."""
        with self._lock:
            return len(self._replies)

    def close(self) -> None:
        """Disconnect and stop the network thread."""
        self.client.disconnect()
        self.client.loop_stop()


def typed_id(raw: bytes) -> str | int:
    """The reply's id read from the exact bytes: a JSON string or a JSON integer.

    Read byte for byte, not through the JSON value alone: `"id":5` and `"id":"5"` differ.
    """
    head = raw.split(b'"id":', 1)[1]
    if head.startswith(b'"'):
        text: str = json.loads(head[: head.index(b'"', 1) + 1])
        return text
    digits = head[: len(head) - len(head.lstrip(b"-0123456789"))]
    return int(digits)


class GatewayLink:
    """A TCP proxy gatewayd → broker that can cut the gateway off (outage) and restore it.

    `latency` delays what the broker sends to the gateway (commands, PUBACKs): a far
    broker, whose acknowledgements arrive late.
    """

    def __init__(self, broker_port: int, *, latency: float = 0.0) -> None:
        self.broker_port = broker_port
        self.latency = latency
        self.port = free_port()
        self.up = True
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> None:
        """Listen on `port`."""
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)

    async def stop(self) -> None:
        """Close everything."""
        self.cut()
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    def cut(self) -> None:
        """Drop every connection through the link; refuse new ones until `restore`."""
        self.up = False
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()

    def restore(self) -> None:
        """Let the gateway connect again."""
        self.up = True

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.broker_port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))
        pumps = [
            asyncio.create_task(self._pump(reader, up_writer)),
            asyncio.create_task(self._pump(up_reader, writer, self.latency)),
        ]
        await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        for task in pumps:
            task.cancel()
        for end in (writer, up_writer):
            end.transport.abort()
            self._writers.discard(end)

    @staticmethod
    async def _pump(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, latency: float = 0.0
    ) -> None:
        loop = asyncio.get_running_loop()
        in_transit: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

        async def deliver() -> None:
            while True:
                due, data = await in_transit.get()
                if due > loop.time():
                    await asyncio.sleep(due - loop.time())  # the wire's latency: timing
                writer.write(data)
                await writer.drain()

        delivering = asyncio.create_task(deliver())
        try:
            with contextlib.suppress(OSError, ConnectionError):
                while data := await reader.read(65536):
                    in_transit.put_nowait((loop.time() + latency, data))
                    if delivering.done():
                        return
        finally:
            delivering.cancel()


class WriteLog(SimulatedUnit):
    """A simulated unit that remembers every value written to it, in order."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.writes: list[tuple[Table, int, tuple[int, ...]]] = []

    def wire_write(self, table: Table, address: int, values: list[int]) -> None:
        """Record, then write."""
        self.writes.append((table, address, tuple(values)))
        super().wire_write(table, address, values)

    def written(self, address: int, value: int) -> int:
        """How often holding register `address` was written with exactly `value`."""
        return self.writes.count((Table.HOLDING, address, (value,)))


@dataclass
class MqttSite:
    """A running site: devices, the link, gatewayd, and the cloud on mosquitto."""

    sim: DeviceSimulator
    units: dict[int, WriteLog]
    link: GatewayLink
    daemon: Daemon
    cloud: SpecCloud

    def requests(self, unit: int, function_code: int) -> int:
        """Requests with `function_code` the simulated `unit` answered."""
        return self.sim.stats(unit).requests[function_code]

    @property
    def uplink(self) -> Uplink:
        """The daemon's uplink (it exists once the site runs)."""
        uplink = self.daemon.uplink
        assert uplink is not None
        return uplink

    def logged_in(self) -> bool:
        """Every sub-device is logged in on the current session."""
        uplink = self.daemon.uplink
        return uplink is not None and all(d.online for d in uplink.registry)

    @property
    def connects(self) -> int:
        """CONNECTs the uplink made so far."""
        return self.uplink.status.connects


@contextlib.asynccontextmanager
async def mqtt_site(
    tmp: Path,
    broker_port: int,
    *,
    turnaround: float = 0.0,
    latency: float = 0.0,
    broker_timeout: str | None = None,
    **device_options: Any,
) -> AsyncIterator[MqttSite]:
    """Simulator (two `COMMAND_MODEL` units) → gatewayd → link → mosquitto ← the cloud.

    `turnaround` is the devices' think time per request (a slow device), `latency` the
    link's towards the gateway, `broker_timeout` the gateway's `broker.connect_timeout`
    (also the MQTT client's wait for an acknowledgement). Yields once both sub-devices
    are logged in (the cloud answered the batch login).
    """
    motions = dict.fromkeys((p.measurepoint for p in model().points), Motion.FIXED)
    units = {u: WriteLog(u, model(), motions=motions) for u in (1, 2)}
    async with DeviceSimulator(list(units.values())) as sim:
        for unit in units:
            sim.faults(unit).turnaround = turnaround
        link = GatewayLink(broker_port, latency=latency)
        await link.start()
        cloud = await asyncio.to_thread(SpecCloud, broker_port)
        path = write_site(tmp, sim.port, link.port, **device_options)
        if broker_timeout is not None:
            data = yaml.safe_load(path.read_text())
            data["gateway"]["broker"]["connect_timeout"] = broker_timeout
            path.write_text(yaml.safe_dump(data, sort_keys=False))
        config = load_config(path)
        # Reconnect within a second, many times if need be: the link is private.
        policy = ReconnectPolicy(
            random.Random(1), base_s=0.2, throttle=ConnectThrottle(max_attempts=1000)
        )
        daemon = Daemon(
            path,
            config,
            notifier=Notifier(environ={}),
            commands=command_handler_factory,
            reconnect=policy,
        )
        task = asyncio.create_task(daemon.run())
        try:
            await asyncio.wait_for(daemon.ready.wait(), 10)
            site = MqttSite(sim, units, link, daemon, cloud)
            await async_wait_until(site.logged_in, 20, "both sub-devices logged in")
            yield site
        finally:
            daemon.request_stop()
            try:
                assert await asyncio.wait_for(task, 30) == 0
            finally:
                cloud.close()
                await link.stop()
