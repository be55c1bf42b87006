"""The spec-written cloud itself, driven by hand over a real mosquitto (no daemon).

Checks that tests/peers/spec_cloud.py answers the way enos-protocol.md describes, so the
end-to-end test's verdicts on the daemon can be trusted.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from typing import Any

import aiomqtt
import pytest

from tests.integration.mosquitto_fixtures import Mosquitto, start_mosquitto
from tests.peers.enos_auth import sign
from tests.peers.spec_cloud import SpecCloud
from tests.support import async_wait_until

GW = ("gwPK", "gwDK")
SUBS = {("subPK", "subDK1"): "sec1", ("subPK", "subDK2"): "sec2"}
LOGIN_BATCH = "/ext/session/gwPK/gwDK/combine/login/batch"
POST_BATCH = "/sys/gwPK/gwDK/thing/measurepoint/post/batch"


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """One Debian mosquitto for the module."""
    server = start_mosquitto(tmp_path_factory.mktemp("mosquitto"))
    yield server
    if server.process.poll() is None:
        server.stop()


class Gateway:
    """A hand-driven MQTT client playing the gateway: publish, then await the reply."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client

    async def request(self, topic: str, doc: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
        await self.client.subscribe(topic + "_reply", qos=1)
        await self.client.publish(topic, json.dumps(doc).encode(), qos=1)
        async for message in self.client.messages:
            if message.topic.value == topic + "_reply":
                raw = message.payload
                assert isinstance(raw, bytes)
                return raw, json.loads(raw)
        raise AssertionError("the message stream ended")


@pytest.fixture
async def cloud(broker: Mosquitto) -> AsyncIterator[SpecCloud]:
    """The spec cloud for gwPK/gwDK with two sub-devices in its topology."""
    async with SpecCloud(broker.port, GW, "gwSecret", SUBS) as running:
        yield running


@pytest.fixture
async def gateway(broker: Mosquitto) -> AsyncIterator[Gateway]:
    """A raw MQTT client straight to mosquitto (the gate is not under test here)."""
    async with aiomqtt.Client("127.0.0.1", broker.port, identifier="hand-gateway") as client:
        yield Gateway(client)


def login_batch(signs: dict[str, str], request_id: object = "102") -> dict[str, Any]:
    """§3.2's request with the given sub-device signs."""
    return {
        "id": request_id, "version": "1.1", "method": "combine.login.batch",
        "params": {
            "clientId": "login.batch", "timestamp": "1700000000000", "signMethod": "sha256",
            "subDevices": [{"productKey": "subPK", "deviceKey": dk, "sign": s}
                           for dk, s in signs.items()],
        },
    }  # fmt: skip


def good_sign(dk: str) -> str:
    params = {"clientId": "login.batch", "deviceKey": dk, "productKey": "subPK",
              "timestamp": "1700000000000"}  # fmt: skip
    return sign(params, SUBS[("subPK", dk)], "sha256")


def post_batch(request_id: object) -> dict[str, Any]:
    return {
        "id": request_id, "version": "1.0", "method": "thing.measurepoint.post.batch",
        "params": [{"productKey": "subPK", "deviceKey": "subDK1",
                    "measurepoints": {"temp": 21.5}, "time": 1700000000000}],
    }  # fmt: skip


async def test_batch_login_with_one_bad_sign_is_a_partial_success(
    cloud: SpecCloud, gateway: Gateway
) -> None:
    """§3.2 second reply shape: the good device logged in, the bad one failed with 742."""
    _, reply = await gateway.request(
        LOGIN_BATCH, login_batch({"subDK1": good_sign("subDK1"), "subDK2": "00" * 32})
    )
    assert reply["id"] == "102"
    assert reply["code"] == 742
    assert reply["data"]["loginedSubDevices"] == [
        {"assetId": "asubDK1", "deviceKey": "subDK1", "productKey": "subPK"}
    ]
    assert reply["data"]["failedSubDevices"] == [{"deviceKey": "subDK2", "productKey": "subPK"}]
    assert reply["message"] == "subPK&subDK2 has error: Sign check failed;"
    assert cloud.online == {("subPK", "subDK1")}


async def test_spec_batch_login_example_verifies(cloud: SpecCloud, gateway: Gateway) -> None:
    """§3.2's example request (signs given in the spec) logs both sub-devices in."""
    _, reply = await gateway.request(
        LOGIN_BATCH,
        login_batch({
            "subDK1": "2429e23575656d5e13dc2f3243f2d5d684bb4a3509e4dd8fbc5fab3e71df4e59",
            "subDK2": "1bdc775ed51f98a4f6140530b60ae9ebe9b5d67e230bb1f80b4ea0370e22495b",
        }),
    )  # fmt: skip
    assert (reply["code"], reply["data"]["failedSubDevices"]) == (200, [])
    assert cloud.online == set(SUBS)
    assert cloud.records.problems == []


async def test_post_batch_needs_a_login_and_echoes_the_id_type(
    cloud: SpecCloud, gateway: Gateway
) -> None:
    """1212 before login (§3.5.2); after it 200, and an integer id comes back an integer."""
    _, refused = await gateway.request(POST_BATCH, post_batch("7"))
    assert (refused["id"], refused["code"]) == ("7", 1212)
    await gateway.request(LOGIN_BATCH, login_batch({"subDK1": good_sign("subDK1")}))
    raw, stored = await gateway.request(POST_BATCH, post_batch(8))
    assert (stored["id"], stored["code"]) == (8, 200)
    assert raw.startswith(b'{"id": 8,')
    assert [(p.device_key, p.point, p.value, p.time) for p in cloud.records.points] == [
        ("subDK1", "temp", 21.5, 1700000000000)
    ]
    # The integer id is a spec problem of the request (§2.1 ids are strings), noted as such.
    assert any("id 8" in p for p in cloud.records.problems)


async def test_method_mismatch_and_injected_fault_codes(cloud: SpecCloud, gateway: Gateway) -> None:
    """1260 for a method that does not match its topic; `fail` answers the asked code."""
    _, mismatch = await gateway.request(
        POST_BATCH, {**post_batch("9"), "method": "thing.measurepoint.resume.batch"}
    )
    assert mismatch["code"] == 1260
    await gateway.request(LOGIN_BATCH, login_batch({"subDK1": good_sign("subDK1")}))
    cloud.fail("thing.measurepoint.post.batch", 500)
    _, failed = await gateway.request(POST_BATCH, post_batch("10"))
    _, passed = await gateway.request(POST_BATCH, post_batch("11"))
    assert (failed["code"], passed["code"]) == (500, 200)
    await async_wait_until(lambda: len(cloud.records.points) == 1, 10, "one stored value")
