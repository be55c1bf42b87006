"""The emulator's answers to upstream requests (§3-§5 of the spec), over a real MQTT client."""

from __future__ import annotations

import json
from typing import Any

import pytest

from gatewayd.enos import messages, topics
from gatewayd.enos.messages import DeviceRef, MeasurepointRecord, SubDeviceCredentials
from gatewayd.sim.emulator import EmulatorConfig, EnosEmulator
from gatewayd.sim.emulator.records import PointTally
from tests.integration.emulator_fixtures import (
    GW_DK,
    GW_PK,
    SUB_PK,
    SUB_PRODUCT_SECRET,
    TIMESTAMP,
    DeviceClient,
    EmulatorFactory,
    connect_device,
    connect_gateway,
    default_emulator_config,
)
from tests.support import async_wait_until

T0 = 1_700_000_000_000


def _record(dk: str | None, points: dict[str, Any], time_ms: int = T0) -> MeasurepointRecord:
    return MeasurepointRecord(SUB_PK if dk else None, dk, time_ms, points)


async def _batch(
    gw: DeviceClient,
    records: list[MeasurepointRecord],
    *,
    resume: bool = False,
    allow_offline: bool = False,
    skip_invalid: bool = False,
) -> dict[str, Any]:
    request = messages.measurepoint_batch(
        GW_PK,
        GW_DK,
        id=gw.next_id(),
        records=records,
        resume=resume,
        allow_offline_sub_device=allow_offline,
        skip_invalid_measurepoints=skip_invalid,
    )
    return await gw.send(request)


# --- sub-device login / logout ---------------------------------------------------------------


async def test_login_replies_with_asset_id_and_echoes_the_id(enos_emulator: EnosEmulator) -> None:
    """combine.login: 200 with assetId/productKey/deviceKey, id echoed, device online."""
    async with connect_gateway(enos_emulator) as gw:
        creds = SubDeviceCredentials(SUB_PK, "meter1", "m1Secret")
        request = messages.combine_login(GW_PK, GW_DK, id="4711", device=creds, timestamp=TIMESTAMP)
        reply = await gw.send(request)
    assert reply["id"] == "4711"
    assert reply["code"] == 200
    asset = enos_emulator.state.devices[(SUB_PK, "meter1")].asset_id
    assert reply["data"] == {"assetId": asset, "productKey": SUB_PK, "deviceKey": "meter1"}
    assert [(r.device_key, r.code) for r in enos_emulator.records.logins] == [("meter1", 200)]


async def test_login_then_gateway_disconnect_takes_sub_devices_offline(
    enos_emulator: EnosEmulator,
) -> None:
    """Sub-devices are online while the gateway is connected, offline when it drops."""
    async with connect_gateway(enos_emulator) as gw:
        assert (await gw.login("meter1"))["code"] == 200
        assert (await gw.login("meter2"))["code"] == 200
        assert enos_emulator.online_sub_devices(GW_PK, GW_DK) == [
            (SUB_PK, "meter1"),
            (SUB_PK, "meter2"),
        ]
        assert await enos_emulator.disconnect(GW_PK, GW_DK)
        await async_wait_until(lambda: not enos_emulator.is_connected(GW_PK, GW_DK))
    assert enos_emulator.online_sub_devices(GW_PK, GW_DK) == []
    async with connect_gateway(enos_emulator) as gw:
        request = messages.measurepoint_post(
            SUB_PK, "meter1", id="9", measurepoints={"power": 1.0}, time_ms=T0
        )
        reply = await gw.send(request)
    assert reply["code"] == 1009


@pytest.mark.parametrize(
    ("pk", "dk", "secret", "code"),
    [
        (SUB_PK, "ghost", "x", 705),
        (SUB_PK, "stray", "straySecret", 740),
        (SUB_PK, "meter1", "wrongSecret", 742),
        (SUB_PK, "off", "offSecret", 723),
        ("sslSubPK", "sslSub", "sslSubSecret", 746),
    ],
)
async def test_login_error_codes(
    enos_emulator: EnosEmulator, pk: str, dk: str, secret: str, code: int
) -> None:
    """705 unknown, 740 not in topology, 742 bad sign, 723 disabled, 746 ssl-only product."""
    async with connect_gateway(enos_emulator) as gw:
        request = messages.combine_login(
            GW_PK,
            GW_DK,
            id="1",
            device=SubDeviceCredentials(pk, dk, secret),
            timestamp=TIMESTAMP,
        )
        reply = await gw.send(request)
    assert reply["code"] == code
    assert reply["id"] == "1"
    assert reply["message"]
    assert enos_emulator.online_sub_devices(GW_PK, GW_DK) == []


async def test_login_accepts_every_sign_method_and_case(enos_emulator: EnosEmulator) -> None:
    """Sub-device signs are checked with every alias, hex case-insensitively."""
    async with connect_gateway(enos_emulator) as gw:
        for method in ("sha256", "hmacsha256", "SHA1", "hmacmd5"):
            request = messages.combine_login(
                GW_PK,
                GW_DK,
                id=gw.next_id(),
                device=SubDeviceCredentials(SUB_PK, "meter1", "m1Secret"),
                timestamp=TIMESTAMP,
                sign_method=method,
            )
            body = json.loads(request.payload)
            body["params"]["sign"] = body["params"]["sign"].swapcase()
            reply = await gw.request(request.topic, "combine.login", body["params"])
            assert reply["code"] == 200, method


async def test_sub_device_dynamic_activation_once(
    enos_emulator_factory: EmulatorFactory,
) -> None:
    """secureMode 3 login returns a deviceSecret once; a second activation gets 770."""
    emu = await enos_emulator_factory(
        default_emulator_config(), secret_factory=lambda key: f"issued-{key[1]}"
    )
    dynamic = SubDeviceCredentials(SUB_PK, "fresh", SUB_PRODUCT_SECRET, secure_mode=3)
    async with connect_gateway(emu) as gw:
        request = messages.combine_login(GW_PK, GW_DK, id="1", device=dynamic, timestamp="1")
        first = await gw.send(request)
        assert first["code"] == 200
        assert first["data"]["deviceSecret"] == "issued-fresh"
        request = messages.combine_login(GW_PK, GW_DK, id="2", device=dynamic, timestamp="2")
        assert (await gw.send(request))["code"] == 770
        assert (await gw.login("fresh", "issued-fresh"))["code"] == 200


async def test_online_sub_device_cap(enos_emulator_factory: EmulatorFactory) -> None:
    """Logins beyond the per-gateway online cap are refused; a re-login of an online one is not."""
    emu = await enos_emulator_factory(default_emulator_config(online_subdevice_cap=2))
    async with connect_gateway(emu) as gw:
        assert (await gw.login("meter1"))["code"] == 200
        assert (await gw.login("meter2"))["code"] == 200
        assert (await gw.login("meter3"))["code"] == 429
        assert (await gw.login("meter1"))["code"] == 200
    assert emu.stats.replies_by_code == {200: 3, 429: 1}


async def test_batch_login_partial_success(enos_emulator: EnosEmulator) -> None:
    """login.batch: per-device lists, top code = first error, messages concatenated."""
    devices = [
        SubDeviceCredentials(SUB_PK, "meter1", "m1Secret"),
        SubDeviceCredentials(SUB_PK, "off", "offSecret"),
        SubDeviceCredentials(SUB_PK, "meter2", "m2Secret"),
        SubDeviceCredentials(SUB_PK, "ghost", "x"),
    ]
    async with connect_gateway(enos_emulator) as gw:
        request = messages.combine_login_batch(
            GW_PK, GW_DK, id="77", devices=devices, timestamp=TIMESTAMP
        )
        reply = await gw.send(request)
    assert reply["id"] == "77"
    assert reply["code"] == 723
    assert [d["deviceKey"] for d in reply["data"]["loginedSubDevices"]] == ["meter1", "meter2"]
    assert all("assetId" in d for d in reply["data"]["loginedSubDevices"])
    assert reply["data"]["failedSubDevices"] == [
        {"productKey": SUB_PK, "deviceKey": "off"},
        {"productKey": SUB_PK, "deviceKey": "ghost"},
    ]
    assert reply["message"] == (
        "subPK&off has error: Device is disable;"
        "subPK&ghost has error: It failed to query device, not existed this device;"
    )
    assert enos_emulator.online_sub_devices(GW_PK, GW_DK) == [
        (SUB_PK, "meter1"),
        (SUB_PK, "meter2"),
    ]


async def test_batch_login_all_ok_and_format_error(enos_emulator: EnosEmulator) -> None:
    """login.batch all good -> 200 with empty failures; malformed -> 1220 with empty lists."""
    devices = [SubDeviceCredentials(SUB_PK, dk, s) for dk, s in (("meter1", "m1Secret"),)]
    async with connect_gateway(enos_emulator) as gw:
        request = messages.combine_login_batch(
            GW_PK, GW_DK, id="1", devices=devices, timestamp=TIMESTAMP
        )
        ok = await gw.send(request)
        bad = await gw.request(
            topics.combine_login_batch(GW_PK, GW_DK),
            "combine.login.batch",
            {"clientId": "c", "timestamp": "1", "signMethod": "sha256", "subDevices": "x"},
        )
    assert ok["code"] == 200
    assert ok["data"]["failedSubDevices"] == []
    assert bad["code"] == 1220
    assert bad["data"] == {"loginedSubDevices": [], "failedSubDevices": []}


async def test_logout_takes_the_sub_device_offline(enos_emulator: EnosEmulator) -> None:
    """combine.logout replies with the keys; later posts on its topic get 1009."""
    async with connect_gateway(enos_emulator) as gw:
        await gw.login("meter1")
        post = messages.measurepoint_post(
            SUB_PK, "meter1", id="5", measurepoints={"power": 2.5}, time_ms=T0
        )
        assert (await gw.send(post))["code"] == 200
        logout = messages.combine_logout(GW_PK, GW_DK, id="6", device=DeviceRef(SUB_PK, "meter1"))
        reply = await gw.send(logout)
        assert reply["code"] == 200
        assert reply["data"] == {"productKey": SUB_PK, "deviceKey": "meter1"}
        post = messages.measurepoint_post(
            SUB_PK, "meter1", id="7", measurepoints={"power": 2.5}, time_ms=T0
        )
        assert (await gw.send(post))["code"] == 1009
    assert [r.action for r in enos_emulator.records.logins] == ["login", "logout"]
    assert len(enos_emulator.records.values()) == 1


# --- topology ----------------------------------------------------------------------------------


async def test_topology_add_get_delete(enos_emulator: EnosEmulator) -> None:
    """topo add (signed) -> login works; delete refused (1256) while online, then allowed."""
    stray = SubDeviceCredentials(SUB_PK, "stray", "straySecret")
    async with connect_gateway(enos_emulator) as gw:
        get = messages.topo_get(GW_PK, GW_DK, id="1")
        before = (await gw.send(get))["data"]
        assert {"productKey": SUB_PK, "deviceKey": "stray"} not in before
        assert {"productKey": SUB_PK, "deviceKey": "meter1"} in before
        add = messages.topo_add(GW_PK, GW_DK, id="2", devices=[stray], timestamp=TIMESTAMP)
        assert (await gw.send(add))["code"] == 200
        assert (await gw.login("stray", "straySecret"))["code"] == 200
        delete = messages.topo_delete(GW_PK, GW_DK, id="3", devices=[DeviceRef(SUB_PK, "stray")])
        refused = await gw.send(delete)
        assert refused["code"] == 1256
        assert "online" in refused["message"]
        logout = messages.combine_logout(GW_PK, GW_DK, id="4", device=DeviceRef(SUB_PK, "stray"))
        assert (await gw.send(logout))["code"] == 200
        delete = messages.topo_delete(GW_PK, GW_DK, id="5", devices=[DeviceRef(SUB_PK, "stray")])
        assert (await gw.send(delete))["code"] == 200
        after = (await gw.send(messages.topo_get(GW_PK, GW_DK, id="6")))["data"]
        assert after == before
        assert (await gw.login("stray", "straySecret"))["code"] == 740


@pytest.mark.parametrize(
    ("device", "detail"),
    [
        (SubDeviceCredentials(SUB_PK, "ghost", "x"), "doesn't exist"),
        (SubDeviceCredentials(SUB_PK, "stray", "wrong"), "sign"),
        (SubDeviceCredentials("dynPK", "newGw", "dynProductSecret"), "not activated"),
    ],
)
async def test_topology_add_failures(
    enos_emulator: EnosEmulator, device: SubDeviceCredentials, detail: str
) -> None:
    """topo add: unknown device, bad sign, unactivated device -> 1255 and nothing added."""
    async with connect_gateway(enos_emulator) as gw:
        add = messages.topo_add(GW_PK, GW_DK, id="1", devices=[device], timestamp=TIMESTAMP)
        reply = await gw.send(add)
    assert reply["code"] == 1255
    assert reply["message"].startswith("add topo failure")
    assert enos_emulator.state.devices[(SUB_PK, "stray")].gateway is None


async def test_topology_requests_from_a_non_gateway(enos_emulator: EnosEmulator) -> None:
    """A directly connected non-gateway gets 1255 / 1200 / 1256 for topology requests."""
    async with connect_device(enos_emulator, "directPK", "dev1", "dev1Secret") as dev:
        add = messages.topo_add(
            "directPK",
            "dev1",
            id="1",
            devices=[SubDeviceCredentials(SUB_PK, "stray", "straySecret")],
            timestamp=TIMESTAMP,
        )
        assert (await dev.send(add))["code"] == 1255
        assert (await dev.send(messages.topo_get("directPK", "dev1", id="2")))["code"] == 1200
        delete = messages.topo_delete(
            "directPK", "dev1", id="3", devices=[DeviceRef(SUB_PK, "meter1")]
        )
        assert (await dev.send(delete))["code"] == 1256


# --- measurepoints ------------------------------------------------------------------------------


async def test_single_post_and_resume_are_recorded_apart(enos_emulator: EnosEmulator) -> None:
    """post -> live channel, resume -> backfill channel, with quality, time and device."""
    async with connect_gateway(enos_emulator) as gw:
        await gw.login("meter1")
        post = messages.measurepoint_post(
            SUB_PK,
            "meter1",
            id="10",
            measurepoints={"voltage": messages.point_value(230.5, 0), "energy": 12},
            time_ms=T0,
        )
        assert (await gw.send(post))["code"] == 200
        resume = messages.measurepoint_resume(
            SUB_PK, "meter1", id="11", measurepoints={"voltage": 229.0}, time_ms=T0 - 60_000
        )
        assert (await gw.send(resume))["code"] == 200
        own = messages.measurepoint_post(
            GW_PK, GW_DK, id="12", measurepoints={"gw_cpu": 12.5}, time_ms=T0
        )
        assert (await gw.send(own))["code"] == 200
    live = enos_emulator.records.values(channel="post", device="meter1")
    assert [(r.point, r.value, r.quality, r.time) for r in live] == [
        ("voltage", 230.5, 0, T0),
        ("energy", 12, None, T0),
    ]
    assert live[0].message_id == "10"
    backfill = enos_emulator.values(channel="resume")
    assert [(r.device_key, r.point, r.value, r.time) for r in backfill] == [
        ("meter1", "voltage", 229.0, T0 - 60_000)
    ]
    assert [r.point for r in enos_emulator.values(device=GW_DK)] == ["gw_cpu"]
    assert enos_emulator.records.counts()["post"] == 3
    assert enos_emulator.records.counts()["resume"] == 1


async def test_post_without_time_gets_server_time(
    enos_emulator_factory: EmulatorFactory,
) -> None:
    """A missing `time` is filled with the (injected) server time."""
    emu = await enos_emulator_factory(default_emulator_config(), wall_ms=lambda: 42)
    async with connect_gateway(emu) as gw:
        post = messages.measurepoint_post(
            GW_PK, GW_DK, id="1", measurepoints={"gw_cpu": 1.0}, time_ms=None
        )
        assert (await gw.send(post))["code"] == 200
    assert [(r.time, r.received_at) for r in emu.records.points] == [(42, 42)]


async def test_batch_post_records_every_device_and_time(enos_emulator: EnosEmulator) -> None:
    """post.batch: sub-device and keyless (gateway) records are all stored in order."""
    async with connect_gateway(enos_emulator) as gw:
        await gw.login("meter1")
        await gw.login("meter2")
        reply = await _batch(
            gw,
            [
                _record("meter1", {"power": 1.5, "state": 2}, T0),
                _record("meter1", {"power": 1.7}, T0 + 1000),
                _record("meter2", {"name": "east", "alarm": True}, T0),
                _record(None, {"gw_cpu": 3.0}, T0),
            ],
        )
    assert reply["code"] == 200
    stored = [(r.device_key, r.point, r.value, r.time) for r in enos_emulator.records.points]
    assert stored == [
        ("meter1", "power", 1.5, T0),
        ("meter1", "state", 2, T0),
        ("meter1", "power", 1.7, T0 + 1000),
        ("meter2", "name", "east", T0),
        ("meter2", "alarm", True, T0),
        (GW_DK, "gw_cpu", 3.0, T0),
    ]
    assert {r.channel for r in enos_emulator.records.points} == {"post"}


async def test_batch_with_offline_sub_device(enos_emulator: EnosEmulator) -> None:
    """An offline sub-device rejects the whole batch (1212) unless allowOfflineSubDevice."""
    async with connect_gateway(enos_emulator) as gw:
        await gw.login("meter1")
        records = [_record("meter1", {"power": 1.0}), _record("meter2", {"power": 2.0})]
        assert (await _batch(gw, records))["code"] == 1212
        assert (await _batch(gw, records, resume=True))["code"] == 1212
        assert enos_emulator.records.points == []
        reply = await _batch(gw, records, resume=True, allow_offline=True)
        assert reply["code"] == 200
    assert [(r.device_key, r.channel) for r in enos_emulator.records.points] == [
        ("meter1", "resume"),
        ("meter2", "resume"),
    ]


async def test_batch_for_a_device_outside_the_topology_is_1212(
    enos_emulator: EnosEmulator,
) -> None:
    """allowOfflineSubDevice does not open devices of another (or no) gateway."""
    async with connect_gateway(enos_emulator) as gw:
        reply = await _batch(gw, [_record("stray", {"power": 1.0})], allow_offline=True)
    assert reply["code"] == 1212


async def test_invalid_points_reject_the_batch_or_are_skipped(enos_emulator: EnosEmulator) -> None:
    """1204 for the whole request; with skipInvalidMeasurepoints only bad points are dropped."""
    bad = [
        _record(
            "meter1",
            {
                "power": 1.0,
                "nope": 1,  # not in the model
                "energy": 1.5,  # long
                "power_q": 1,
                "state": 7,  # not an enum member
            },
        ),
        _record("meter1", {"power": {"value": 2.0, "quality": 0}}),  # no quality on power
        _record("meter1", {"voltage": {"value": 230.0, "quality": 12}}),  # quality 0-9
        _record("meter1", {"voltage": {"value": 231.0, "quality": 1}, "alarm": "yes"}),
    ]
    async with connect_gateway(enos_emulator) as gw:
        await gw.login("meter1")
        rejected = await _batch(gw, bad)
        assert rejected["code"] == 1204
        assert "nope" in rejected["message"]
        assert enos_emulator.records.points == []
        assert (await _batch(gw, bad, skip_invalid=True))["code"] == 200
    assert [(r.point, r.value, r.quality) for r in enos_emulator.records.points] == [
        ("power", 1.0, None),
        ("voltage", 231.0, 1),
    ]


async def test_single_post_with_an_invalid_point_is_1204(enos_emulator: EnosEmulator) -> None:
    """Single post has no skip flag: one bad value rejects it."""
    async with connect_gateway(enos_emulator) as gw:
        post = messages.measurepoint_post(
            GW_PK, GW_DK, id="1", measurepoints={"gw_cpu": "high"}, time_ms=T0
        )
        assert (await gw.send(post))["code"] == 1204
    assert enos_emulator.records.points == []


@pytest.mark.parametrize(
    "params",
    [
        {"measurepoints": {"gw_cpu": 1.0}},  # not a list
        [{"time": T0}],  # no measurepoints
        [{"productKey": SUB_PK, "measurepoints": {"power": 1.0}}],  # pk without dk
        [{"measurepoints": {"gw_cpu": 1.0}, "time": "yesterday"}],
        ["record"],
    ],
)
async def test_batch_structure_errors_are_1206(enos_emulator: EnosEmulator, params: Any) -> None:
    """Malformed batch structure -> 1206 and nothing stored."""
    async with connect_gateway(enos_emulator) as gw:
        reply = await gw.request(
            topics.measurepoint_post_batch(GW_PK, GW_DK),
            "thing.measurepoint.post.batch",
            params,
        )
    assert reply["code"] == 1206
    assert enos_emulator.records.points == []


async def test_python_sdk_batch_quirks_are_accepted(enos_emulator: EnosEmulator) -> None:
    """PY SDK's "" flags and empty-string keys (§3.5.2) mean false / the topic's device."""
    async with connect_gateway(enos_emulator) as gw:
        reply = await gw.request(
            topics.measurepoint_post_batch(GW_PK, GW_DK),
            "thing.measurepoint.post.batch",
            [{"productKey": "", "deviceKey": "", "measurepoints": {"gw_cpu": 5.0}, "time": T0}],
            allowOfflineSubDevice="",
            skipInvalidMeasurepoints="",
        )
    assert reply["code"] == 200
    assert [(r.device_key, r.point) for r in enos_emulator.records.points] == [(GW_DK, "gw_cpu")]


# --- envelope-level errors ---------------------------------------------------------------------


async def test_envelope_errors(enos_emulator: EnosEmulator) -> None:
    """1220 bad JSON, 1251 empty payload, 1260 method/topic mismatch, 1008 over 512 KiB."""
    topic = topics.measurepoint_post(GW_PK, GW_DK)
    async with connect_gateway(enos_emulator) as gw:
        assert (await gw.request_raw(topic, b"{not json", ""))["code"] == 1220
        assert (await gw.request_raw(topic, b"[1, 2]", ""))["code"] == 1220
        assert (await gw.request_raw(topic, b"", ""))["code"] == 1251
        mismatch = await gw.request(topic, "thing.measurepoint.resume", {"measurepoints": {}})
        assert mismatch["code"] == 1260
        big = {
            "id": "big",
            "version": "1.0",
            "method": "thing.measurepoint.post",
            "params": {"measurepoints": {"gw_cpu": 1.0}, "pad": "x" * (512 * 1024)},
        }
        oversize = await gw.request_raw(topic, json.dumps(big).encode(), "big")
        assert oversize["code"] == 1008
    assert enos_emulator.records.points == []
    assert enos_emulator.stats.replies_by_code == {1220: 2, 1251: 1, 1260: 1, 1008: 1}


async def test_topics_the_connection_may_not_write_are_1009(enos_emulator: EnosEmulator) -> None:
    """Another device's topic, a downstream topic and an unknown topic all get 1009."""
    async with connect_gateway(enos_emulator) as gw:
        other = await gw.request(
            topics.measurepoint_post("directPK", "dev1"),
            "thing.measurepoint.post",
            {"measurepoints": {}},
        )
        downstream = await gw.request(
            topics.measurepoint_set(GW_PK, GW_DK), "thing.service.measurepoint.set", {}
        )
        unknown = await gw.request(f"/sys/{GW_PK}/{GW_DK}/thing/whatever", "x", {})
        not_logged_in = await gw.request(
            topics.event_post(SUB_PK, "meter1", "overVoltage"),
            "thing.event.overVoltage.post",
            {"events": {"voltage": 300.0}},
        )
    assert [r["code"] for r in (other, downstream, unknown, not_logged_in)] == [1009] * 4


# --- events, attributes, model ------------------------------------------------------------------


async def test_events_are_validated_and_recorded(enos_emulator: EnosEmulator) -> None:
    """Event post: accepted and recorded; unknown event or param -> 1204."""
    async with connect_gateway(enos_emulator) as gw:
        await gw.login("meter1")
        ok = messages.event_post(
            SUB_PK,
            "meter1",
            id="1",
            event_id="overVoltage",
            params={"voltage": 251.0, "limit": 250.0},
            time_ms=T0,
        )
        assert (await gw.send(ok))["code"] == 200
        unknown = messages.event_post(
            SUB_PK, "meter1", id="2", event_id="meltdown", params={}, time_ms=T0
        )
        assert (await gw.send(unknown))["code"] == 1204
        bad_param = messages.event_post(
            SUB_PK, "meter1", id="3", event_id="overVoltage", params={"colour": 1}, time_ms=T0
        )
        assert (await gw.send(bad_param))["code"] == 1204
    events = enos_emulator.records.events
    assert [(e.device_key, e.event_id, e.params, e.time) for e in events] == [
        ("meter1", "overVoltage", {"voltage": 251.0, "limit": 250.0}, T0)
    ]


async def test_attributes_update_query_delete(enos_emulator: EnosEmulator) -> None:
    """Attribute update is recorded and queryable; unknown names -> 1204; bad shape -> 1207."""
    async with connect_gateway(enos_emulator) as gw:
        await gw.login("meter1")
        update = messages.attribute_update(
            SUB_PK, "meter1", id="1", attributes={"location": "roof", "serial": "S1"}
        )
        assert (await gw.send(update))["code"] == 200
        wrong = messages.attribute_update(SUB_PK, "meter1", id="2", attributes={"colour": "red"})
        assert (await gw.send(wrong))["code"] == 1204
        shape = await gw.request(
            topics.attribute_update(SUB_PK, "meter1"), "thing.attribute.update", {"x": 1}
        )
        assert shape["code"] == 1207
        query = messages.attribute_query(SUB_PK, "meter1", id="3", names=["location"])
        assert (await gw.send(query))["data"] == {"location": "roof"}
        delete = messages.attribute_delete(SUB_PK, "meter1", id="4", names=["location"])
        assert (await gw.send(delete))["code"] == 200
        everything = messages.attribute_query(SUB_PK, "meter1", id="5")
        assert (await gw.send(everything))["data"] == {"serial": "S1"}
    assert [a.attributes for a in enos_emulator.records.attributes] == [
        {"location": "roof", "serial": "S1"}
    ]


async def test_tsl_template_lists_the_model(enos_emulator: EnosEmulator) -> None:
    """thing.tsltemplate.get returns the measurepoints and events of the model, entries
    shaped like the Model Service's features (identifier, dataDefinition.dataType)."""
    async with connect_gateway(enos_emulator) as gw:
        await gw.login("meter1")
        reply = await gw.request(
            topics.tsl_template_get(SUB_PK, "meter1"), "thing.tsltemplate.get", {}
        )
    assert reply["code"] == 200
    assert reply["data"]["tslMeasurepointMap"]["voltage"] == {
        "identifier": "voltage",
        "dataDefinition": {"dataType": "DOUBLE"},
        "hasQuality": True,
    }
    assert reply["data"]["tslEventMap"] == {
        "overVoltage": {
            "identifier": "overVoltage",
            "outputData": [{"identifier": "voltage"}, {"identifier": "limit"}],
        }
    }


async def test_integration_channel_events(enos_emulator_factory: EmulatorFactory) -> None:
    """integration.event.post over a mode-4 connection: recorded; unknown device -> 1257."""
    config = EmulatorConfig.model_validate(
        {
            "models": {"m": {"events": {"trip": {}}}},
            "products": [{"product_key": "pk", "product_secret": "ps", "model": "m"}],
            "devices": [{"product_key": "pk", "device_key": "d1", "device_secret": "s"}],
        }
    )
    emu = await enos_emulator_factory(config)
    async with connect_device(emu, "pk", "%channel%", "ps", secure_mode=4) as channel:
        ok = messages.integration_event_post(
            "pk",
            id="1",
            records=[messages.IntegrationEventRecord("d1", {"trip": {"a": 1}}, T0)],
        )
        assert (await channel.send(ok))["code"] == 200
        missing = messages.integration_event_post(
            "pk", id="2", records=[messages.IntegrationEventRecord("d9", {"trip": {}}, T0)]
        )
        assert (await channel.send(missing))["code"] == 1257
    assert [(e.device_key, e.event_id, e.params, e.channel) for e in emu.records.events] == [
        ("d1", "trip", {"a": 1}, "integration")
    ]
    assert emu.records.events_of("thing") == []


# --- reply delivery ------------------------------------------------------------------------------


async def test_replies_need_a_subscription_wildcards_allowed(enos_emulator: EnosEmulator) -> None:
    """No SUBSCRIBE -> no reply (request still processed); a wildcard filter suffices."""
    async with connect_gateway(enos_emulator) as gw:
        unanswered = messages.measurepoint_post(
            GW_PK, GW_DK, id="1", measurepoints={"gw_cpu": 1.0}, time_ms=T0
        )
        never = gw.expect_reply(unanswered.reply_topic, "1")
        await gw.publish(unanswered.topic, unanswered.payload)
        await gw.subscribe(f"/sys/{GW_PK}/+/thing/measurepoint/#")
        second = messages.measurepoint_post(
            GW_PK, GW_DK, id="2", measurepoints={"gw_cpu": 2.0}, time_ms=T0
        )
        # Replies of one connection go out in order: had "1" been sent, it came first.
        assert (await gw.send(second, subscribe=False))["code"] == 200
        assert not never.done()
    assert [r.value for r in enos_emulator.records.points] == [1.0, 2.0]
    assert enos_emulator.stats.replies_unsubscribed == 1


async def test_auto_subscribe_option_delivers_unsubscribed_replies(
    enos_emulator_factory: EmulatorFactory,
) -> None:
    """With options.auto_subscribe every reply is delivered (the PY SDK's lost-subscription bug)."""
    emu = await enos_emulator_factory(default_emulator_config(auto_subscribe=True))
    async with connect_gateway(emu) as gw:
        post = messages.measurepoint_post(
            GW_PK, GW_DK, id="1", measurepoints={"gw_cpu": 1.0}, time_ms=T0
        )
        assert (await gw.send(post, subscribe=False))["code"] == 200


async def test_device_register_then_topology_and_login(enos_emulator: EnosEmulator) -> None:
    """thing.device.register issues a secret (702 if the key exists); it then joins and logs in."""
    topic = topics.device_register(GW_PK, GW_DK)
    entry = {"productKey": SUB_PK, "deviceKey": "newMeter", "deviceName": {"defaultValue": "n"}}
    async with connect_gateway(enos_emulator) as gw:
        reply = await gw.request(topic, "thing.device.register", [entry])
        assert reply["code"] == 200
        [created] = reply["data"]
        assert (created["productKey"], created["deviceKey"]) == (SUB_PK, "newMeter")
        secret = created["deviceSecret"]
        assert (await gw.request(topic, "thing.device.register", [entry]))["code"] == 702
        creds = SubDeviceCredentials(SUB_PK, "newMeter", secret)
        add = messages.topo_add(GW_PK, GW_DK, id="t", devices=[creds], timestamp=TIMESTAMP)
        assert (await gw.send(add))["code"] == 200
        assert (await gw.login("newMeter", secret))["code"] == 200


async def test_lone_surrogates_get_error_replies(enos_emulator: EnosEmulator) -> None:
    """JSON escapes of lone surrogates (not encodable as UTF-8) still get proper replies."""
    async with connect_gateway(enos_emulator) as gw:
        login = (
            b'{"id":"s1","version":"1.0","method":"combine.login","params":{"productKey":"subPK",'
            b'"deviceKey":"meter1","clientId":"\\ud800","timestamp":"1","signMethod":"sha256",'
            b'"sign":"00"}}'
        )
        reply = await gw.request_raw(topics.combine_login(GW_PK, GW_DK), login, "s1")
        assert reply["code"] == 742
        post = (
            b'{"id":"s2","version":"1.0","method":"thing.measurepoint.post",'
            b'"params":{"measurepoints":{"\\ud800":1},"time":1}}'
        )
        reply = await gw.request_raw(topics.measurepoint_post(GW_PK, GW_DK), post, "s2")
        assert reply["code"] == 1204
        odd_id = b'{"id":"\\ud800x","version":"1.0","method":"nope","params":{}}'
        reply = await gw.request_raw(topics.measurepoint_post(GW_PK, GW_DK), odd_id, "\ud800x")
        assert reply["code"] == 1260
        assert (await gw.send(messages.topo_get(GW_PK, GW_DK, id="s3")))["code"] == 200


async def test_tally_counts_points_order_and_freshness_without_point_records(
    enos_emulator: EnosEmulator,
) -> None:
    """Counting mode: points per channel and device, out-of-order records, live ages; with
    `trust_values` the model is not checked, without it invalid points still give 1204."""
    tally = enos_emulator.records.tally = PointTally()
    async with connect_gateway(enos_emulator) as gw:
        await gw.login("meter1")
        await gw.login("meter2")
        reply = await _batch(
            gw,
            [
                _record("meter1", {"power": 1.5, "state": 2}, T0),
                _record("meter1", {"power": 1.7, "nope": 1}, T0 + 1000),  # trusted
                _record("meter2", {"power": 2.0}, T0),
                _record("meter1", {"power": 1.6}, T0 + 1000),  # same time again
            ],
        )
        assert reply["code"] == 200
        assert (await _batch(gw, [_record("meter1", {"power": 1.0}, T0)], resume=True))[
            "code"
        ] == 200
        tally.trust_values = False
        assert (await _batch(gw, [_record("meter1", {"nope": 1}, T0 + 5000)]))["code"] == 1204
    assert enos_emulator.records.points == []
    assert tally.total("post") == 6
    assert tally.total("resume") == 1
    assert tally.points["post", (SUB_PK, "meter1")] == 5
    assert dict(tally.records) == {"post": 4, "resume": 1}
    assert dict(tally.out_of_order) == {"post": 1}
    assert [age for _, age in tally.post_ages_ms] == [
        at - t
        for (at, _), t in zip(tally.post_ages_ms, [T0, T0 + 1000, T0, T0 + 1000], strict=True)
    ]
    assert tally.first_ms["post"] <= tally.last_ms["post"]
    assert enos_emulator.records.counts()["post"] == 6
