"""The spec-written cloud's pure parts checked against enos-protocol.md's own vectors.

If these pass, the end-to-end test's independent checks (tests/peers) read the spec the way
its worked examples do, so a disagreement with the daemon is the daemon's.
"""

from __future__ import annotations

import json

import pytest

from tests.peers import mqtt_wire
from tests.peers.enos_auth import (
    check_connect,
    login_sign_ok,
    parse_mqtt_client_id,
    sign,
    sign_matches,
)
from tests.peers.enos_payloads import (
    check_batch,
    check_envelope,
    check_id_and_version,
    is_command_reply,
    route,
)

DOCS = {"clientId": "123456", "deviceKey": "tPbZGCdmaE", "productKey": "KV315idW",
        "timestamp": "1548753362502"}  # fmt: skip
DOCS_SECRET = "M3yy874uGY8INjEGddTR"
GW_SIGN = "ac05757b2d47058ce1474547fc3ee8ee568045237fcebfa314b52573c1df1f32"
GW_CLIENT_ID = "gwDK|securemode=2,signmethod=sha256,timestamp=1700000000000|"
SECRETS = {("gwPK", "gwDK"): "gwSecret"}


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ("sha256", "a3c438ddcb6eaa0cf07ad1c36655245ccdd67aa1917e4cc4eff57bf6f464abff"),
        ("hmacsha256", "a3c438ddcb6eaa0cf07ad1c36655245ccdd67aa1917e4cc4eff57bf6f464abff"),
        ("sha1", "E42C1186C3BFFE98E1EA8AB320CD800D579212AA"),
        ("hmacSha1", "E42C1186C3BFFE98E1EA8AB320CD800D579212AA"),
        ("md5", "10af8dc95019a1fe05cd146a9e64778b"),
    ],
)
def test_sign_matches_the_docs_vector(method: str, expected: str) -> None:
    """§1.5 docs example: every digest name gives the documented hex (any case)."""
    assert sign(DOCS, DOCS_SECRET, method) == expected.lower()
    assert sign_matches(DOCS, DOCS_SECRET, method, expected)
    assert sign_matches(DOCS, DOCS_SECRET, method, expected.upper())


def test_sign_matches_the_gateway_and_sub_device_vectors() -> None:
    """§1.5 SDK-style gateway row and §3.1 sub-device login row."""
    gateway = {"clientId": "gwDK", "deviceKey": "gwDK", "productKey": "gwPK",
               "timestamp": "1700000000000"}  # fmt: skip
    assert sign(gateway, "gwSecret", "sha256") == GW_SIGN
    sub = {"clientId": "subPKsubDK1700000000000", "deviceKey": "subDK", "productKey": "subPK",
           "timestamp": "1700000000000"}  # fmt: skip
    assert sign(sub, "subSecret", "sha256") == (
        "ea80be0fe7b355e0e81503984a215fd22ee15183c57c0e8f30823603e53635de"
    )


def test_sign_is_plain_digest_not_hmac_and_refuses_unknown_methods() -> None:
    """A wrong secret or an unknown method never matches."""
    assert not sign_matches(DOCS, "other", "sha256", sign(DOCS, DOCS_SECRET, "sha256"))
    assert not sign_matches(DOCS, DOCS_SECRET, "sha512", "00")
    with pytest.raises(ValueError, match="unknown signmethod"):
        sign(DOCS, DOCS_SECRET, "sha512")


def test_mqtt_client_id_is_split_into_identifier_and_parameters() -> None:
    """§1.3 format; spaces after commas are tolerated (§7.4), a missing key is not."""
    parsed = parse_mqtt_client_id("dk|securemode=2, signmethod=sha256, timestamp=1.5|")
    assert parsed.client_id == "dk"
    assert parsed.params == {"securemode": "2", "signmethod": "sha256", "timestamp": "1.5"}
    for bad in ("dk", "dk|securemode=2,signmethod=sha256|", "|securemode=2|", "dk|a=1"):
        with pytest.raises(ValueError, match="clientId"):
            parse_mqtt_client_id(bad)


def test_connect_of_the_spec_example_is_accepted_in_either_hex_case() -> None:
    """§1.5 "full CONNECT for the second row" passes; uppercase hex passes too (§7.1)."""
    for password in (GW_SIGN, GW_SIGN.upper()):
        verdict = check_connect(GW_CLIENT_ID, "gwDK&gwPK", password.encode(), SECRETS)
        assert (verdict.accepted, verdict.product_key, verdict.device_key) == (
            True, "gwPK", "gwDK",
        )  # fmt: skip


@pytest.mark.parametrize(
    ("client_id", "username", "password", "reason"),
    [
        (GW_CLIENT_ID, "gwPK&gwDK", GW_SIGN, "unknown device"),  # keys swapped (§1.4)
        (GW_CLIENT_ID, "gwDK&gwPK", GW_SIGN[:-1] + "0", "not the sign"),
        (GW_CLIENT_ID.replace("1700000000000", "1700000000001"), "gwDK&gwPK", GW_SIGN,
         "not the sign"),
        ("gwDK", "gwDK&gwPK", GW_SIGN, "clientId"),
        (GW_CLIENT_ID.replace("securemode=2", "securemode=3"), "gwDK&gwPK", GW_SIGN,
         "securemode"),
        (GW_CLIENT_ID, "gwDK", GW_SIGN, "username"),
    ],
)  # fmt: skip
def test_connect_with_a_wrong_field_is_refused(
    client_id: str, username: str, password: str, reason: str
) -> None:
    """Each credential field matters: the verdict names what is wrong."""
    verdict = check_connect(client_id, username, password.encode(), SECRETS)
    assert not verdict.accepted
    assert reason in verdict.reason


def test_connect_packet_parsed_from_hand_written_bytes() -> None:
    """A CONNECT typed out byte by byte (MQTT 3.1.1 §3.1) parses to its fields."""
    body = (
        b"\x00\x04MQTT\x04\xc2\x00\x3c"  # name, level 4, user+password+clean, keepalive 60
        b"\x00\x02id" b"\x00\x03u&p" b"\x00\x02pw"
    )  # fmt: skip
    raw = bytes([0x10, len(body)]) + body
    packet = mqtt_wire.Packet(1, 0, body, raw)
    connect = mqtt_wire.parse_connect(packet)
    assert connect == mqtt_wire.Connect("MQTT", 4, True, 60, "id", "u&p", b"pw", None)
    assert mqtt_wire.build_connect("id", "u&p", "pw") == raw
    with pytest.raises(mqtt_wire.MalformedPacket):
        mqtt_wire.parse_connect(mqtt_wire.Packet(1, 0, body[:-1], raw[:-1]))


def test_remaining_length_and_qos0_publish_bytes() -> None:
    """§2.2.3 examples (127, 128, 16383, 16384) and a PUBLISH typed out by hand."""
    assert mqtt_wire.encode_remaining_length(127) == b"\x7f"
    assert mqtt_wire.encode_remaining_length(128) == b"\x80\x01"
    assert mqtt_wire.encode_remaining_length(16383) == b"\xff\x7f"
    assert mqtt_wire.encode_remaining_length(16384) == b"\x80\x80\x01"
    assert mqtt_wire.build_publish_qos0("a/b", b"{}") == b"\x30\x07\x00\x03a/b{}"
    assert mqtt_wire.build_connack(4) == b"\x20\x02\x00\x04"


def test_login_signs_of_the_spec_examples() -> None:
    """§3.1 single login and §3.2 batch login examples verify; a changed field fails."""
    single = {"productKey": "subPK", "deviceKey": "subDK", "clientId": "subPKsubDK1700000000000",
              "timestamp": "1700000000000", "signMethod": "sha256",
              "sign": "ea80be0fe7b355e0e81503984a215fd22ee15183c57c0e8f30823603e53635de",
              "cleanSession": "true"}  # fmt: skip
    assert login_sign_ok(single, {}, "subSecret") is None
    lower = {k if k != "signMethod" else "signmethod": v for k, v in single.items()}
    assert login_sign_ok(lower, {}, "subSecret") is None  # §7.7: both spellings
    assert login_sign_ok({**single, "timestamp": "1"}, {}, "subSecret") == "sign check failed"
    assert login_sign_ok({**single, "timestamp": 1700000000000}, {}, "subSecret") == (
        "timestamp is int, not a string"
    )
    shared = {"clientId": "login.batch", "timestamp": "1700000000000", "signMethod": "sha256"}
    for dk, secret, given in (
        ("subDK1", "sec1", "2429e23575656d5e13dc2f3243f2d5d684bb4a3509e4dd8fbc5fab3e71df4e59"),
        ("subDK2", "sec2", "1bdc775ed51f98a4f6140530b60ae9ebe9b5d67e230bb1f80b4ea0370e22495b"),
    ):
        entry = {"productKey": "subPK", "deviceKey": dk, "sign": given}
        assert login_sign_ok(entry, shared, secret) is None
        assert login_sign_ok(entry, shared, "wrong") == "sign check failed"


SPEC_BATCH = {
    "id": "107", "version": "1.0", "method": "thing.measurepoint.post.batch",
    "allowOfflineSubDevice": False, "skipInvalidMeasurepoints": False,
    "params": [
        {"productKey": "subPK", "deviceKey": "subDK1",
         "measurepoints": {"temp": 21.5, "Power": {"value": 2.0, "quality": 9}},
         "time": 1700000000000},
        {"productKey": "subPK", "deviceKey": "subDK1",
         "measurepoints": {"temp": 21.7}, "time": 1700000001000},
        {"measurepoints": {"gw_cpu": 12}, "time": 1700000000000},
    ],
}  # fmt: skip


def test_the_spec_batch_example_is_valid() -> None:
    """§3.5.2's example passes the checks: three records, keys absent for the gateway."""
    assert check_envelope(SPEC_BATCH, "thing.measurepoint.post.batch") == []
    batch = check_batch(SPEC_BATCH)
    assert batch.problems == []
    assert [(r.device_key, r.time, sorted(r.measurepoints)) for r in batch.records] == [
        ("subDK1", 1700000000000, ["Power", "temp"]),
        ("subDK1", 1700000001000, ["temp"]),
        (None, 1700000000000, ["gw_cpu"]),
    ]


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"allowOfflineSubDevice": ""}, "is not a boolean"),  # the PY SDK quirk of §3.5.2
        ({"params": {"measurepoints": {}}}, "not a non-empty list"),
        ({"params": [{"measurepoints": {"a": 1}, "time": 1700000000}]}, "not epoch milli"),
        ({"params": [{"measurepoints": {"a": 1}, "time": "1700000000000"}]}, "not an integer"),
        ({"params": [{"measurepoints": {"a": 1}, "time": 1.7e12}]}, "not an integer"),
        ({"params": [{"deviceKey": "d", "measurepoints": {"a": 1}, "time": 1700000000000}]},
         "must come together"),
        ({"params": [{"measurepoints": {"a": {"value": 1, "quality": 10}},
                      "time": 1700000000000}]}, "quality 10"),
        ({"params": [{"measurepoints": {}, "time": 1700000000000}]}, "non-empty object"),
        ({"params": [{"measurepoints": {"a": 1}, "time": 1700000000000, "x": 1}]},
         "unexpected keys ['x']"),
    ],
)  # fmt: skip
def test_batch_shapes_the_spec_does_not_allow(change: dict[str, object], problem: str) -> None:
    """Each deviation from §3.5.2's shape is reported."""
    doc = json.loads(json.dumps({**SPEC_BATCH, **change}))
    problems = check_batch(doc).problems
    assert any(problem in p for p in problems), problems


def test_envelope_checks_method_and_notes_the_id_type() -> None:
    """§2.1: a method that does not match the topic is fatal; a non-string id is noted."""
    doc = {**SPEC_BATCH, "id": 107, "method": "thing.measurepoint.post"}
    (problem,) = check_envelope(doc, "thing.measurepoint.post.batch")
    assert "does not match" in problem
    assert check_id_and_version(doc) == ["id 107 is not a non-empty string (§2.1)"]
    assert check_id_and_version(SPEC_BATCH) == []


def test_topics_route_to_their_methods() -> None:
    """§3.0: upstream topics and the methods they demand; command replies are told apart."""
    cases = {
        "/ext/session/gP/gD/combine/login/batch": "combine.login.batch",
        "/ext/session/gP/gD/combine/login": "combine.login",
        "/sys/gP/gD/thing/measurepoint/resume/batch": "thing.measurepoint.resume.batch",
        "/sys/sP/sD/thing/measurepoint/post": "thing.measurepoint.post",
        "/sys/sP/sD/thing/event/overTemp/post": "thing.event.overTemp.post",
        "/sys/gP/gD/thing/topo/add": "thing.topo.add",
    }
    for topic, method in cases.items():
        found = route(topic)
        assert found is not None
        assert found.method == method
    assert route("/sys/gP/gD/thing/measurepoint/post/batch_reply") is None
    assert is_command_reply("/sys/sP/sD/thing/service/measurepoint/set_reply")
    assert is_command_reply("/ext/session/gP/gD/combine/disable_reply")
    assert not is_command_reply("/sys/gP/gD/thing/measurepoint/post/batch_reply")
