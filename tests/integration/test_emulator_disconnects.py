"""The emulator ends a connection although its client keeps sending (amqtt on Python 3.11).

amqtt cancels a connection's reader task once to stop it, and its reader waits for each
packet with `asyncio.wait_for`, which on 3.11 loses a cancellation that lands just after a
packet arrived. Against a client that streams packets that used to leave the connection
open for good: `disconnect()` and `stop()` never finished, the socket stayed open and the
client got nothing more (the daemon waited for replies under load). The client here is a
raw socket that streams PINGREQs (MQTT 3.1.1 §3.12) as fast as the broker takes them.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from gatewayd.enos.sign import mqtt_credentials
from gatewayd.sim.emulator import EnosEmulator
from tests.integration.emulator_fixtures import GW_DK, GW_PK, GW_SECRET, EmulatorFactory
from tests.integration.emulator_fixtures import default_emulator_config as cloud
from tests.peers.mqtt_wire import ACCEPTED, build_connect, connack_code, read_packet
from tests.support import async_wait_until

#: PINGREQ: type 12, no flags, remaining length 0 (§3.12).
PINGREQ = bytes([12 << 4, 0])
#: PINGRESP: type 13, remaining length 0 (§3.13).
PINGRESP = bytes([13 << 4, 0])
#: Generous for a loaded 2-core machine; a connection that ends does so in milliseconds.
END_TIMEOUT_S = 15.0


@dataclass(eq=False)
class StreamingClient:
    """A connected gateway that sends PINGREQs until the broker closes the socket."""

    writer: asyncio.StreamWriter
    answers: int = 0  # PINGRESPs received
    ended: asyncio.Event = field(default_factory=asyncio.Event)


async def _send_pings(client: StreamingClient) -> None:
    while not client.ended.is_set():
        client.writer.write(PINGREQ * 50)
        try:
            await client.writer.drain()
        except ConnectionError:
            return
        await asyncio.sleep(0)  # a yield, not a wait: the broker gets its turn


async def _read_answers(reader: asyncio.StreamReader, client: StreamingClient) -> None:
    try:
        while chunk := await reader.read(65536):
            client.answers += chunk.count(PINGRESP)
    except ConnectionError:
        pass
    client.ended.set()


@contextlib.asynccontextmanager
async def streaming_client(emulator: EnosEmulator, n: int) -> AsyncIterator[StreamingClient]:
    """Connection `n` of the gateway (its own clientId), streaming once the cloud knows it."""
    creds = mqtt_credentials(GW_PK, GW_DK, GW_SECRET, timestamp=str(1_700_000_000_000 + n))
    reader, writer = await asyncio.open_connection(emulator.host, emulator.port)
    client = StreamingClient(writer)
    tasks: list[asyncio.Task[None]] = []
    try:
        writer.write(build_connect(creds.client_id, creds.username, creds.password))
        await writer.drain()
        assert connack_code(await asyncio.wait_for(read_packet(reader), 10)) == ACCEPTED
        await async_wait_until(lambda: emulator.is_connected(GW_PK, GW_DK), 10, "registered")
        tasks = [
            asyncio.create_task(_send_pings(client)),
            asyncio.create_task(_read_answers(reader, client)),
        ]
        await async_wait_until(lambda: client.answers >= 100, 10, "the broker answering pings")
        yield client
    finally:
        client.ended.set()
        writer.close()  # ends a connection the broker failed to end, so teardown can stop
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def test_dropping_a_streaming_client_closes_its_socket(
    enos_emulator_factory: EmulatorFactory,
) -> None:
    """Five times: disconnect() while the client streams; the socket closes, the link goes."""
    emulator = await enos_emulator_factory(cloud())
    emulator.throttle.enabled = False  # five CONNECTs in a row
    for n in range(5):
        async with streaming_client(emulator, n) as client:
            assert await emulator.disconnect(GW_PK, GW_DK)
            await async_wait_until(client.ended.is_set, END_TIMEOUT_S, f"connection {n} closed")
            assert not emulator.is_connected(GW_PK, GW_DK)
    assert emulator.stats.disconnects == 5


async def test_stopping_the_emulator_under_a_streaming_client_ends_both(
    enos_emulator_factory: EmulatorFactory,
) -> None:
    """stop() while the client streams returns, and the client's socket is closed."""
    emulator = await enos_emulator_factory(cloud())
    async with streaming_client(emulator, 0) as client:
        stopping = asyncio.create_task(emulator.stop())
        await async_wait_until(stopping.done, END_TIMEOUT_S, "the emulator stopped")
        await stopping
        await async_wait_until(client.ended.is_set, END_TIMEOUT_S, "the connection closed")
    assert emulator.stats.disconnects == 1
