"""Cross-check: the official EnOS Python SDK (enos-mqtt-sdk-python 0.1.1) against the emulator.

The SDK is a real, independent client: it builds its own clientId/password, request
envelopes and replies. Everything it sends that real EnOS accepts must be accepted here
exactly as when gatewayd sends it, and the records must come out the same.

Compatibility notes (checked for this test):
- The SDK constructs `paho.mqtt.client.Client(client_id=..., clean_session=..., protocol=...)`
  without `callback_api_version`; paho 2.2 still defaults that to VERSION1 (with a
  DeprecationWarning), and the SDK's VERSION1 callbacks work unchanged. No shim is needed.
- Its synchronous `connect()` can miss its own CONNACK wake-up (the condition is notified
  before it is waited on) and then waits its full 10 s: the fixture connects with the
  callback form instead.
- The SDK is synchronous and thread-based (paho `loop_start` + a thread pool for handlers);
  its blocking calls run in worker threads (`asyncio.to_thread`) so the emulator keeps
  running on the test's event loop.

Known SDK bugs of enos-protocol.md §7.13 met here, and what the emulator does (= what real
EnOS accepts):
- Batch flags left unset are serialised as `""` (not booleans): treated as false.
- Its CONNECT timestamp is `str(time.time()*1000)`, a decimal such as `1700000000000.123`:
  the timestamp is opaque, never validated, so the CONNECT is accepted.
- `sign_method` defaults to `hmacsha256` and it signs lowercase hex: accepted (alias of
  sha256, case-insensitive compare).
- Its event method is `"thing.event.%s.post" + eventId` (literally `%s`): inconsistent
  with the topic, so EnOS answers 1260 "Methods not consistent" -- asserted below.
- Its batch-login response parser never reads the lists: we check the emulator's state
  instead of the SDK's parsed response.
"""

from __future__ import annotations

import asyncio
import threading
import warnings
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gatewayd.sim.emulator import EnosEmulator
from tests.integration.emulator_fixtures import (
    GW_DK,
    GW_PK,
    GW_SECRET,
    METERS,
    SUB_PK,
)
from tests.support import async_wait_until

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from enos.core.MqttClient import MqttClient
    from enos.message.downstream.tsl.MeasurepointSetCommand import MeasurepointSetCommand
    from enos.message.downstream.tsl.MeasurepointSetReply import MeasurepointSetReply
    from enos.message.downstream.tsl.ServiceInvocationCommand import ServiceInvocationCommand
    from enos.message.downstream.tsl.ServiceInvocationReply import ServiceInvocationReply
    from enos.message.upstream.resume.MeasurepointResumeBatchRequest import (
        MeasurepointResumeBatchRequest,
    )
    from enos.message.upstream.resume.MeasurepointResumeRequest import MeasurepointResumeRequest
    from enos.message.upstream.status.SubDeviceLoginBatchRequest import (
        SubDeviceLoginBatchRequest,
    )
    from enos.message.upstream.status.SubDeviceLoginRequest import SubDeviceLoginRequest
    from enos.message.upstream.status.SubDeviceLogoutRequest import SubDeviceLogoutRequest
    from enos.message.upstream.tsl.EventPostRequest import EventPostRequest
    from enos.message.upstream.tsl.MeasurepointPostBatchRequest import (
        MeasurepointPostBatchRequest,
    )
    from enos.message.upstream.tsl.MeasurepointPostRequest import MeasurepointPostRequest

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

T0 = 1_700_000_000_000


class _ConnectCallback:
    """The SDK's connect callback interface (on_connect/on_disconnect/on_connect_failed)."""

    def __init__(self, connected: threading.Event) -> None:
        self.connected = connected

    def on_connect(self) -> None:
        self.connected.set()

    def on_disconnect(self) -> None:
        """Nothing to do: the tests close the client themselves."""

    def on_connect_failed(self) -> None:
        """Nothing to do: `connected` stays unset and the fixture fails."""


@pytest.fixture
async def sdk_gateway(enos_emulator: EnosEmulator) -> AsyncIterator[Any]:
    """The SDK connected as gateway gwPK/gwDK, answering measurepoint set and services."""
    client = MqttClient(f"tcp://{enos_emulator.host}:{enos_emulator.port}", GW_PK, GW_DK, GW_SECRET)
    client.get_profile().set_auto_reconnect(False)
    client.get_profile().set_operation_timeout(10)
    client.received = []

    def on_set(message: Any, path: list[str]) -> Any:
        client.received.append(("set", list(path), message.get_params()))
        return MeasurepointSetReply.builder().set_code(200).set_message("ok").build()

    def on_service(message: Any, path: list[str]) -> Any:
        client.received.append(("service", list(path), message.get_params()))
        return ServiceInvocationReply.builder().set_code(200).add_output_data("result", 42).build()

    client.register_arrived_message_handler(MeasurepointSetCommand.get_class(), on_set)
    client.register_arrived_message_handler(ServiceInvocationCommand.get_class(), on_service)
    # The SDK's synchronous connect() can miss its own CONNACK notification (it notifies a
    # condition before waiting on it) and then sits out its 10 s timeout: connect with a
    # callback instead, which the SDK calls once its state is CONNECTED.
    connected = threading.Event()
    await asyncio.to_thread(client.connect, _ConnectCallback(connected))
    assert await asyncio.to_thread(connected.wait, 10), "the SDK did not connect"
    try:
        await async_wait_until(lambda: enos_emulator.is_connected(GW_PK, GW_DK))
        yield client
    finally:
        await asyncio.to_thread(client.close)


def _login(meter: str) -> Any:
    return SubDeviceLoginRequest.builder().set_sub_device_info(SUB_PK, meter, METERS[meter]).build()


async def test_sdk_connect_credentials_are_accepted(
    enos_emulator: EnosEmulator, sdk_gateway: Any
) -> None:
    """The SDK's own CONNECT (hmacsha256, decimal timestamp, lowercase hex) is accepted."""
    assert sdk_gateway.is_connected()
    client_id = sdk_gateway.get_profile().get_client_id()
    assert client_id.startswith(f"{GW_DK}|securemode=2,signmethod=hmacsha256,timestamp=")
    assert enos_emulator.stats.connects == 1
    assert enos_emulator.stats.refused_connects == 0


async def test_sdk_login_post_resume_and_batches(
    enos_emulator: EnosEmulator, sdk_gateway: Any
) -> None:
    """Login, single post/resume and post/resume batches from the SDK are all accepted."""
    publish = sdk_gateway.publish
    login = await asyncio.to_thread(publish, _login("meter1"))
    assert login.get_code() == 200
    assert enos_emulator.online_sub_devices(GW_PK, GW_DK) == [(SUB_PK, "meter1")]

    post = (
        MeasurepointPostRequest.builder()
        .set_product_key(SUB_PK)
        .set_device_key("meter1")
        .add_measurepoint("power", 1.5)
        .set_timestamp(T0)
        .build()
    )
    assert (await asyncio.to_thread(publish, post)).get_code() == 200

    resume = (
        MeasurepointResumeRequest.builder()
        .set_product_key(SUB_PK)
        .set_device_key("meter1")
        .add_measure_point_with_quality("voltage", 229.5, 1)
        .set_timestamp(T0 - 60_000)
        .build()
    )
    assert (await asyncio.to_thread(publish, resume)).get_code() == 200

    batch_login = (
        SubDeviceLoginBatchRequest.builder()
        .add_sub_device_info(SUB_PK, "meter2", METERS["meter2"])
        .build()
    )
    assert (await asyncio.to_thread(publish, batch_login)).get_code() == 200
    assert (SUB_PK, "meter2") in enos_emulator.online_sub_devices(GW_PK, GW_DK)

    def record(builder: Any, meter: str, points: dict[str, Any], at: int) -> Any:
        request = builder.builder().set_product_key(SUB_PK).set_device_key(meter)
        if builder is MeasurepointPostRequest:
            request = request.add_measurepoints(points)
        else:
            request = request.add_measure_points(points)
        return request.set_timestamp(at).build()

    # Flags left unset: the SDK sends "" for both (§7.13) -> false.
    post_batch = (
        MeasurepointPostBatchRequest.builder()
        .add_request(record(MeasurepointPostRequest, "meter1", {"power": 2.5}, T0 + 1000))
        .add_request(record(MeasurepointPostRequest, "meter2", {"state": 1}, T0 + 1000))
        .build()
    )
    assert (await asyncio.to_thread(publish, post_batch)).get_code() == 200

    offline_batch = (
        MeasurepointResumeBatchRequest.builder()
        .add_request(record(MeasurepointResumeRequest, "meter3", {"energy": 7}, T0 - 1000))
        .build()
    )
    assert (await asyncio.to_thread(publish, offline_batch)).get_code() == 1212
    offline_batch = (
        MeasurepointResumeBatchRequest.builder()
        .add_request(record(MeasurepointResumeRequest, "meter3", {"energy": 7}, T0 - 1000))
        .set_allow_offline_sub_device(True)
        .set_skip_invalid_measurepoints(True)
        .build()
    )
    assert (await asyncio.to_thread(publish, offline_batch)).get_code() == 200

    stored = [
        (r.channel, r.device_key, r.point, r.value, r.quality, r.time)
        for r in enos_emulator.records.points
    ]
    assert stored == [
        ("post", "meter1", "power", 1.5, None, T0),
        ("resume", "meter1", "voltage", 229.5, 1, T0 - 60_000),
        ("post", "meter1", "power", 2.5, None, T0 + 1000),
        ("post", "meter2", "state", 1, None, T0 + 1000),
        ("resume", "meter3", "energy", 7, None, T0 - 1000),
    ]

    logout = SubDeviceLogoutRequest.builder().set_sub_product_key(SUB_PK)
    logout = logout.set_sub_device_key("meter1").build()
    assert (await asyncio.to_thread(publish, logout)).get_code() == 200
    assert enos_emulator.online_sub_devices(GW_PK, GW_DK) == [(SUB_PK, "meter2")]


async def test_sdk_receives_and_answers_commands(
    enos_emulator: EnosEmulator, sdk_gateway: Any
) -> None:
    """Commands reach the SDK without any SUBSCRIBE; its replies complete send_command."""
    assert (await asyncio.to_thread(sdk_gateway.publish, _login("meter1"))).get_code() == 200
    reply = await enos_emulator.send_command(
        SUB_PK, "meter1", "thing.service.measurepoint.set", {"setpoint": 21.5}, timeout=10
    )
    assert reply["code"] == 200
    assert reply["message"] == "ok"
    service = await enos_emulator.send_command(
        SUB_PK, "meter1", "thing.service.reset", {"mode": 2}, timeout=10
    )
    assert service["code"] == 200
    assert service["data"] == {"result": 42}
    assert sdk_gateway.received == [
        ("set", [SUB_PK, "meter1"], {"setpoint": 21.5}),
        ("service", [SUB_PK, "meter1", "reset"], {"mode": 2}),
    ]


async def test_sdk_event_method_bug_is_answered_1260(
    enos_emulator: EnosEmulator, sdk_gateway: Any
) -> None:
    """§7.13: the SDK sends method "thing.event.%s.post<id>"; EnOS answers 1260, stores nothing."""
    event = (
        EventPostRequest.builder()
        .set_event_identifier("overVoltage")
        .add_value("voltage", 260.0)
        .set_timestamp(T0)
        .build()
    )
    response = await asyncio.to_thread(sdk_gateway.publish, event)
    assert response.get_code() == 1260
    assert enos_emulator.records.events == []
