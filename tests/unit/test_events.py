"""Edge event rules: each rule fires exactly once per transition."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter

from gatewayd.config.models import EventRule
from gatewayd.mapping.events import EventEngine
from gatewayd.mapping.stage import compile_rules
from gatewayd.samples import Event, Value

RULE = TypeAdapter(EventRule)


def engine(*rules: dict[str, Any]) -> EventEngine:
    """An engine for device "dev" from rule dicts as they appear in YAML."""
    return EventEngine(compile_rules(RULE.validate_python(r) for r in rules), device="dev")


def fired(eng: EventEngine, readings: Sequence[Value | None], point: str = "x") -> list[int]:
    """Feed one reading per cycle (None: missing); the cycle numbers (ts) that fired."""
    out: list[int] = []
    for ts, value in enumerate(readings):
        values = {} if value is None else {point: value}
        out.extend(e.ts_ms for e in eng.update(values, ts))
    return out


def test_bit_set_fires_on_rising_edge_and_on_first_true() -> None:
    """False→True fires; staying True does not; a first reading of True fires."""
    rule = {"event": "alarm", "rule": "bit_set", "point": "x"}
    assert fired(engine(rule), [False, True, True, False, True]) == [1, 4]
    assert fired(engine(rule), [True, True, False]) == [0]
    assert fired(engine(rule), [0, 1, 2, 0]) == [1]  # numbers: != 0 is set


def test_bit_cleared_fires_on_falling_edge_only() -> None:
    """True→False fires; a first reading of False does not."""
    rule = {"event": "ok", "rule": "bit_cleared", "point": "x"}
    assert fired(engine(rule), [False, True, False, False, True, False]) == [2, 5]


def test_missing_values_keep_state() -> None:
    """A missing (failed/BAD) reading is no transition: True, missing, True fires nothing new."""
    rule = {"event": "alarm", "rule": "bit_set", "point": "x"}
    assert fired(engine(rule), [True, None, True, None, False, None, True]) == [0, 6]
    change = {"event": "chg", "rule": "change", "point": "x"}
    assert fired(engine(change), [1, None, 1, math.nan, 2]) == [4]


def test_threshold_above_with_hysteresis_fires_once_while_flapping() -> None:
    """Flapping around 80 within a 5-wide band fires once; re-arms at 75 or lower."""
    rule = {"event": "hot", "rule": "threshold", "point": "x", "above": 80, "hysteresis": 5}
    readings = [70, 81, 79, 80.5, 76, 85, 75, 81, 60]
    assert fired(engine(rule), readings) == [1, 7]


def test_threshold_below_and_first_reading_in_alarm() -> None:
    """below mirrors above; a first reading already past the threshold fires."""
    rule = {"event": "cold", "rule": "threshold", "point": "x", "below": 10, "hysteresis": 2}
    assert fired(engine(rule), [5, 11, 9, 12, 9.5]) == [0, 4]
    no_band = {"event": "cold", "rule": "threshold", "point": "x", "below": 10}
    assert fired(engine(no_band), [10, 9.9, 10, 9.9]) == [1, 3]


def test_threshold_ignores_non_numbers() -> None:
    """An enum label on a threshold point is ignored, not a crash."""
    rule = {"event": "hot", "rule": "threshold", "point": "x", "above": 1}
    assert fired(engine(rule), ["fault", 2, "fault", 0, 2]) == [1, 4]


def test_in_set_fires_on_entering_the_set() -> None:
    """Entering the set fires once; moving inside the set does not; first reading inside fires."""
    rule = {"event": "fault", "rule": "in_set", "point": "x", "values": ["trip", "fault"]}
    assert fired(engine(rule), ["run", "trip", "fault", "run", "fault"]) == [1, 4]
    numeric = {"event": "fault", "rule": "in_set", "point": "x", "values": [3, 4]}
    assert fired(engine(numeric), [4, 4.0, 1, 3]) == [0, 3]


def test_change_fires_on_every_change_but_not_first() -> None:
    """Every new value fires; repeats and the first reading do not."""
    rule = {"event": "chg", "rule": "change", "point": "x"}
    assert fired(engine(rule), [1, 1, 2, 2, 3, "a", "a"]) == [2, 4, 5]


def test_event_params_and_device() -> None:
    """Params are the rule's plus measurepoint and value; rule params win on a clash."""
    eng = engine(
        {"event": "hot", "rule": "threshold", "point": "t", "above": 50,
         "params": {"level": 2, "value": "fixed"}},
        {"event": "chg", "rule": "change", "point": "t", "params": {"level": 1}},
    )
    assert eng.update({"t": 40}, 1000) == []
    assert eng.update({"t": 55.5}, 2000) == [
        Event("dev", "hot", 2000, {"measurepoint": "t", "value": "fixed", "level": 2}),
        Event("dev", "chg", 2000, {"measurepoint": "t", "value": 55.5, "level": 1}),
    ]


def test_rules_on_other_points_are_independent() -> None:
    """Values of other points do not touch a rule's state."""
    eng = engine({"event": "a", "rule": "bit_set", "point": "a"},
                 {"event": "b", "rule": "bit_set", "point": "b"})
    assert [e.event_id for e in eng.update({"a": True}, 0)] == ["a"]
    assert [e.event_id for e in eng.update({"a": True, "b": True}, 1)] == ["b"]
    assert eng.update({"c": True}, 2) == []


@given(st.lists(st.floats(0, 100, allow_nan=False), max_size=60), st.floats(1, 20))
def test_threshold_events_alternate_with_rearming(readings: list[float], band: float) -> None:
    """Between two events of an above-threshold rule the value fell to threshold - band."""
    eng = engine({"event": "hot", "rule": "threshold", "point": "x", "above": 50,
                  "hysteresis": band})
    fired_at = fired(eng, readings)
    for first, second in itertools.pairwise(fired_at):
        assert min(readings[first:second]) <= 50 - band
    for ts in fired_at:
        assert readings[ts] > 50


@given(st.lists(st.booleans(), max_size=60))
def test_bit_set_events_count_rising_edges(readings: list[bool]) -> None:
    """bit_set fires as many times as there are False→True edges (+1 if it starts True)."""
    eng = engine({"event": "alarm", "rule": "bit_set", "point": "x"})
    edges = sum(1 for a, b in zip([False, *readings], readings, strict=False) if b and not a)
    assert len(fired(eng, readings)) == edges
