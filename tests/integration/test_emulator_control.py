"""The emulator's control API: downstream commands, fault injection, stats and the JSON dump."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import pytest

from gatewayd.enos import messages, topics
from gatewayd.sim.emulator import CommandTimeout, DeviceNotConnected, EnosEmulator
from tests.integration.emulator_fixtures import (
    GW_DK,
    GW_PK,
    SUB_PK,
    DeviceClient,
    EmulatorFactory,
    connect_gateway,
    default_emulator_config,
)
from tests.support import async_wait_until

T0 = 1_700_000_000_000


async def _answer_next(gw: DeviceClient, data: Any = None, code: int = 200) -> tuple[str, Any]:
    """Receive the next command and reply to it; returns (topic, command body)."""
    topic, body = await gw.next_message()
    await gw.publish(topics.reply_topic(topic), messages.encode_reply(body["id"], code, data), 0)
    return topic, body


def _post(gw: DeviceClient, value: float) -> messages.Request:
    return messages.measurepoint_post(
        GW_PK, GW_DK, id=gw.next_id(), measurepoints={"gw_cpu": value}, time_ms=T0
    )


# --- downstream commands -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "params", "data", "path"),
    [
        (
            "thing.service.measurepoint.set",
            {"setpoint": 30.5},
            {},
            "thing/service/measurepoint/set",
        ),
        (
            "thing.service.measurepoint.get",
            ["power"],
            {"power": 1.5},
            "thing/service/measurepoint/get",
        ),
        ("thing.service.reset", {"mode": 2}, {"ok": True}, "thing/service/reset"),
    ],
)
async def test_commands_reach_a_logged_in_sub_device_through_its_gateway(
    enos_emulator: EnosEmulator, method: str, params: Any, data: Any, path: str
) -> None:
    """A sub-device command arrives on the gateway connection unsubscribed; the reply returns."""
    async with connect_gateway(enos_emulator) as gw:
        await gw.login("meter1")
        command = asyncio.ensure_future(
            enos_emulator.send_command(SUB_PK, "meter1", method, params, timeout=10)
        )
        topic, body = await _answer_next(gw, data)
        reply = await command
    assert topic == f"/sys/{SUB_PK}/meter1/{path}"
    assert body["method"] == method
    assert body["params"] == params
    assert isinstance(body["id"], str)
    assert reply == {"id": body["id"], "code": 200, "message": "", "data": data}
    assert enos_emulator.stats.commands_sent == 1


async def test_command_to_the_gateway_itself_and_device_error_codes(
    enos_emulator: EnosEmulator,
) -> None:
    """Commands to the gateway's own keys; a device error code (>= 2000) is returned as is."""
    async with connect_gateway(enos_emulator) as gw:
        command = asyncio.ensure_future(
            enos_emulator.send_command(GW_PK, GW_DK, "thing.service.reboot", {}, timeout=10)
        )
        topic, _body = await _answer_next(gw, code=2005)
        reply = await command
    assert topic == topics.service(GW_PK, GW_DK, "reboot")
    assert reply["code"] == 2005


async def test_command_to_an_offline_device_and_timeout(enos_emulator: EnosEmulator) -> None:
    """No route -> DeviceNotConnected; no reply -> CommandTimeout (counted)."""
    with pytest.raises(DeviceNotConnected):
        await enos_emulator.send_command(SUB_PK, "meter1", "thing.service.x", {})
    async with connect_gateway(enos_emulator) as gw:
        await gw.login("meter1")
        with pytest.raises(CommandTimeout):
            await enos_emulator.send_command(SUB_PK, "meter1", "thing.service.x", {}, timeout=0.2)
        topic, _body = await gw.next_message()  # it was delivered; nobody answered
    assert topic == topics.service(SUB_PK, "meter1", "x")
    assert enos_emulator.stats.command_timeouts == 1


async def test_a_late_or_unknown_reply_is_ignored(enos_emulator: EnosEmulator) -> None:
    """A reply with an id nobody waits for changes nothing and breaks nothing."""
    async with connect_gateway(enos_emulator) as gw:
        await gw.publish(
            topics.reply_topic(topics.measurepoint_set(GW_PK, GW_DK)),
            messages.encode_reply("nobody", 200),
        )
        await gw.publish(topics.reply_topic(topics.service(GW_PK, GW_DK, "x")), b"garbage")
        assert (await gw.send(_post(gw, 1.0)))["code"] == 200


async def test_combine_disable_enable_delete_change_cloud_state(
    enos_emulator: EnosEmulator,
) -> None:
    """combine.disable -> offline + login 723; enable -> login ok; delete -> login 705."""
    meter1 = [{"productKey": SUB_PK, "deviceKey": "meter1"}]
    async with connect_gateway(enos_emulator) as gw:
        await gw.login("meter1")
        command = asyncio.ensure_future(
            enos_emulator.send_command(GW_PK, GW_DK, "combine.disable", meter1, timeout=10)
        )
        topic, body = await _answer_next(gw)
        assert (await command)["code"] == 200
        assert topic == topics.combine_disable(GW_PK, GW_DK)
        assert body["params"] == meter1
        assert enos_emulator.online_sub_devices(GW_PK, GW_DK) == []
        assert (await gw.login("meter1"))["code"] == 723

        command = asyncio.ensure_future(
            enos_emulator.send_command(GW_PK, GW_DK, "combine.enable", meter1, timeout=10)
        )
        await _answer_next(gw)
        await command
        assert (await gw.login("meter1"))["code"] == 200

        command = asyncio.ensure_future(
            enos_emulator.send_command(GW_PK, GW_DK, "combine.delete", meter1, timeout=10)
        )
        topic, _ = await _answer_next(gw)
        await command
        assert topic == topics.combine_delete(GW_PK, GW_DK)
        assert (await gw.login("meter1"))["code"] == 705
    assert (SUB_PK, "meter1") not in enos_emulator.state.devices


# --- faults ---------------------------------------------------------------------------------


async def test_drop_next_reply_still_processes_the_request(enos_emulator: EnosEmulator) -> None:
    """A dropped reply never arrives, but the data was stored (as on a lossy link)."""
    enos_emulator.faults.drop_replies(1, method="thing.measurepoint.post")
    async with connect_gateway(enos_emulator) as gw:
        first = _post(gw, 1.0)
        lost = gw.expect_reply(first.reply_topic, first.id)
        await gw.subscribe(first.reply_topic)
        await gw.publish(first.topic, first.payload)
        assert (await gw.send(_post(gw, 2.0)))["code"] == 200
        assert not lost.done()
    assert [r.value for r in enos_emulator.records.points] == [1.0, 2.0]
    assert enos_emulator.stats.replies_dropped == 1


async def test_probabilistic_drops_are_reproducible(enos_emulator_factory: EmulatorFactory) -> None:
    """drop_replies(probability=p) with a seeded rng drops a reproducible subset."""
    emu = await enos_emulator_factory(default_emulator_config(), rng=random.Random(7))
    emu.faults.drop_replies(probability=0.5)
    expected_rng = random.Random(7)
    expected = [expected_rng.random() < 0.5 for _ in range(20)]
    async with connect_gateway(emu) as gw:
        requests = [_post(gw, float(i)) for i in range(20)]
        futures = [gw.expect_reply(r.reply_topic, r.id) for r in requests]
        await gw.subscribe(requests[0].reply_topic)
        for request in requests:
            await gw.publish(request.topic, request.payload)
        await async_wait_until(lambda: len(emu.records.points) == 20, what="all 20 processed")
        emu.faults.clear()
        assert (await gw.send(_post(gw, 99.0)))["code"] == 200
        assert [not f.done() for f in futures] == expected
    assert emu.stats.replies_dropped == sum(expected)


async def test_delayed_reply_arrives_after_a_later_one(enos_emulator: EnosEmulator) -> None:
    """delay_replies(s, n=1): the first reply is overtaken by the second."""
    enos_emulator.faults.delay_replies(0.3, n=1)
    order: list[str] = []
    async with connect_gateway(enos_emulator) as gw:
        first, second = _post(gw, 1.0), _post(gw, 2.0)
        await gw.subscribe(first.reply_topic)
        futures = [gw.expect_reply(r.reply_topic, r.id) for r in (first, second)]
        for future, name in zip(futures, ("first", "second"), strict=True):
            future.add_done_callback(lambda _f, name=name: order.append(name))
        await gw.publish(first.topic, first.payload)
        await gw.publish(second.topic, second.payload)
        await asyncio.wait_for(asyncio.gather(*futures), 10)
    assert order == ["second", "first"]


async def test_answer_code_for_the_next_requests_of_a_method(enos_emulator: EnosEmulator) -> None:
    """answer_code(c, n, method): n matching requests get c unprocessed; others are untouched."""
    enos_emulator.faults.answer_code(1212, n=2, method="thing.measurepoint.post")
    async with connect_gateway(enos_emulator) as gw:
        codes = [(await gw.send(_post(gw, float(i))))["code"] for i in range(3)]
        other = messages.event_post(GW_PK, GW_DK, id="e", event_id="x", params={}, time_ms=T0)
        event_reply = await gw.send(other)
    assert codes == [1212, 1212, 200]
    assert event_reply["code"] == 1204  # not matched by the fault: processed normally
    assert [r.value for r in enos_emulator.records.points] == [2.0]


async def test_rate_cap_delays_but_never_drops(enos_emulator: EnosEmulator) -> None:
    """Over the byte rate, messages wait (counted) and are all processed in order."""
    async with connect_gateway(enos_emulator) as gw:
        requests = [_post(gw, float(i)) for i in range(4)]
        size = len(requests[0].payload)
        await gw.subscribe(requests[0].reply_topic)
        futures = [gw.expect_reply(r.reply_topic, r.id) for r in requests]
        enos_emulator.faults.limit_rate(size * 1.5)  # a burst of 1.5 messages, then 1.5/s
        for request in requests:
            await gw.publish(request.topic, request.payload)
        replies = await asyncio.wait_for(asyncio.gather(*futures), 20)
    assert [r["code"] for r in replies] == [200] * 4
    assert [r.value for r in enos_emulator.records.points] == [0.0, 1.0, 2.0, 3.0]
    assert enos_emulator.stats.rate_limited_messages >= 2


async def test_disconnect_a_client(enos_emulator: EnosEmulator) -> None:
    """emu.disconnect drops the connection; the gateway's sub-devices go offline."""
    async with connect_gateway(enos_emulator) as gw:
        await gw.login("meter1")
        assert await enos_emulator.disconnect(GW_PK, GW_DK)
        await async_wait_until(lambda: not enos_emulator.is_connected(GW_PK, GW_DK))
    assert enos_emulator.online_sub_devices(GW_PK, GW_DK) == []
    assert not await enos_emulator.disconnect(GW_PK, GW_DK)


# --- stats and dump -----------------------------------------------------------------------------


async def test_stats_and_dump(enos_emulator: EnosEmulator, tmp_path: Path) -> None:
    """Counters per method/code and a JSON dump with live and backfill kept apart."""
    async with connect_gateway(enos_emulator) as gw:
        await gw.login("meter1")
        await gw.send(_post(gw, 1.0))
        resume = messages.measurepoint_resume(
            SUB_PK, "meter1", id="r", measurepoints={"power": 3.0}, time_ms=T0 - 1
        )
        await gw.send(resume)
        await gw.request_raw(topics.measurepoint_post(GW_PK, GW_DK), b"{", "")
        await async_wait_until(lambda: enos_emulator.stats.messages_out == 4)
        stats = enos_emulator.stats
        assert stats.connects == 1
        assert stats.messages_in == 4
        assert stats.bytes_in > 0
        assert stats.requests_by_method == {
            "combine.login": 1,
            "thing.measurepoint.post": 2,
            "thing.measurepoint.resume": 1,
        }
        assert stats.replies_by_code == {200: 3, 1220: 1}
        path = tmp_path / "dump.json"
        enos_emulator.dump(path)
    dump = json.loads(path.read_text())
    assert [(r["device_key"], r["value"]) for r in dump["records"]["post"]] == [(GW_DK, 1.0)]
    assert [(r["device_key"], r["point"], r["time"]) for r in dump["records"]["resume"]] == [
        ("meter1", "power", T0 - 1)
    ]
    assert dump["records"]["counts"]["logins"] == 1
    assert dump["stats"]["replies_by_code"] == {"200": 3, "1220": 1}
    assert dump["online"] == {f"{GW_PK}/{GW_DK}": [f"{SUB_PK}/meter1"]}


async def test_cached_command_is_delivered_on_login(enos_emulator_factory: EmulatorFactory) -> None:
    """pending_ttl: a command to an offline sub-device waits for its login, then completes."""
    now = [0.0]
    emu = await enos_emulator_factory(default_emulator_config(), clock=lambda: now[0])
    async with connect_gateway(emu) as gw:
        command = asyncio.ensure_future(
            emu.send_command(
                SUB_PK,
                "meter1",
                "thing.service.measurepoint.set",
                {"setpoint": 1.0},
                timeout=10,
                pending_ttl=60,
            )
        )
        await async_wait_until(lambda: emu.stats.commands_sent == 0 and emu.cached_commands == 1)
        assert (await gw.login("meter1"))["code"] == 200  # the login reply comes first
        topic, body = await _answer_next(gw)
        assert topic == topics.measurepoint_set(SUB_PK, "meter1")
        assert body["params"] == {"setpoint": 1.0}
        assert (await command)["code"] == 200
    assert emu.stats.commands_sent == 1


async def test_cached_command_expires(enos_emulator_factory: EmulatorFactory) -> None:
    """A cached command older than its pending_ttl is never delivered; the caller times out."""
    now = [0.0]
    emu = await enos_emulator_factory(default_emulator_config(), clock=lambda: now[0])
    command = asyncio.ensure_future(
        emu.send_command(SUB_PK, "meter1", "thing.service.x", {}, timeout=1, pending_ttl=5)
    )
    await async_wait_until(lambda: emu.cached_commands == 1)
    now[0] = 6.0
    async with connect_gateway(emu) as gw:
        assert (await gw.login("meter1"))["code"] == 200
        with pytest.raises(CommandTimeout):
            await command
        assert gw.inbox.empty()
    assert emu.stats.commands_sent == 0


async def test_stop_does_not_wait_for_delayed_replies(enos_emulator: EnosEmulator) -> None:
    """A reply delayed by minutes is cancelled at stop, not waited for."""
    enos_emulator.faults.delay_replies(600)
    async with connect_gateway(enos_emulator) as gw:
        request = _post(gw, 1.0)
        await gw.subscribe(request.reply_topic)
        await gw.publish(request.topic, request.payload)
        await async_wait_until(lambda: len(enos_emulator.records.points) == 1)
        await asyncio.wait_for(enos_emulator.stop(), 10)
    assert not enos_emulator.is_connected(GW_PK, GW_DK)
