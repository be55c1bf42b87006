"""Pure validation of cloud commands against a device model (no I/O)."""

from __future__ import annotations

import math
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewayd.commands.report import MAX_LISTED, WriteReport, refused, reply_code
from gatewayd.commands.validate import (
    PlannedWrite,
    Refusal,
    check_write,
    plan_get,
    plan_service,
    plan_set,
    same_value,
    show,
)
from gatewayd.config.models import DeviceConfig, DeviceModel, PointConfig
from gatewayd.enos.codes import ReplyCode
from gatewayd.modbus import codec

MODEL = DeviceModel.model_validate(
    {
        "name": "unit-model",
        "points": [
            {"measurepoint": "relay", "table": "coil", "address": 0, "type": "bool",
             "writable": True},
            {"measurepoint": "door", "table": "discrete", "address": 0, "type": "bool"},
            {"measurepoint": "bit3", "table": "holding", "address": 0, "type": "bool", "bit": 3,
             "writable": True},
            {"measurepoint": "i16", "table": "holding", "address": 1, "type": "int16",
             "writable": True, "min": -100, "max": 100},
            {"measurepoint": "u16", "table": "holding", "address": 2, "type": "uint16",
             "writable": True},
            {"measurepoint": "ro", "table": "holding", "address": 3, "type": "uint16"},
            {"measurepoint": "temp", "table": "holding", "address": 4, "type": "int16",
             "scale": 0.1, "writable": True},
            {"measurepoint": "f32", "table": "holding", "address": 5, "type": "float32",
             "writable": True},
            {"measurepoint": "label", "table": "holding", "address": 7, "type": "string",
             "count": 2, "writable": True},
            {"measurepoint": "mode", "table": "holding", "address": 9, "type": "uint16",
             "enum": {0: "off", 1: "on"}, "writable": True},
            {"measurepoint": "bcd", "table": "holding", "address": 10, "type": "bcd16",
             "writable": True},
            {"measurepoint": "volts", "table": "input", "address": 0, "type": "float32"},
        ],
        "services": [
            {"id": "go", "params": {"speed": {"type": "float", "min": 0, "max": 10},
                                    "count": {"type": "int"}, "on": {"type": "bool"},
                                    "tag": {"type": "string"}},
             "writes": [{"point": "f32", "value": "$speed"}, {"point": "u16", "value": "$count"},
                        {"point": "relay", "value": "$on"}, {"point": "label", "value": "$tag"},
                        {"point": "mode", "value": "on"}],
             "outputs": ["f32", "volts"]},
        ],
    }
)  # fmt: skip
DEVICE = DeviceConfig.model_validate(
    {"name": "d", "bus": "b", "model": "unit-model", "product_key": "p", "device_key": "k"}
)
POINTS = {p.measurepoint: p for p in MODEL.points}


def check(name: str, value: object) -> PlannedWrite | Refusal:
    return check_write(POINTS[name], value, device=DEVICE, model=MODEL)


def refusal(name: str, value: object) -> Refusal:
    result = check(name, value)
    assert isinstance(result, Refusal), result
    return result


@pytest.mark.parametrize(
    ("name", "value", "normalised", "expected"),
    [
        ("relay", True, True, True),
        ("relay", 0, False, False),
        ("bit3", 1, True, True),
        ("i16", -100, -100, -100),
        ("i16", 100, 100, 100),
        ("u16", 65535, 65535, 65535),
        ("temp", 21.34, 21.34, 21.3),  # rounded to the register's 0.1 step
        ("f32", 0.1, 0.1, 0.1),
        ("label", "ab", "ab", "ab"),
        ("mode", "on", "on", "on"),
        ("mode", 1, 1, "on"),
        ("bcd", 9999, 9999, 9999),
    ],
)
def test_valid_writes_are_planned_with_their_read_back(
    name: str, value: object, normalised: object, expected: object
) -> None:
    """A valid value is planned, normalised, with the value its registers will hold."""
    planned = check(name, value)
    assert isinstance(planned, PlannedWrite)
    assert planned.value == normalised
    assert type(planned.value) is type(normalised)
    assert planned.expected == expected


@pytest.mark.parametrize(
    ("name", "value", "code", "fragment"),
    [
        ("door", True, ReplyCode.POINT_NOT_WRITABLE, "read-only"),
        ("ro", 1, ReplyCode.POINT_NOT_WRITABLE, "read-only"),
        ("volts", 1.0, ReplyCode.POINT_NOT_WRITABLE, "read-only"),
        ("i16", 101, ReplyCode.VALUE_OUT_OF_RANGE, "101 is above the declared max 100"),
        ("i16", -100.5, ReplyCode.VALUE_OUT_OF_RANGE, "-100.5 is below the declared min -100"),
        ("i16", True, ReplyCode.VALUE_OUT_OF_RANGE, "takes a number, got a boolean"),
        ("i16", "5", ReplyCode.VALUE_OUT_OF_RANGE, "takes a number, got a string '5'"),
        ("i16", None, ReplyCode.VALUE_OUT_OF_RANGE, "takes a number, got null"),
        ("u16", -1, ReplyCode.VALUE_OUT_OF_RANGE, "out of range 0..65535"),
        ("u16", 65536, ReplyCode.VALUE_OUT_OF_RANGE, "out of range 0..65535"),
        ("u16", [1], ReplyCode.VALUE_OUT_OF_RANGE, "got an array"),
        ("temp", 3276.8, ReplyCode.VALUE_OUT_OF_RANGE, "out of range -32768..32767"),
        ("temp", 10**400, ReplyCode.VALUE_OUT_OF_RANGE, "cannot be encoded"),
        ("f32", math.nan, ReplyCode.VALUE_OUT_OF_RANGE, "finite"),
        ("f32", math.inf, ReplyCode.VALUE_OUT_OF_RANGE, "finite"),
        ("f32", 1e39, ReplyCode.VALUE_OUT_OF_RANGE, "out of float32 range"),
        ("relay", 2, ReplyCode.VALUE_OUT_OF_RANGE, "true/false"),
        ("relay", "on", ReplyCode.VALUE_OUT_OF_RANGE, "true/false"),
        ("bit3", {}, ReplyCode.VALUE_OUT_OF_RANGE, "got an object"),
        ("label", "abcde", ReplyCode.VALUE_OUT_OF_RANGE, "do not fit"),
        ("label", "\u20ac", ReplyCode.VALUE_OUT_OF_RANGE, "outside Latin-1"),
        ("label", 5, ReplyCode.VALUE_OUT_OF_RANGE, "takes a string"),
        ("mode", "ON", ReplyCode.VALUE_OUT_OF_RANGE, "'off' (0), 'on' (1)"),
        ("mode", 7, ReplyCode.VALUE_OUT_OF_RANGE, "got a number 7"),
        ("mode", True, ReplyCode.VALUE_OUT_OF_RANGE, "got a boolean"),
        ("bcd", 10000, ReplyCode.VALUE_OUT_OF_RANGE, "out of range 0..9999"),
    ],
)
def test_invalid_writes_are_refused_with_reason(
    name: str, value: object, code: int, fragment: str
) -> None:
    """Read-only points, wrong JSON types, declared range and codec range are refused."""
    result = refusal(name, value)
    assert result.code == code
    assert result.subject == name
    assert fragment in result.reason


def test_plan_set_checks_every_point_in_order() -> None:
    """Every point is checked: valid ones planned in order, each invalid one refused."""
    plan = plan_set(
        {"u16": 1, "nope": 2, "relay": True, "ro": 3, "i16": 500},
        device=DEVICE,
        model=MODEL,
    )
    assert [w.name for w in plan.writes] == ["u16", "relay"]
    assert [(r.subject, r.code) for r in plan.refusals] == [
        ("nope", ReplyCode.POINT_UNKNOWN),
        ("ro", ReplyCode.POINT_NOT_WRITABLE),
        ("i16", ReplyCode.VALUE_OUT_OF_RANGE),
    ]


def test_hostile_names_are_shown_safely() -> None:
    """Unknown names with control characters, surrogates or huge length are escaped, bounded."""
    plan = plan_set({"a\nb": 1, "\ud800": 2, "x" * 10_000: 3}, device=DEVICE, model=MODEL)
    subjects = [r.subject for r in plan.refusals]
    assert subjects[0] == "'a\\nb'"
    assert subjects[1] == "'\\ud800'"
    assert len(subjects[2]) == 64
    assert subjects[2].endswith("…")
    for subject in subjects:
        subject.encode("utf-8")  # never raises: every subject is valid UTF-8
    assert show("plain") == "plain"


def test_plan_get() -> None:
    """get: known names de-duplicated in order, unknown ones refused, empty list refused."""
    plan = plan_get(["volts", "u16", "volts", "x", "x"], model=MODEL)
    assert plan.names == ("volts", "u16")
    assert [(r.subject, r.code) for r in plan.refusals] == [("x", ReplyCode.POINT_UNKNOWN)]
    empty = plan_get([], model=MODEL)
    assert [r.code for r in empty.refusals] == [ReplyCode.COMMAND_INVALID_PARAMS]


def test_service_binds_params_in_order() -> None:
    """A service's `$param`s are bound from the command; literals pass through."""
    params = {"speed": 2.5, "count": 3, "on": True, "tag": "ok"}
    plan = plan_service("go", params, device=DEVICE, model=MODEL)
    assert plan.refusals == ()
    assert [(w.name, w.value) for w in plan.writes] == [
        ("f32", 2.5), ("u16", 3), ("relay", True), ("label", "ok"), ("mode", "on"),
    ]  # fmt: skip
    assert plan.outputs == ("f32", "volts")


@pytest.mark.parametrize(
    ("params", "subject", "fragment"),
    [
        ({"speed": 1, "count": 1, "on": True}, "tag", "missing parameter"),
        ({"speed": 11, "count": 1, "on": True, "tag": "a"}, "speed", "above its max 10"),
        ({"speed": -1, "count": 1, "on": True, "tag": "a"}, "speed", "below its min 0"),
        ({"speed": "1", "count": 1, "on": True, "tag": "a"}, "speed", "takes a number"),
        ({"speed": 1, "count": 1.5, "on": True, "tag": "a"}, "count", "takes an integer"),
        ({"speed": 1, "count": True, "on": True, "tag": "a"}, "count", "takes an integer"),
        ({"speed": 1, "count": 1, "on": 1, "tag": "a"}, "on", "takes true/false"),
        ({"speed": 1, "count": 1, "on": True, "tag": 1}, "tag", "takes a string"),
        ({"speed": math.nan, "count": 1, "on": True, "tag": "a"}, "speed", "finite"),
        ({"speed": 1, "count": 1, "on": True, "tag": "a", "x": 1}, "x", "unknown parameter"),
    ],
)
def test_service_param_errors(params: dict[str, Any], subject: str, fragment: str) -> None:
    """Missing, unknown, mistyped and out-of-range params refuse the service (2003)."""
    plan = plan_service("go", params, device=DEVICE, model=MODEL)
    assert plan.writes == ()
    found = {r.subject: r for r in plan.refusals}
    assert found[subject].code == ReplyCode.COMMAND_INVALID_PARAMS
    assert fragment in found[subject].reason


def test_service_bound_value_checked_against_point() -> None:
    """A param inside its own range can still be refused by the point it is written to."""
    params = {"speed": 1, "count": 70000, "on": True, "tag": "toolong"}
    plan = plan_service("go", params, device=DEVICE, model=MODEL)
    assert {(r.subject, r.code) for r in plan.refusals} == {
        ("u16 (write 2)", ReplyCode.VALUE_OUT_OF_RANGE),
        ("label (write 4)", ReplyCode.VALUE_OUT_OF_RANGE),
    }


def test_unknown_service() -> None:
    """An unknown service id is refused naming the model's services."""
    plan = plan_service("stop", {}, device=DEVICE, model=MODEL)
    (only,) = plan.refusals
    assert only.code == ReplyCode.POINT_UNKNOWN
    assert "(services: go)" in only.reason


@pytest.mark.parametrize(
    ("expected", "actual", "same"),
    [
        (True, True, True),
        (True, 1, False),
        (1, True, False),
        (5, 5, True),
        (5, 5.0, True),
        (21.3, 21.3 + 1e-13, True),
        (21.3, 21.4, False),
        ("on", "on", True),
        ("on", 1, False),
        (1.5, "1.5", False),
        (math.nan, math.nan, False),
    ],
)
def test_same_value(expected: Any, actual: Any, same: bool) -> None:
    """Read-back comparison: exact for ints/bools/strings, float noise tolerated."""
    assert same_value(expected, actual) is same


def test_reply_code_rules() -> None:
    """Partial when anything was written; else the common code; else the first one."""
    a = Refusal("a", ReplyCode.POINT_UNKNOWN, "x")
    b = Refusal("b", ReplyCode.VALUE_OUT_OF_RANGE, "y")
    assert reply_code([a, b], anything_written=True) == ReplyCode.PARTIAL_FAILURE
    assert reply_code([b, b], anything_written=False) == ReplyCode.VALUE_OUT_OF_RANGE
    assert reply_code([a, b], anything_written=False) == ReplyCode.POINT_UNKNOWN


def test_refusal_listing_is_bounded() -> None:
    """Thousands of refused points: the reply lists MAX_LISTED and counts the rest."""
    refusals = [Refusal(f"p{i}", ReplyCode.POINT_UNKNOWN, "unknown") for i in range(500)]
    code, data, message = refused(refusals)
    assert code == ReplyCode.POINT_UNKNOWN
    assert isinstance(data, dict)
    assert len(data["failed"]) == MAX_LISTED
    assert message.endswith(f"; and {500 - MAX_LISTED} more")


def test_write_report_accounts_for_every_write() -> None:
    """Written, failed, in flight and never tried: each planned write is in the reply."""
    writes = tuple(check(n, v) for n, v in (("u16", 1), ("relay", True), ("i16", 3), ("bcd", 4)))
    assert all(isinstance(w, PlannedWrite) for w in writes)
    report = WriteReport(writes)  # type: ignore[arg-type]
    first = report.take()
    assert first is not None
    report.succeeded(first)
    second = report.take()
    assert second is not None
    report.failed(second, ReplyCode.DEVICE_WRITE_FAILED, "rejected")
    assert report.take() is not None  # in flight when the deadline hits
    report.skip_rest(ReplyCode.COMMAND_TIMEOUT, "not written: deadline")
    report.closed = True
    assert report.take() is None
    code, data, message = report.reply(context="measurepoint.set")
    assert code == ReplyCode.PARTIAL_FAILURE
    assert data == {
        "written": ["u16"],
        "failed": {
            "relay": "rejected",
            "i16": "outcome unknown: the write was still in progress at the reply deadline",
            "bcd": "not written: deadline",
        },
    }
    assert message.startswith("measurepoint.set: 3 of 4 writes failed: relay: rejected;")
    assert message.endswith("(written: u16)")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)


@settings(max_examples=400, deadline=None)
@given(name=st.sampled_from(sorted(POINTS)), value=json_values)
def test_any_json_value_is_planned_exactly_or_refused(name: str, value: object) -> None:
    """For any JSON value: a refusal, or a write the codec encodes to what it expects back."""
    result = check(name, value)
    if isinstance(result, Refusal):
        assert result.code in (ReplyCode.POINT_NOT_WRITABLE, ReplyCode.VALUE_OUT_OF_RANGE)
        return
    point: PointConfig = result.point
    byte_order, word_order = codec.point_orders(point, DEVICE, MODEL)
    words = codec.encode(point, result.value, byte_order=byte_order, word_order=word_order,
                         current=0)  # fmt: skip
    if point.bit is None:
        decoded = codec.decode(point, words, byte_order=byte_order, word_order=word_order)
        assert same_value(result.expected, decoded)
    if point.min is not None:
        assert isinstance(result.value, int | float)
        assert result.value >= point.min
