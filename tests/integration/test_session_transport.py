"""The MQTT seam against a real mosquitto broker: correlation, timeouts, loss, refusal."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from gatewayd.enos.session import (
    BrokerUnavailable,
    ConnectRefused,
    Endpoint,
    GatewaySession,
    ReplyTimeout,
)
from tests.integration.mosquitto_fixtures import Mosquitto, mosquitto, start_mosquitto
from tests.support import wait_until

__all__ = ["mosquitto"]


def endpoint(port: int, client_id: str = "gw-test") -> Endpoint:
    return Endpoint("127.0.0.1", port, client_id, "gwDK&gwPK", "pw", keepalive=60)


class Responder:
    """A plain paho client playing the cloud: answers requests with a fixed code."""

    def __init__(self, port: int, code: int = 200, *, answer: bool = True) -> None:
        self.seen: list[tuple[str, dict[str, object]]] = []
        self.code = code
        self.answer = answer
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="cloud")
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.subscribe("/sys/#", qos=1)
        self.client.loop_start()
        wait_until(self.client.is_connected, 10, "responder to connect")

    def _on_message(self, client: mqtt.Client, userdata: object, msg: mqtt.MQTTMessage) -> None:
        if msg.topic.endswith("_reply"):
            return
        body = json.loads(msg.payload)
        self.seen.append((msg.topic, body))
        if self.answer:
            reply = {"id": body["id"], "code": self.code, "data": {}, "message": ""}
            client.publish(msg.topic + "_reply", json.dumps(reply), qos=1)

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


async def test_request_is_correlated_with_its_reply(mosquitto: Mosquitto) -> None:
    """Two concurrent requests each get the reply carrying their own id."""
    responder = await asyncio.to_thread(Responder, mosquitto.port)
    try:
        async with GatewaySession(endpoint(mosquitto.port), reply_timeout=10) as session:
            topic = "/sys/gwPK/gwDK/thing/measurepoint/post/batch"
            first, second = await asyncio.gather(
                session.request(topic, "11", b'{"id":"11","method":"m","params":[]}'),
                session.request(topic, "12", b'{"id":"12","method":"m","params":[]}'),
            )
        assert json.loads(first.payload)["id"] == "11"
        assert json.loads(second.payload)["id"] == "12"
        assert first.topic == topic + "_reply"
        assert sorted(str(body["id"]) for _, body in responder.seen) == ["11", "12"]
    finally:
        responder.close()


async def test_missing_reply_times_out(mosquitto: Mosquitto) -> None:
    """A request nobody answers raises ReplyTimeout, not a hang."""
    responder = await asyncio.to_thread(Responder, mosquitto.port, answer=False)
    try:
        async with GatewaySession(endpoint(mosquitto.port)) as session:
            with pytest.raises(ReplyTimeout):
                await session.request("/sys/gwPK/gwDK/thing/x", "1", b'{"id":"1"}', timeout=0.3)
        assert len(responder.seen) == 1
    finally:
        responder.close()


async def test_broker_loss_fails_pending_requests(mosquitto: Mosquitto) -> None:
    """When the broker dies, a waiting request fails with BrokerUnavailable and `lost` is set."""
    responder = await asyncio.to_thread(Responder, mosquitto.port, answer=False)
    try:
        async with GatewaySession(endpoint(mosquitto.port)) as session:
            pending = asyncio.create_task(
                session.request("/sys/gwPK/gwDK/thing/x", "7", b'{"id":"7"}', timeout=30)
            )
            await asyncio.to_thread(wait_until, lambda: len(responder.seen) == 1, 10, "request")
            mosquitto.stop()
            with pytest.raises(BrokerUnavailable):
                await asyncio.wait_for(pending, 10)
            await asyncio.wait_for(session.lost.wait(), 10)
    finally:
        responder.client.loop_stop()


async def test_inbound_commands_are_delivered(mosquitto: Mosquitto) -> None:
    """A message that is not a reply comes out of `inbound()` with its exact bytes."""
    async with GatewaySession(endpoint(mosquitto.port)) as session:
        topic = "/sys/subPK/subDK/thing/service/measurepoint/set"
        await session.subscribe([topic])
        cloud = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="cloud2")
        cloud.connect("127.0.0.1", mosquitto.port)
        cloud.loop_start()
        try:
            cloud.publish(topic, b'{"id":"9001"}', qos=1).wait_for_publish(10)
            stream = session.inbound()
            message = await asyncio.wait_for(anext(stream), 10)
        finally:
            cloud.loop_stop()
            cloud.disconnect()
    assert (message.topic, message.payload) == (topic, b'{"id":"9001"}')


async def test_refused_connect_raises_connect_refused(tmp_path: Path) -> None:
    """Wrong credentials give ConnectRefused with the broker's return code."""
    password_file = tmp_path / "passwd"
    password_file.write_text("")
    await asyncio.to_thread(
        subprocess.run,
        ["mosquitto_passwd", "-b", str(password_file), "gwDK&gwPK", "right"],
        check=True,
        capture_output=True,
    )
    password_file.chmod(0o600)
    broker = start_mosquitto(tmp_path, password_file=password_file)
    try:
        with pytest.raises(ConnectRefused) as refused:
            async with GatewaySession(endpoint(broker.port)):
                pass
        assert refused.value.rc == 5  # mosquitto: "not authorised"
    finally:
        broker.stop()


async def test_unreachable_broker_raises_broker_unavailable(mosquitto: Mosquitto) -> None:
    """Nothing listening: BrokerUnavailable, not a library exception."""
    port = mosquitto.port
    mosquitto.stop()
    with pytest.raises(BrokerUnavailable):
        async with GatewaySession(endpoint(port)):
            pass
