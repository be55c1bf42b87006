"""Cloud commands over a real mosquitto, against a cloud written from the spec (§2, §3.7).

gatewayd runs in-process with the real command handler and bus poller; the devices are
the project's Modbus simulator (each write is logged with its value); the cloud is
`SpecCloud`, raw JSON over paho. Checked: reply ids keep their JSON type byte for byte,
duplicates (in flight, redelivered, ``5`` vs ``"5"``) are written once, a burst is
answered exactly once (done or refused as overloaded) without dropping the session, and
seeded random traffic across an uplink outage keeps those rules.
"""

from __future__ import annotations

import asyncio
import random
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import pytest

from gatewayd.app import SECRET_FILE, state_dir
from gatewayd.enos.codes import ReplyCode
from tests.integration.commands_site import PK, device_key
from tests.integration.mosquitto_fixtures import Mosquitto, start_mosquitto
from tests.integration.mqtt_cloud import (
    BROKER_OPTIONS,
    MqttSite,
    Reply,
    command_subscriptions,
    mqtt_site,
    set_topic,
    typed_id,
)
from tests.support import async_wait_until

FC_WRITE_REGISTER, FC_WRITE_REGISTERS = 6, 16
U16 = 2  # holding register of the model's `u16` point
OVERLOADED = 2016  # README: "too many commands pending"
DONE = 200


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """One mosquitto for the module, with no per-client queue limit."""
    server = start_mosquitto(tmp_path_factory.mktemp("mosquitto"), extra=BROKER_OPTIONS)
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def _commands_routed() -> Iterator[None]:
    with command_subscriptions():
        yield


def get_topic(unit: int) -> str:
    """The measurepoint.get topic of sub-device `unit`."""
    return f"/sys/{PK}/{device_key(unit)}/thing/service/measurepoint/get"


async def replies(site: MqttSite, count: int, timeout: float = 30) -> list[Reply]:
    """Wait until `count` command replies arrived in all; all of them."""
    await async_wait_until(lambda: site.cloud.reply_count() >= count, timeout, f"{count} replies")
    return site.cloud.replies()


async def test_reply_ids_keep_their_json_type(broker: Mosquitto, tmp_path: Path) -> None:
    """Integer ids are answered as integers and string ids as strings, byte for byte."""
    async with mqtt_site(tmp_path, broker.port) as site:
        cloud = site.cloud
        cloud.send(set_topic(1), 424242, {"u16": 1})
        cloud.send(set_topic(1), "424243", {"u16": 2})
        cloud.send(get_topic(1), 424244, ["u16"], method="thing.service.measurepoint.get")
        cloud.send(set_topic(1), 424245, {"no_such_point": 1})  # refused by the model
        cloud.send(set_topic(1), 424246, "not an object")  # malformed params
        cloud.send(set_topic(1), "s", "not an object")
        got = await replies(site, 6)
    by_id = {typed_id(r.raw): r for r in got}
    assert set(by_id) == {424242, "424243", 424244, 424245, 424246, "s"}
    assert b'"id":424242,' in by_id[424242].raw
    assert b'"id":"424243",' in by_id["424243"].raw
    assert b'"id":424244,' in by_id[424244].raw
    assert b'"id":"s",' in by_id["s"].raw
    codes = {key: r.body["code"] for key, r in by_id.items()}
    assert codes == {
        424242: 200,
        "424243": 200,
        424244: 200,
        424245: ReplyCode.POINT_UNKNOWN,
        424246: ReplyCode.COMMAND_INVALID_PARAMS,
        "s": ReplyCode.COMMAND_INVALID_PARAMS,
    }
    assert by_id[424244].body["data"] == {"u16": 2}


async def test_mode2_gateway_refuses_an_activation(broker: Mosquitto, tmp_path: Path) -> None:
    """thing.activate.info to a mode-2 gateway: answered 2017, no secret file planted."""
    topic = "/ext/session/gwPK/gwDK/thing/activate/info"
    params = {"productKey": "gwPK", "deviceKey": "gwDK", "deviceSecret": "planted"}
    async with mqtt_site(tmp_path, broker.port) as site:
        site.cloud.send(topic, 1, params, method="thing.activate.info")
        [reply] = await replies(site, 1)
        secret = state_dir(site.daemon.config) / SECRET_FILE
    assert reply.topic == topic + "_reply"
    assert (typed_id(reply.raw), reply.body["code"]) == (1, 2017)
    assert not secret.exists()


async def test_duplicate_in_flight_is_written_once(broker: Mosquitto, tmp_path: Path) -> None:
    """Same id twice back to back: one write, two identical replies; `5` and `"5"` differ."""
    # A slow device (0.2 s per request): the second delivery arrives while the first runs.
    async with mqtt_site(tmp_path, broker.port, turnaround=0.2) as site:
        cloud, unit = site.cloud, site.units[1]
        cloud.send(set_topic(1), "5", {"u16": 11})
        cloud.send(set_topic(1), "5", {"u16": 22})  # same command id: must not run
        first, second = await replies(site, 2)
        assert first.raw == second.raw
        assert (typed_id(first.raw), first.body["code"]) == ("5", DONE)
        assert (unit.written(U16, 11), unit.written(U16, 22)) == (1, 0)
        assert site.sim.get_value(1, "u16") == 11

        cloud.send(set_topic(1), 5, {"u16": 33})  # another command: an integer id
        third = (await replies(site, 3))[2]
        assert (typed_id(third.raw), third.body["code"]) == (5, DONE)
        assert unit.written(U16, 33) == 1

        cloud.send(set_topic(1), "5", {"u16": 11})  # redelivered after it finished
        fourth = (await replies(site, 4))[3]
        assert fourth.raw == first.raw
        assert unit.written(U16, 11) == 1
        assert site.sim.get_value(1, "u16") == 33
        assert site.requests(1, FC_WRITE_REGISTER) == 2


async def test_burst_to_a_slow_device_is_refused_fast(broker: Mosquitto, tmp_path: Path) -> None:
    """200 commands at once to a slow device: done or overloaded, none timed out, no drop."""
    burst = 200
    async with mqtt_site(tmp_path, broker.port, turnaround=0.05) as site:
        for n in range(burst):
            site.cloud.send(set_topic(1), str(n), {"u16": 1000 + n})
        got = await replies(site, burst, timeout=60)
        await async_wait_until(lambda: site.uplink.commands.idle, 30, "commands finished")
        assert site.cloud.reply_count() == burst
        assert site.connects == 1
        by_id = Counter(typed_id(r.raw) for r in got)
        assert by_id == Counter(str(n) for n in range(burst))  # each exactly once
        codes = Counter(r.body["code"] for r in got)
        assert set(codes) == {DONE, OVERLOADED}, codes
        assert codes[OVERLOADED] >= burst // 2  # the queue is bounded well below the burst
        for reply in got:
            value = 1000 + int(typed_id(reply.raw))
            written = site.units[1].written(U16, value)
            assert written == (1 if reply.body["code"] == DONE else 0), reply.body
        refused = next(r.body for r in got if r.body["code"] == OVERLOADED)
        assert "nothing written" in refused["message"]


async def test_slow_acknowledgements_never_drop_the_session(
    broker: Mosquitto, tmp_path: Path
) -> None:
    """A far broker (PUBACKs 0.2 s late, 3 s client timeout) and 1,000 commands: no drop."""
    burst = 1000
    async with mqtt_site(tmp_path, broker.port, latency=0.2, broker_timeout="3s") as site:
        for n in range(burst):
            site.cloud.send(set_topic(1 + n % 2), str(n), {"u16": n})
        got = await replies(site, burst, timeout=90)
        await async_wait_until(lambda: site.uplink.commands.idle, 30, "commands finished")
        assert site.connects == 1
        assert site.cloud.reply_count() == burst
    assert Counter(typed_id(r.raw) for r in got) == Counter(str(n) for n in range(burst))
    assert {r.body["code"] for r in got} <= {DONE, OVERLOADED}


async def test_three_bursts_are_answered_exactly_once(broker: Mosquitto, tmp_path: Path) -> None:
    """3 x 1,000 commands to two devices: every one answered once, session kept, writes match."""
    burst = 1000
    async with mqtt_site(tmp_path, broker.port) as site:
        sent: list[int] = []
        for round_ in range(3):
            for n in range(burst):
                msg_id = round_ * burst + n
                site.cloud.send(set_topic(1 + n % 2), msg_id, {"u16": msg_id % 60000})
                sent.append(msg_id)
            await replies(site, len(sent), timeout=120)
        await async_wait_until(lambda: site.uplink.commands.idle, 30, "commands finished")
        got = site.cloud.replies()
        assert site.connects == 1
    assert Counter(typed_id(r.raw) for r in got) == Counter(sent)
    codes = Counter(r.body["code"] for r in got)
    assert set(codes) <= {DONE, OVERLOADED}, codes
    assert codes[DONE] > 0
    done = {typed_id(r.raw) for r in got if r.body["code"] == DONE}
    for msg_id in sent:
        unit = site.units[1 + msg_id % burst % 2]
        assert unit.written(U16, msg_id % 60000) == (1 if msg_id in done else 0), msg_id


@pytest.mark.parametrize("seed", [20261205, 7])
async def test_seeded_traffic_across_an_outage(
    broker: Mosquitto, tmp_path: Path, seed: int
) -> None:
    """Random bursts with duplicates, an outage mid-burst, redeliveries: never written twice.

    Rule: a delivery is answered exactly once unless it was lost with the session (sent
    while the gateway was cut off, or answered while no session was up); its outcome is
    kept, so the redelivery after the reconnect gets it without a second write.
    """
    r = random.Random(seed)
    pool: list[str | int] = [*range(1, 121), *(str(n) for n in range(1, 121))]

    def value(msg_id: str | int) -> int:  # unique per typed id: 5 and "5" write different values
        return int(msg_id) if isinstance(msg_id, int) else 1000 + int(msg_id)

    def unit_of(msg_id: str | int) -> int:
        return 1 + value(msg_id) % 2

    deliveries: Counter[str | int] = Counter()

    def deliver(msg_id: str | int) -> None:
        deliveries[msg_id] += 1
        site.cloud.send(set_topic(unit_of(msg_id)), msg_id, {"u16": value(msg_id)})

    async def quiet() -> None:
        await async_wait_until(lambda: site.uplink.commands.idle, 30, "commands finished")

    async with mqtt_site(tmp_path, broker.port, turnaround=0.002) as site:
        cut_round, cut_burst = 4, 0
        for round_ in range(8):
            before = site.cloud.reply_count()
            burst = [r.choice(pool) for _ in range(r.randint(5, 60))]
            burst += r.sample(burst, k=len(burst) // 4)  # duplicates, some back to back
            if round_ != cut_round:
                for msg_id in burst:
                    deliver(msg_id)
                await replies(site, before + len(burst), timeout=60)
                await quiet()
                assert site.cloud.reply_count() == before + len(burst)
                continue
            cut_burst = len(burst)
            half = len(burst) // 2
            for msg_id in burst[:half]:
                deliver(msg_id)
            await asyncio.sleep(r.uniform(0, 0.02))  # scatter the cut: timing, not sync
            site.link.cut()
            for msg_id in burst[half:]:
                deliver(msg_id)  # the gateway is not on the broker: these are lost
            await async_wait_until(lambda: site.uplink.status.state != "connected", 20)
            site.link.restore()
            await async_wait_until(site.logged_in, 30, "logged in again")
            await quiet()
        # The cloud redelivers what it never had an answer for.
        answered: Counter[str | int] = Counter(typed_id(x.raw) for x in site.cloud.replies())
        missing = [m for m in deliveries for _ in range(deliveries[m] - answered[m])]
        lost_in_outage = len(missing)
        before = site.cloud.reply_count()
        for msg_id in missing:
            deliver(msg_id)
        await replies(site, before + len(missing), timeout=60)
        await quiet()
        got = site.cloud.replies()
        assert site.connects == 2  # only the cut dropped the session

    assert lost_in_outage <= cut_burst  # only the outage round lost anything
    by_id: defaultdict[str | int, list[Reply]] = defaultdict(list)
    for reply in got:
        by_id[typed_id(reply.raw)].append(reply)
    assert set(by_id) == set(deliveries)
    for msg_id, answers in by_id.items():
        assert len(answers) <= deliveries[msg_id], msg_id  # never answered twice
        codes = {a.body["code"] for a in answers}
        assert codes <= {DONE, OVERLOADED, ReplyCode.SUB_DEVICE_NOT_LOGGED_IN}, (msg_id, codes)
        outcomes = {a.raw for a in answers if a.body["code"] != OVERLOADED}
        assert len(outcomes) <= 1, msg_id  # every delivery of a command: the same reply
        written = site.units[unit_of(msg_id)].written(U16, value(msg_id))
        assert written == (1 if DONE in codes else 0), (msg_id, written, codes)
