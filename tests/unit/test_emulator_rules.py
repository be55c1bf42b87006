"""Pure rules of the EnOS emulator: value checks, throttle, faults, responder robustness."""

from __future__ import annotations

import json
import math
import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewayd.enos.sign import mqtt_credentials
from gatewayd.sim.emulator.auth import ConnectThrottle, check_connect
from gatewayd.sim.emulator.config import EmulatorConfig, MeasurepointSpec, ThingModel
from gatewayd.sim.emulator.control import Faults
from gatewayd.sim.emulator.records import Records
from gatewayd.sim.emulator.responder import Connection, Responder
from gatewayd.sim.emulator.state import CloudState
from gatewayd.sim.emulator.thingmodel import check_measurepoints, event_problem, value_problem


@pytest.mark.parametrize(
    ("kind", "good", "bad"),
    [
        ("long", [0, -7, 5.0, 2**62], [True, 1.5, "1", None, math.inf]),
        ("double", [1, 1.5, -0.0], [True, "1.5", math.nan, math.inf, [1.0]]),
        ("string", ["", "on"], [1, None, {"a": 1}]),
        ("bool", [True, False, 0, 1], [2, "true", 1.0]),
        ("array", [[], [1, "a"]], ["[]", {}]),
        ("struct", [{}, {"a": 1}], [[], "x"]),
    ],
)
def test_value_types(kind: Any, good: list[Any], bad: list[Any]) -> None:
    """Each EnOS type accepts its values and rejects the rest with a reason."""
    spec = MeasurepointSpec(type=kind)
    assert [value_problem(spec, v) for v in good] == [None] * len(good)
    assert all(value_problem(spec, v) for v in bad)


def test_enum_values_and_quality() -> None:
    """Enums accept only their members; quality only where the model enables it, 0-9."""
    model = ThingModel(
        measurepoints={
            "mode": MeasurepointSpec(type="enum", values=[0, "auto"]),
            "v": MeasurepointSpec(type="double", quality=True),
            "p": MeasurepointSpec(type="double"),
        }
    )
    check = check_measurepoints(
        model,
        {
            "mode": "auto",
            "v": {"value": 1.0, "quality": 9},
            "p": {"value": 1.0, "quality": 0},
        },
    )
    assert [(v.point, v.value, v.quality) for v in check.valid] == [
        ("mode", "auto", None),
        ("v", 1.0, 9),
    ]
    assert len(check.errors) == 1
    assert "no quality indicator" in check.errors[0]
    bad = check_measurepoints(model, {"mode": 3, "v": {"value": 1.0, "quality": 10}})
    assert bad.valid == []
    assert len(bad.errors) == 2


def test_event_problems() -> None:
    """Unknown events and params are model errors; params=None accepts anything."""
    model = ThingModel.model_validate({"events": {"a": {"params": ["x"]}, "b": {}}})
    assert event_problem(model, "a", {"x": 1}) is None
    assert event_problem(model, "a", {"y": 1})
    assert event_problem(model, "b", {"anything": 1}) is None
    assert event_problem(model, "c", {})
    assert event_problem(model, "a", ["x"])


def test_throttle_window_and_block() -> None:
    """The 5th attempt within the window blocks the key for `block` seconds, per key."""
    throttle = ConnectThrottle(max_connects=4, window=120, block=300)
    assert [throttle.admit(("p", "d"), t) for t in (0, 1, 2, 3)] == [True] * 4
    assert not throttle.admit(("p", "d"), 4)
    assert throttle.blocked_until(("p", "d")) == 304
    assert throttle.admit(("p", "other"), 5)
    assert not throttle.admit(("p", "d"), 303.9)
    assert throttle.admit(("p", "d"), 304)


def test_check_connect_is_pure_and_reports_the_device() -> None:
    """check_connect decides from its arguments alone and names the device it identified."""
    config = EmulatorConfig.model_validate(
        {
            "products": [{"product_key": "pk", "kind": "gateway"}],
            "devices": [{"product_key": "pk", "device_key": "dk", "device_secret": "s"}],
        }
    )
    state = CloudState(config)
    creds = mqtt_credentials("pk", "dk", "s", timestamp="1")
    decision = check_connect(
        state,
        ConnectThrottle(),
        client_id=creds.client_id,
        username=creds.username,
        password=creds.password.upper(),
        over_tls=False,
        now=0.0,
    )
    assert decision.accepted
    assert decision.device == ("pk", "dk")
    assert decision.secure_mode == 2
    wrong = check_connect(
        state,
        ConnectThrottle(),
        client_id=creds.client_id,
        username=creds.username,
        password="0" * 64,
        over_tls=False,
        now=0.0,
    )
    assert (wrong.return_code, wrong.device) == (4, ("pk", "dk"))


def test_faults_are_counted_and_matched_by_method() -> None:
    """Counted faults fire exactly n times on matching methods, in arming order."""
    faults = Faults(random.Random(1))
    faults.answer_code(1212, n=2, method="a").drop_replies(1, method="b")
    assert faults.forced_code("b") is None
    assert [faults.forced_code("a") for _ in range(3)] == [
        (1212, "injected code 1212"),
        (1212, "injected code 1212"),
        None,
    ]
    assert faults.reply_fate("a").drop is False
    assert faults.reply_fate("b").drop is True
    assert faults.reply_fate("b").drop is False
    faults.delay_replies(0.5, n=1)
    assert faults.reply_fate("x").delay == 0.5
    assert faults.reply_fate("x").delay == 0.0
    faults.refuse_connects(1, return_code=4)
    assert [faults.refuse_connect(), faults.refuse_connect()] == [4, None]
    with pytest.raises(ValueError, match="probability"):
        faults.drop_replies(probability=1.5)


_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
_KEYS = st.sampled_from(
    [
        "productKey",
        "deviceKey",
        "measurepoints",
        "time",
        "events",
        "attributes",
        "subDevices",
        "clientId",
        "timestamp",
        "sign",
    ]
)
_PARAMS = (
    _JSON
    | st.dictionaries(_KEYS, _JSON, max_size=6)
    | st.lists(st.dictionaries(_KEYS, _JSON, max_size=6), max_size=3)
)
_TOPICS = [
    ("/ext/session/pk/gw/combine/login", "combine.login"),
    ("/ext/session/pk/gw/combine/login/batch", "combine.login.batch"),
    ("/ext/session/pk/gw/combine/logout", "combine.logout"),
    ("/sys/pk/gw/thing/topo/add", "thing.topo.add"),
    ("/sys/pk/gw/thing/topo/delete", "thing.topo.delete"),
    ("/sys/pk/gw/thing/device/register", "thing.device.register"),
    ("/sys/pk/gw/thing/measurepoint/post", "thing.measurepoint.post"),
    ("/sys/pk/gw/thing/measurepoint/resume/batch", "thing.measurepoint.resume.batch"),
    ("/sys/pk/gw/thing/event/e/post", "thing.event.e.post"),
    ("/sys/pk/gw/thing/attribute/update", "thing.attribute.update"),
    ("/sys/pk/gw/thing/attribute/query", "thing.attribute.query"),
    ("/sys/pk/gw/thing/tag/update", "thing.tag.update"),
    ("/sys/pk/gw/thing/tag/query", "thing.tag.query"),
]


@settings(max_examples=300, deadline=None)
@given(
    topic=st.sampled_from(_TOPICS),
    params=_PARAMS,
    flags=st.dictionaries(
        st.sampled_from(["allowOfflineSubDevice", "skipInvalidMeasurepoints"]), _JSON
    ),
)
def test_malformed_requests_always_get_a_reply(
    topic: tuple[str, str], params: Any, flags: dict[str, Any]
) -> None:
    """Whatever the params, the responder answers with a JSON reply and an int code."""
    config = EmulatorConfig.model_validate(
        {
            "models": {
                "m": {
                    "measurepoints": {"p": {"type": "double", "quality": True}},
                    "events": {"e": {"params": ["a"]}},
                }
            },
            "products": [{"product_key": "pk", "kind": "gateway", "model": "m"}],
            "devices": [
                {"product_key": "pk", "device_key": "gw", "device_secret": "s"},
                {"product_key": "pk", "device_key": "d", "device_secret": "s", "gateway": "pk/gw"},
            ],
        }
    )
    responder = Responder(CloudState(config), Records())
    body = {"id": "1", "version": "1.0", "method": topic[1], "params": params, **flags}
    outcome = responder.handle(
        Connection("c", ("pk", "gw")), topic[0], json.dumps(body).encode(), 0
    )
    assert outcome.reply is not None
    reply = json.loads(outcome.reply)
    assert reply["id"] == "1"
    assert isinstance(reply["code"], int)
    assert reply["code"] == outcome.code
