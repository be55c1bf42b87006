"""EnOS message encoders/decoders: spec §2-3 examples, every data shape, malformed inputs."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gatewayd.enos import messages as m
from gatewayd.enos.codes import ReplyCode
from gatewayd.enos.messages import (
    CommandError,
    CommandKind,
    DeviceRef,
    IntegrationEventRecord,
    MalformedMessage,
    MeasurepointRecord,
    SubDeviceCredentials,
)

SUB = SubDeviceCredentials("subPK", "subDK", "subSecret")
LOGIN_SIGN = "ea80be0fe7b355e0e81503984a215fd22ee15183c57c0e8f30823603e53635de"


def body(request: m.Request) -> Any:
    """The request payload as JSON, after checking it is compact."""
    text = request.payload.decode("utf-8")
    assert ", " not in text
    assert ": " not in text
    return json.loads(text)


# --- requests -------------------------------------------------------------------------------


def test_combine_login_matches_spec_example() -> None:
    """§3.1: the daemon's login request, field by field, with the spec's sign."""
    req = m.combine_login("gwPK", "gwDK", id="101", device=SUB, timestamp="1700000000000")
    assert req.topic == "/ext/session/gwPK/gwDK/combine/login"
    assert req.reply_topic == "/ext/session/gwPK/gwDK/combine/login_reply"
    assert (req.id, req.method) == ("101", "combine.login")
    assert body(req) == {
        "id": "101",
        "version": "1.0",
        "method": "combine.login",
        "params": {
            "productKey": "subPK",
            "deviceKey": "subDK",
            "clientId": "subPKsubDK1700000000000",
            "timestamp": "1700000000000",
            "signMethod": "sha256",
            "sign": LOGIN_SIGN,
            "cleanSession": "true",
        },
    }


def test_combine_login_options() -> None:
    """cleanSession can be false or omitted; secureMode is sent as a string when set."""
    dev = SubDeviceCredentials("p", "d", "prodSecret", secure_mode=3)
    params = body(m.combine_login("g", "w", id="1", device=dev, timestamp="5", clean_session=None))[
        "params"
    ]
    assert "cleanSession" not in params
    assert params["secureMode"] == "3"
    params = body(
        m.combine_login("g", "w", id="1", device=SUB, timestamp="5", clean_session=False)
    )["params"]
    assert params["cleanSession"] == "false"
    assert "secureMode" not in params


def test_combine_login_batch_matches_spec_example() -> None:
    """§3.2: shared clientId/timestamp, per-device signs from the spec."""
    req = m.combine_login_batch(
        "gwPK",
        "gwDK",
        id="102",
        devices=[
            SubDeviceCredentials("subPK", "subDK1", "sec1"),
            SubDeviceCredentials("subPK", "subDK2", "sec2"),
        ],
        timestamp="1700000000000",
    )
    assert req.topic == "/ext/session/gwPK/gwDK/combine/login/batch"
    assert req.reply_topic.endswith("/combine/login/batch_reply")
    assert body(req)["params"] == {
        "clientId": "login.batch",
        "timestamp": "1700000000000",
        "signMethod": "sha256",
        "subDevices": [
            {
                "productKey": "subPK",
                "deviceKey": "subDK1",
                "sign": "2429e23575656d5e13dc2f3243f2d5d684bb4a3509e4dd8fbc5fab3e71df4e59",
            },
            {
                "productKey": "subPK",
                "deviceKey": "subDK2",
                "sign": "1bdc775ed51f98a4f6140530b60ae9ebe9b5d67e230bb1f80b4ea0370e22495b",
            },
        ],
    }
    assert body(req)["method"] == "combine.login.batch"


def test_logout_and_topology_requests() -> None:
    """§3.3-3.4: logout, topo add (signed, `{pk}.{dk}.{ts}` clientId), get, delete."""
    logout = m.combine_logout("g", "w", id="103", device=DeviceRef("subPK", "subDK"))
    assert logout.topic == "/ext/session/g/w/combine/logout"
    assert body(logout) == {
        "id": "103",
        "version": "1.0",
        "method": "combine.logout",
        "params": {"productKey": "subPK", "deviceKey": "subDK"},
    }
    add = m.topo_add("g", "w", id="104", devices=[SUB], timestamp="1700000000000")
    assert add.topic == "/sys/g/w/thing/topo/add"
    (entry,) = body(add)["params"]
    assert entry["clientId"] == "subPK.subDK.1700000000000"
    assert entry["signMethod"] == "sha256"
    expected_sign = m.sign(
        m.login_sign_params("subPK", "subDK", "subPK.subDK.1700000000000", "1700000000000"),
        "subSecret",
    )
    assert entry["sign"] == expected_sign
    get = m.topo_get("g", "w", id="105")
    assert (get.topic, body(get)["params"], get.method) == (
        "/sys/g/w/thing/topo/get",
        {},
        "thing.topo.get",
    )
    delete = m.topo_delete("g", "w", id="106", devices=[DeviceRef("a", "b"), DeviceRef("c", "d")])
    assert delete.topic == "/sys/g/w/thing/topo/delete"
    assert body(delete)["params"] == [
        {"productKey": "a", "deviceKey": "b"},
        {"productKey": "c", "deviceKey": "d"},
    ]


def test_measurepoint_post_and_resume_single() -> None:
    """§3.5.1/3.5.3: per-device topics, value shapes incl. quality, optional time."""
    points = {
        "Power": m.point_value(1.0, 9),
        "temp": m.point_value(1.02),
        "branchCurr": ["1.02", "2.02", "7.93"],
        "mp_struct": {"sub_age": 100, "sub_gender": "male"},
    }
    post = m.measurepoint_post("p", "d", id="106", measurepoints=points, time_ms=1700000000000)
    assert post.topic == "/sys/p/d/thing/measurepoint/post"
    assert body(post) == {
        "id": "106",
        "version": "1.0",
        "method": "thing.measurepoint.post",
        "params": {
            "measurepoints": {
                "Power": {"value": 1.0, "quality": 9},
                "temp": 1.02,
                "branchCurr": ["1.02", "2.02", "7.93"],
                "mp_struct": {"sub_age": 100, "sub_gender": "male"},
            },
            "time": 1700000000000,
        },
    }
    resume = m.measurepoint_resume("p", "d", id="108", measurepoints={"t": 1}, time_ms=None)
    assert resume.topic == "/sys/p/d/thing/measurepoint/resume"
    assert body(resume)["method"] == "thing.measurepoint.resume"
    assert body(resume)["params"] == {"measurepoints": {"t": 1}}


@pytest.mark.parametrize("resume", [False, True])
def test_measurepoint_batches_with_flags(resume: bool) -> None:
    """§3.5.2: top-level boolean flags, entries with and without device keys."""
    records = [
        MeasurepointRecord("subPK", "subDK1", 1700000000000, {"temp": 21.5}),
        MeasurepointRecord(None, None, 1700000000000, {"gw_cpu": 12}),
        MeasurepointRecord("subPK", "subDK1", None, {"x": "on"}),
    ]
    req = m.measurepoint_batch(
        "g", "w", id="107", records=records, resume=resume, allow_offline_sub_device=resume
    )
    kind = "resume" if resume else "post"
    assert req.topic == f"/sys/g/w/thing/measurepoint/{kind}/batch"
    assert req.method == f"thing.measurepoint.{kind}.batch"
    assert body(req) == {
        "id": "107",
        "version": "1.0",
        "method": f"thing.measurepoint.{kind}.batch",
        "allowOfflineSubDevice": resume,
        "skipInvalidMeasurepoints": False,
        "params": [
            {
                "productKey": "subPK",
                "deviceKey": "subDK1",
                "measurepoints": {"temp": 21.5},
                "time": 1700000000000,
            },
            {"measurepoints": {"gw_cpu": 12}, "time": 1700000000000},
            {"productKey": "subPK", "deviceKey": "subDK1", "measurepoints": {"x": "on"}},
        ],
    }


def test_empty_batch_is_valid_json() -> None:
    """A batch with no records still encodes (params `[]`)."""
    req = m.measurepoint_batch("g", "w", id="1", records=[], resume=False)
    assert body(req)["params"] == []


def test_batch_payload_equals_plain_json_encoding() -> None:
    """The head+records+tail fast path produces what json.dumps would."""
    records = [MeasurepointRecord("p", "d", 5, {"a": 1, "ü": "é"})]
    req = m.measurepoint_batch(
        "g", "w", id="9", records=records, resume=False, skip_invalid_measurepoints=True
    )
    expected = json.dumps(
        {
            "id": "9",
            "version": "1.0",
            "method": "thing.measurepoint.post.batch",
            "allowOfflineSubDevice": False,
            "skipInvalidMeasurepoints": True,
            "params": [m.record_params(records[0])],
        },
        separators=(",", ":"),
        ensure_ascii=False,
    ).encode()
    assert req.payload == expected


def test_nan_is_refused_with_a_clear_error() -> None:
    """NaN is not JSON; the encoder says so instead of sending what EnOS rejects."""
    with pytest.raises(ValueError, match="NaN"):
        m.measurepoint_post("p", "d", id="1", measurepoints={"t": float("nan")}, time_ms=1)


def test_event_attribute_and_integration_requests() -> None:
    """§3.6 event/attributes and §3.8 integration event post (seeds 001/002)."""
    event = m.event_post(
        "p", "d", id="109", event_id="overTemp", params={"temp": 120.0}, time_ms=1700000000000
    )
    assert event.topic == "/sys/p/d/thing/event/overTemp/post"
    assert body(event) == {
        "id": "109",
        "version": "1.0",
        "method": "thing.event.overTemp.post",
        "params": {"events": {"temp": 120.0}, "time": 1700000000000},
    }
    update = m.attribute_update("p", "d", id="110", attributes={"attr2": 1.02})
    assert update.topic == "/sys/p/d/thing/attribute/update"
    assert body(update)["params"] == {"attributes": {"attr2": 1.02}}
    query = m.attribute_query("p", "d", id="111")
    assert (query.method, body(query)["params"]) == ("thing.attribute.query", {"attributes": []})
    delete = m.attribute_delete("p", "d", id="112", names=["attr1"])
    assert (delete.method, body(delete)["params"]) == (
        "thing.attribute.delete",
        {"attributes": ["attr1"]},
    )
    integ = m.integration_event_post(
        "pk",
        id="123",
        records=[
            IntegrationEventRecord("device1", {"eventId1": {"alarm": 9, "level": 3}}, 123456),
            IntegrationEventRecord("device2", {"eventId2": {"result": "ok"}}, 123456),
        ],
    )
    assert integ.topic == "/sys/pk/integration/event/post"
    assert body(integ) == {
        "id": "123",
        "version": "1.0",
        "method": "integration.event.post",
        "params": [
            {
                "deviceKey": "device1",
                "events": {"eventId1": {"alarm": 9, "level": 3}},
                "time": 123456,
            },
            {"deviceKey": "device2", "events": {"eventId2": {"result": "ok"}}, "time": 123456},
        ],
    }


# --- replies --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "data"),
    [
        ('{"id":"1","code":200,"data":{}}', {}),
        ('{"id":"1","code":200,"data":{"assetId":"x"}}', {"assetId": "x"}),
        ('{"id":"1","code":200,"data":[{"deviceKey":"a"}]}', [{"deviceKey": "a"}]),
        ('{"id":"1","code":200,"data":""}', ""),
        ('{"id":"1","code":200,"data":"1"}', "1"),
        ('{"id":"1","code":200,"data":null}', None),
        ('{"id":"1","code":200}', None),
    ],
)
def test_reply_accepts_every_data_shape(raw: str, data: Any) -> None:
    """§2.2/§7.9: `{}`, object, array, "", "1", null and missing all decode."""
    reply = m.decode_reply(raw.encode())
    assert (reply.id, reply.code, reply.message, reply.data, reply.ok) == ("1", 200, "", data, True)


@pytest.mark.parametrize(
    ("code", "expected"),
    [("1101", 1101), (" 200 ", 200), (1204, 1204), (1204.0, 1204), ("-1", -1)],
)
def test_reply_code_int_or_numeric_string(code: Any, expected: int) -> None:
    """Codes arrive as ints or numeric strings (PY SDK)."""
    payload = json.dumps({"id": "7", "code": code, "message": "m"})
    reply = m.decode_reply(payload)
    assert (reply.code, reply.message) == (expected, "m")


def test_reply_integer_id_and_odd_message() -> None:
    """Older docs type id as Long; a non-string message is kept as JSON text."""
    reply = m.decode_reply(b'{"id":42,"code":"723","message":{"x":1},"data":null}')
    assert (reply.id, reply.code, reply.message, reply.ok) == ("42", 723, '{"x": 1}', False)


@pytest.mark.parametrize(
    ("raw", "reason", "id"),
    [
        (b"", "payload is empty", None),
        (b"not json", "not valid JSON", None),
        (b"\xff\xfe", "not valid JSON", None),
        (b"[1,2]", "JSON list, not an object", None),
        (b'{"code":200}', "no usable id", None),
        (b'{"id":"","code":200}', "no usable id", None),
        (b'{"id":true,"code":200}', "no usable id", None),
        (b'{"id":"5"}', "no code", "5"),
        (b'{"id":"5","code":"ok"}', "not an integer", "5"),
        (b'{"id":"5","code":true}', "boolean", "5"),
        (b'{"id":"5","code":12.5}', "not an integer", "5"),
    ],
)
def test_malformed_replies_raise_with_reason(raw: bytes, reason: str, id: str | None) -> None:
    """Unusable replies raise MalformedMessage with a reason (and the id when readable)."""
    with pytest.raises(MalformedMessage, match=reason) as info:
        m.decode_reply(raw)
    assert info.value.id == id


def test_encode_reply_round_trip() -> None:
    """encode_reply produces compact JSON that decode_reply reads back."""
    raw = m.encode_reply("9001", 200)
    assert raw == b'{"id":"9001","code":200,"message":"","data":{}}'
    out = m.decode_reply(m.encode_reply("9002", 2006, {"p": 1.3}, "out of range"))
    assert out == m.Reply("9002", 2006, "out of range", {"p": 1.3})


@given(
    id=st.text(alphabet="0123456789", min_size=1, max_size=19),
    code=st.integers(min_value=-(2**31), max_value=2**31),
    message=st.text(max_size=30),
    data=st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=5),
        lambda inner: (
            st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
        ),
        max_leaves=8,
    ),
)
def test_reply_round_trip_property(id: str, code: int, message: str, data: Any) -> None:
    """Any reply we encode decodes to the same values (None data becomes {})."""
    reply = m.decode_reply(m.encode_reply(id, code, data, message))
    assert reply == m.Reply(id, code, message, {} if data is None else data)


def test_login_reply_device_new_and_old_shapes() -> None:
    """2.1+ login replies carry the device; 2019 replies carry `{}`."""
    new = m.decode_reply(
        b'{"id":"101","code":200,"message":"success",'
        b'"data":{"assetId":"t5CM9W2b","productKey":"subPK","deviceKey":"subDK"}}'
    )
    assert m.login_reply_device(new) == m.LoggedInDevice("subPK", "subDK", "t5CM9W2b", None)
    assert m.login_reply_device(m.decode_reply(b'{"id":"1","code":200,"data":{}}')) is None


def test_login_batch_result_all_three_spec_shapes() -> None:
    """§3.2: full success, partial (723) and whole-request failure (1220)."""
    ok = m.login_batch_result(
        m.decode_reply(
            b'{"id":"102","code":200,"data":{"loginedSubDevices":[{"assetId":"LhBLfxpG",'
            b'"deviceKey":"subDK1","productKey":"subPK"},{"assetId":"kAHwVbyl",'
            b'"deviceKey":"subDK2","productKey":"subPK","deviceSecret":"s3"}],'
            b'"failedSubDevices":[]},"message":""}'
        )
    )
    assert ok.logged_in == (
        m.LoggedInDevice("subPK", "subDK1", "LhBLfxpG"),
        m.LoggedInDevice("subPK", "subDK2", "kAHwVbyl", "s3"),
    )
    assert ok.failed == ()
    assert not ok.whole_request_failed
    partial = m.login_batch_result(
        m.decode_reply(
            b'{"id":"102","code":723,"data":{"loginedSubDevices":[{"assetId":"LhBLfxpG",'
            b'"deviceKey":"subDK1","productKey":"subPK"}],"failedSubDevices":'
            b'[{"deviceKey":"subDK2","productKey":"subPK"}]},'
            b'"message":"subPK&subDK2 has error: Device is disable;"}'
        )
    )
    assert [d.device_key for d in partial.logged_in] == ["subDK1"]
    assert partial.failed == (DeviceRef("subPK", "subDK2"),)
    assert (partial.code, partial.whole_request_failed) == (723, False)
    assert "Device is disable" in partial.message
    failed = m.login_batch_result(
        m.decode_reply(
            b'{"id":"102","code":1220,"data":{"loginedSubDevices":[],"failedSubDevices":[]},'
            b'"message":"payload format error, ..."}'
        )
    )
    assert failed.whole_request_failed


@pytest.mark.parametrize("data", ["null", '""', '"1"', "[]", '{"loginedSubDevices":"x"}'])
def test_login_batch_result_tolerates_odd_data(data: str) -> None:
    """Odd data shapes give empty lists, never an exception."""
    result = m.login_batch_result(m.decode_reply(f'{{"id":"1","code":500,"data":{data}}}'))
    assert (result.logged_in, result.failed, result.whole_request_failed) == ((), (), True)


def test_login_batch_result_skips_unusable_entries() -> None:
    """Entries without string keys are skipped; the rest are kept."""
    result = m.login_batch_result(
        m.Reply(
            "1",
            200,
            "",
            {
                "loginedSubDevices": [
                    {"productKey": "p"},
                    5,
                    {"productKey": "p", "deviceKey": "d"},
                ],
                "failedSubDevices": [{"productKey": 1, "deviceKey": "x"}],
            },
        )
    )
    assert result.logged_in == (m.LoggedInDevice("p", "d"),)
    assert result.failed == ()


# --- commands -------------------------------------------------------------------------------


def cmd(topic: str, obj: Any) -> m.Command:
    """Decode a command given as a Python object."""
    return m.decode_command(topic, json.dumps(obj).encode())


def cmd_error(topic: str, payload: bytes | Any) -> CommandError:
    """Decode a command that must fail and return the error."""
    raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    with pytest.raises(CommandError) as info:
        m.decode_command(topic, raw)
    return info.value


SET_TOPIC = "/sys/subPK/subDK/thing/service/measurepoint/set"


def test_measurepoint_set_command() -> None:
    """§3.7 set: params object, target keys from the topic, reply topic and payload."""
    c = cmd(
        SET_TOPIC,
        {
            "id": "9001",
            "version": "1.0",
            "method": "thing.service.measurepoint.set",
            "params": {"temperature": 30.5},
        },
    )
    assert (c.kind, c.id, c.params, c.product_key, c.device_key) == (
        CommandKind.MEASUREPOINT_SET,
        "9001",
        {"temperature": 30.5},
        "subPK",
        "subDK",
    )
    assert c.reply_topic == SET_TOPIC + "_reply"
    assert c.reply() == b'{"id":"9001","code":200,"message":"","data":{}}'


def test_measurepoint_get_command() -> None:
    """§3.7 get: params is an array of point ids."""
    c = cmd(
        "/sys/p/d/thing/service/measurepoint/get",
        {"id": "1", "method": "thing.service.measurepoint.get", "params": ["power", "temp"]},
    )
    assert (c.kind, c.params) == (CommandKind.MEASUREPOINT_GET, ["power", "temp"])


def test_service_command_with_and_without_params() -> None:
    """§3.7 service invoke; a service without inputs may omit params."""
    c = cmd(
        "/sys/p/d/thing/service/reset",
        {
            "id": "9002",
            "version": "1.0",
            "method": "thing.service.reset",
            "params": {"Power": "on", "WindState": 2},
        },
    )
    assert (c.kind, c.service_id, c.params) == (
        CommandKind.SERVICE,
        "reset",
        {"Power": "on", "WindState": 2},
    )
    assert c.reply_topic == "/sys/p/d/thing/service/reset_reply"
    bare = cmd("/sys/p/d/thing/service/reboot", {"id": "3", "method": "thing.service.reboot"})
    assert (bare.service_id, bare.params) == ("reboot", {})


@pytest.mark.parametrize(
    ("suffix", "method", "kind"),
    [
        ("enable", "combine.enable", CommandKind.COMBINE_ENABLE),
        ("disable", "combine.disable", CommandKind.COMBINE_DISABLE),
        ("delete", "combine.delete", CommandKind.COMBINE_DELETE),
    ],
)
def test_combine_commands(suffix: str, method: str, kind: CommandKind) -> None:
    """§3.7 combine.*: gateway topic, sub-devices in params."""
    c = cmd(
        f"/ext/session/gwPK/gwDK/combine/{suffix}",
        {
            "id": "9003",
            "version": "1.0",
            "method": method,
            "params": [{"productKey": "subPK", "deviceKey": "subDK"}],
        },
    )
    assert (c.kind, c.product_key, c.device_key) == (kind, "gwPK", "gwDK")
    assert c.devices == (DeviceRef("subPK", "subDK"),)
    assert c.reply_topic == f"/ext/session/gwPK/gwDK/combine/{suffix}_reply"


def test_activate_info_command() -> None:
    """§1.6: the activation message carries the new device secret."""
    c = cmd(
        "/ext/session/pk/dk/thing/activate/info",
        {
            "id": "1",
            "version": "1.0",
            "method": "thing.activate.info",
            "params": {
                "assetId": "12344",
                "productKey": "pk",
                "deviceKey": "dk",
                "deviceSecret": "xxxxxx",
            },
        },
    )
    assert c.kind is CommandKind.ACTIVATE_INFO
    assert c.activation == m.Activation("pk", "dk", "xxxxxx", "12344")


def test_command_without_method_uses_topic() -> None:
    """A missing method is tolerated: the topic says what the command is."""
    c = cmd(SET_TOPIC, {"id": "1", "params": {"a": 1}})
    assert c.method == "thing.service.measurepoint.set"


@pytest.mark.parametrize(
    ("payload", "reason", "code", "id"),
    [
        (b"{not json", "not valid JSON", ReplyCode.COMMAND_MALFORMED, None),
        (b"", "payload is empty", ReplyCode.COMMAND_MALFORMED, None),
        (b"[1]", "not an object", ReplyCode.COMMAND_MALFORMED, None),
        (
            {"method": "thing.service.measurepoint.set", "params": {"a": 1}},
            "no usable id",
            ReplyCode.COMMAND_MALFORMED,
            None,
        ),
        (
            {"id": "4", "method": "thing.service.reset", "params": {"a": 1}},
            "does not match topic",
            ReplyCode.COMMAND_METHOD_MISMATCH,
            "4",
        ),
        (
            {"id": "4", "method": 5, "params": {"a": 1}},
            "not a string",
            ReplyCode.COMMAND_MALFORMED,
            "4",
        ),
        (
            {"id": "4", "params": [1]},
            "must be a non-empty object",
            ReplyCode.COMMAND_INVALID_PARAMS,
            "4",
        ),
        ({"id": "4", "params": {}}, "got empty object", ReplyCode.COMMAND_INVALID_PARAMS, "4"),
        ({"id": "4"}, "got null/missing", ReplyCode.COMMAND_INVALID_PARAMS, "4"),
        ({"id": 4, "params": "x"}, "got string", ReplyCode.COMMAND_INVALID_PARAMS, "4"),
    ],
)
def test_malformed_set_commands(payload: Any, reason: str, code: int, id: str | None) -> None:
    """Each defect gets a precise reason, a code >= 2000, and the id when it was readable."""
    err = cmd_error(SET_TOPIC, payload)
    assert reason in err.reason
    assert (err.code, err.id) == (code, id)
    assert err.reply_topic == SET_TOPIC + "_reply"
    reply = err.reply_payload()
    if id is None:
        assert reply is None
    else:
        assert reply is not None
        decoded = m.decode_reply(reply)
        assert (decoded.id, decoded.code) == (id, code)
        assert reason in decoded.message


@pytest.mark.parametrize(
    ("topic", "params", "reason"),
    [
        ("/sys/p/d/thing/service/measurepoint/get", {"a": 1}, "array of measurepoint ids"),
        ("/sys/p/d/thing/service/measurepoint/get", ["a", 1], "array of measurepoint ids"),
        ("/sys/p/d/thing/service/reset", [1], "object of service input"),
        ("/ext/session/g/w/combine/disable", {"productKey": "p"}, "array of {productKey"),
        ("/ext/session/g/w/combine/disable", [{"productKey": "p"}], "array of {productKey"),
        (
            "/ext/session/p/d/thing/activate/info",
            {"productKey": "p", "deviceKey": "d"},
            "deviceSecret",
        ),
        ("/ext/session/p/d/thing/activate/info", [], "deviceSecret"),
    ],
)
def test_wrong_params_per_command_kind(topic: str, params: Any, reason: str) -> None:
    """Wrong params shapes for get/service/combine/activate give COMMAND_INVALID_PARAMS."""
    parsed = m.topics.parse_topic(topic)
    err = cmd_error(topic, {"id": "8", "method": parsed.method, "params": params})
    assert reason in err.reason
    assert (err.code, err.id) == (ReplyCode.COMMAND_INVALID_PARAMS, "8")


@pytest.mark.parametrize(
    ("topic", "reply_topic"),
    [
        ("/sys/p/d/thing/disable", "/sys/p/d/thing/disable_reply"),
        ("/sys/p/d/thing/model/down_raw", "/sys/p/d/thing/model/down_raw_reply"),
        ("/sys/p/d/thing/measurepoint/post", "/sys/p/d/thing/measurepoint/post_reply"),
        ("/sys/p/d/thing/service/reset_reply", None),
        ("/nonsense", None),
    ],
)
def test_non_command_topics(topic: str, reply_topic: str | None) -> None:
    """Unhandled/unknown topics give 1101; replies and unknown topics are not answered."""
    err = cmd_error(topic, {"id": "6", "params": {}})
    assert (err.code, err.id, err.reply_topic) == (
        ReplyCode.COMMAND_HANDLER_NOT_REGISTERED,
        "6",
        reply_topic,
    )
    assert (err.reply_payload() is None) == (reply_topic is None)


@given(st.binary(max_size=64))
def test_decode_command_never_raises_anything_but_command_error(payload: bytes) -> None:
    """Arbitrary bytes on a command topic never crash the decoder."""
    error: CommandError | None = None
    try:
        m.decode_command(SET_TOPIC, payload)
    except CommandError as err:
        error = err
    assert error is None or error.code >= ReplyCode.COMMAND_HANDLER_NOT_REGISTERED


@pytest.mark.parametrize(
    ("sent", "echoed"),
    [(424242, b'"id":424242,'), ("424242", b'"id":"424242",'), (0, b'"id":0,')],
)
def test_command_reply_keeps_the_id_json_type(sent: str | int, echoed: bytes) -> None:
    """§2.2: a reply echoes the id with its JSON type, for answers and for error replies."""
    command = cmd(SET_TOPIC, {"id": sent, "params": {"p": 1}})
    assert command.id == sent
    assert type(command.id) is type(sent)
    assert command.reply().startswith(b"{" + echoed)
    error = cmd_error(SET_TOPIC, {"id": sent, "params": "x"})
    reply = error.reply_payload()
    assert reply is not None
    assert reply.startswith(b"{" + echoed)
    assert error.id == str(sent)  # for log lines and messages
