"""The EnOS emulator as a pytest fixture, plus a small real MQTT device client for tests.

Reuse from any integration test module::

    from tests.integration.emulator_fixtures import enos_emulator, enos_emulator_config

    @pytest.fixture
    def enos_emulator_config() -> EmulatorConfig:   # optional: override the default cloud
        return EmulatorConfig.from_gateway_config(my_config)

    async def test_x(enos_emulator: EnosEmulator) -> None:
        ...  # enos_emulator.host / .port are where gatewayd must connect

`enos_emulator_factory` starts further emulators (other configs, clocks) inside one test;
all are stopped at teardown.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import aiomqtt
import pytest

from gatewayd.enos import messages
from gatewayd.enos.messages import Request, SubDeviceCredentials
from gatewayd.enos.sign import mqtt_credentials
from gatewayd.sim.emulator import EmulatorConfig, EnosEmulator
from tests.support import free_port

GW_PK, GW_DK, GW_SECRET = "gwPK", "gwDK", "gwSecret"
SUB_PK = "subPK"
SUB_PRODUCT_SECRET = "subProductSecret"
#: Sub-devices in the gateway's topology, with their device secrets.
METERS = {"meter1": "m1Secret", "meter2": "m2Secret", "meter3": "m3Secret"}
TIMESTAMP = "1700000000000"

_DEFAULT_CONFIG: dict[str, Any] = {
    "models": {
        "gateway": {"measurepoints": {"gw_cpu": {"type": "double"}}},
        "meter": {
            "measurepoints": {
                "voltage": {"type": "double", "quality": True},
                "power": {"type": "double"},
                "energy": {"type": "long"},
                "state": {"type": "enum", "values": [0, 1, 2]},
                "name": {"type": "string"},
                "alarm": {"type": "bool"},
                "setpoint": {"type": "double"},
            },
            "events": {"overVoltage": {"params": ["voltage", "limit"]}},
            "attributes": ["location", "serial"],
        },
    },
    "products": [
        {"product_key": GW_PK, "kind": "gateway", "model": "gateway"},
        {
            "product_key": SUB_PK,
            "kind": "sub_device",
            "model": "meter",
            "product_secret": SUB_PRODUCT_SECRET,
            "dynamic_activation": True,
        },
        {
            "product_key": "dynPK",
            "kind": "gateway",
            "product_secret": "dynProductSecret",
            "dynamic_activation": True,
        },
        {"product_key": "sslPK", "kind": "direct", "ssl_only": True},
        {"product_key": "sslSubPK", "kind": "sub_device", "ssl_only": True},
        {"product_key": "directPK", "kind": "direct", "product_secret": "directProductSecret"},
    ],
    "devices": [
        {"product_key": GW_PK, "device_key": GW_DK, "device_secret": GW_SECRET},
        *(
            {
                "product_key": SUB_PK,
                "device_key": dk,
                "device_secret": secret,
                "gateway": f"{GW_PK}/{GW_DK}",
            }
            for dk, secret in METERS.items()
        ),
        {"product_key": SUB_PK, "device_key": "stray", "device_secret": "straySecret"},
        {
            "product_key": SUB_PK,
            "device_key": "off",
            "device_secret": "offSecret",
            "enabled": False,
            "gateway": f"{GW_PK}/{GW_DK}",
        },
        {"product_key": SUB_PK, "device_key": "fresh", "gateway": f"{GW_PK}/{GW_DK}"},
        {"product_key": "dynPK", "device_key": "newGw"},
        {"product_key": "sslPK", "device_key": "sslDev", "device_secret": "sslSecret"},
        {
            "product_key": "sslSubPK",
            "device_key": "sslSub",
            "device_secret": "sslSubSecret",
            "gateway": f"{GW_PK}/{GW_DK}",
        },
        {"product_key": "directPK", "device_key": "dev1", "device_secret": "dev1Secret"},
        {
            "product_key": "directPK",
            "device_key": "disabledDev",
            "device_secret": "disSecret",
            "enabled": False,
        },
    ],
}


def default_emulator_config(**options: Any) -> EmulatorConfig:
    """A cloud with gateway gwPK/gwDK, meters 1-3 in its topology and odd devices for errors."""
    data = json.loads(json.dumps(_DEFAULT_CONFIG))
    data["options"] = options
    return EmulatorConfig.model_validate(data)


@pytest.fixture
def enos_emulator_config() -> EmulatorConfig:
    """The cloud `enos_emulator` serves; override this fixture to serve another one."""
    return default_emulator_config()


EmulatorFactory = Callable[..., Awaitable[EnosEmulator]]


@pytest.fixture
async def enos_emulator_factory() -> AsyncIterator[EmulatorFactory]:
    """`await factory(config, **EnosEmulator kwargs)` -> a started emulator on a free port."""
    started: list[EnosEmulator] = []

    async def start(config: EmulatorConfig, **kwargs: Any) -> EnosEmulator:
        emulator = EnosEmulator(config, host="127.0.0.1", port=free_port(), **kwargs)
        await emulator.start()
        started.append(emulator)
        return emulator

    try:
        yield start
    finally:
        for emulator in reversed(started):
            await emulator.stop()


@pytest.fixture
async def enos_emulator(
    enos_emulator_factory: EmulatorFactory, enos_emulator_config: EmulatorConfig
) -> EnosEmulator:
    """A started emulator serving `enos_emulator_config` on 127.0.0.1 and a free port."""
    return await enos_emulator_factory(enos_emulator_config)


# --- a device on a real MQTT connection -------------------------------------------------------


class Endpoint(Protocol):
    """Where to connect: an `EnosEmulator`, or any broker address (`BrokerAddress`)."""

    @property
    def host(self) -> str: ...

    @property
    def port(self) -> int: ...


@dataclass(frozen=True)
class BrokerAddress:
    """host/port of an emulator running elsewhere (e.g. `gatewayd emulate` in a subprocess)."""

    host: str
    port: int


class DeviceClient:
    """A connected device: publish requests, await replies, read downstream messages."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.inbox: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._waiting: dict[tuple[str, str], asyncio.Future[dict[str, Any]]] = {}
        self._subscribed: set[str] = set()
        self._ids = iter(range(1, 1_000_000))

    async def pump(self) -> None:
        """Route incoming messages: awaited replies to their requests, the rest to `inbox`."""
        async for message in self.client.messages:
            topic = str(message.topic)
            raw = bytes(message.payload) if isinstance(message.payload, bytes | bytearray) else b""
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw
            key = (topic, str(body.get("id"))) if isinstance(body, dict) else None
            future = self._waiting.pop(key, None) if key else None
            if future is not None and not future.done():
                future.set_result(body)
            else:
                self.inbox.put_nowait((topic, body))

    def next_id(self) -> str:
        return str(next(self._ids))

    async def subscribe(self, topic: str, qos: int = 1) -> None:
        if topic not in self._subscribed:
            await self.client.subscribe(topic, qos)
            self._subscribed.add(topic)

    async def publish(
        self, topic: str, payload: bytes | str | dict[str, Any], qos: int = 1
    ) -> None:
        data = json.dumps(payload).encode() if isinstance(payload, dict) else payload
        await self.client.publish(topic, data, qos=qos)

    def expect_reply(self, reply_topic: str, msg_id: str) -> asyncio.Future[dict[str, Any]]:
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[(reply_topic, msg_id)] = future
        return future

    async def request(
        self,
        topic: str,
        method: str | None,
        params: Any,
        *,
        subscribe: bool = True,
        timeout: float = 10.0,
        msg_id: str | None = None,
        **extra: Any,
    ) -> dict[str, Any]:
        """Publish a request envelope on `topic` and return the reply from `topic_reply`."""
        msg_id = msg_id or self.next_id()
        body: dict[str, Any] = {"id": msg_id, "version": "1.0", "method": method, **extra}
        body["params"] = params
        return await self.request_raw(
            topic, json.dumps(body).encode(), msg_id, subscribe=subscribe, timeout=timeout
        )

    async def request_raw(
        self,
        topic: str,
        payload: bytes,
        msg_id: str,
        *,
        subscribe: bool = True,
        timeout: float = 10.0,
    ) -> dict[str, Any]:
        """Publish exact bytes; wait for the reply with id `msg_id` ("" for unreadable ones)."""
        reply_topic = topic + "_reply"
        if subscribe:
            await self.subscribe(reply_topic)
        future = self.expect_reply(reply_topic, msg_id)
        await self.publish(topic, payload)
        return await asyncio.wait_for(future, timeout)

    async def send(
        self, request: Request, *, subscribe: bool = True, timeout: float = 10.0
    ) -> dict[str, Any]:
        """Publish a codec-built `Request` and return its reply."""
        return await self.request_raw(
            request.topic, request.payload, request.id, subscribe=subscribe, timeout=timeout
        )

    async def login(self, device_key: str, secret: str | None = None) -> dict[str, Any]:
        """`combine.login` of sub-device subPK/`device_key` (default secret from METERS)."""
        creds = SubDeviceCredentials(SUB_PK, device_key, secret or METERS[device_key])
        request = messages.combine_login(
            GW_PK, GW_DK, id=self.next_id(), device=creds, timestamp=TIMESTAMP
        )
        return await self.send(request)

    async def next_message(self, timeout: float = 10.0) -> tuple[str, Any]:
        """The next downstream message that was not an awaited reply."""
        return await asyncio.wait_for(self.inbox.get(), timeout)


@contextlib.asynccontextmanager
async def connect_device(
    emulator: Endpoint,
    product_key: str,
    device_key: str,
    secret: str,
    *,
    secure_mode: int = 2,
    method: str = "sha256",
    client_id: str | None = None,
    uppercase: bool | None = None,
) -> AsyncIterator[DeviceClient]:
    """Connect as a device with EnOS credentials; the CONNECT must be accepted."""
    creds = mqtt_credentials(
        product_key,
        device_key,
        secret,
        timestamp=TIMESTAMP,
        secure_mode=secure_mode,
        method=method,
        client_id=client_id,
        uppercase=uppercase,
    )
    async with aiomqtt.Client(
        emulator.host,
        emulator.port,
        identifier=creds.client_id,
        username=creds.username,
        password=creds.password,
        clean_session=True,
        protocol=aiomqtt.ProtocolVersion.V311,
        timeout=10,
    ) as client:
        device = DeviceClient(client)
        pump = asyncio.create_task(device.pump())
        try:
            yield device
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await pump


def connect_gateway(emulator: Endpoint) -> contextlib.AbstractAsyncContextManager[DeviceClient]:
    """Connect as the default gateway gwPK/gwDK."""
    return connect_device(emulator, GW_PK, GW_DK, GW_SECRET)


# --- raw CONNECT: the exact CONNACK return code ------------------------------------------------


def _mqtt_string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!H", len(data)) + data


def _remaining_length(length: int) -> bytes:
    out = bytearray()
    while True:
        byte, length = length % 128, length // 128
        out.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(out)


async def connack_code(
    emulator: Endpoint, client_id: str, username: str | None, password: str | None
) -> int:
    """Send one MQTT 3.1.1 CONNECT and return the CONNACK return code (0 = accepted)."""
    flags = 0x02  # clean session
    payload = _mqtt_string(client_id)
    if username is not None:
        flags |= 0x80
        payload += _mqtt_string(username)
    if password is not None:
        flags |= 0x40
        payload += _mqtt_string(password)
    variable = _mqtt_string("MQTT") + bytes([4, flags]) + struct.pack("!H", 60)
    body = variable + payload
    reader, writer = await asyncio.open_connection(emulator.host, emulator.port)
    try:
        writer.write(b"\x10" + _remaining_length(len(body)) + body)
        await writer.drain()
        connack = await asyncio.wait_for(reader.readexactly(4), 10)
        assert connack[:2] == b"\x20\x02", connack
        return connack[3]
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def connect_code(
    emulator: Endpoint,
    product_key: str,
    device_key: str,
    secret: str,
    *,
    secure_mode: int = 2,
    method: str = "sha256",
    uppercase: bool | None = None,
) -> int:
    """The CONNACK code for a CONNECT with correctly built EnOS credentials."""
    creds = mqtt_credentials(
        product_key,
        device_key,
        secret,
        timestamp=TIMESTAMP,
        secure_mode=secure_mode,
        method=method,
        uppercase=uppercase,
    )
    return await connack_code(emulator, creds.client_id, creds.username, creds.password)
