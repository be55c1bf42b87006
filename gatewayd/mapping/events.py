"""Edge event rules: a device's good readings → `Event`s, once per transition (pure).

`EventEngine(rules, device=...)` keeps one small state machine per rule; each poll cycle the
caller passes the cycle's GOOD values keyed by measurepoint id (`update(values, ts_ms)`).
A point that is missing from `values` (not due, failed, BAD) or holds a non-finite float
changes nothing: its rules keep their state until a good reading arrives.

Rules and what "transition" means:

- ``bit_set``: the value turns true (False → True). A first reading that is already true
  fires: an alarm present when the gateway starts matters to the operator.
- ``bit_cleared``: the value turns false (True → False). A first reading of false does not
  fire: clearing needs something to clear.
- ``threshold``: ``above`` fires when the value rises over `above` and re-arms only once it
  has fallen back to ``above - hysteresis`` or lower; ``below`` mirrors that (fires under
  `below`, re-arms at ``below + hysteresis`` or higher). Starts armed, so a first reading
  already past the threshold fires. Flapping inside the hysteresis band fires once.
- ``in_set``: the value enters `values` (it was outside, or this is the first reading).
  Moving between two members of the set does not fire again.
- ``change``: the value differs from the previous good reading; never on the first one.

Truthiness for bit rules: bools as they are, numbers as ``!= 0``; strings are ignored.
Threshold rules ignore non-numeric values (e.g. enum labels).

Event params are the rule's `params` plus ``measurepoint`` (the point id) and ``value``
(the reading that fired); a key the rule's `params` sets itself wins, so a model can
control exactly which params reach EnOS.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from gatewayd.samples import Event, Value

__all__ = ["EventEngine", "RuleSpec"]


@dataclass(frozen=True, slots=True)
class RuleSpec:
    """One event rule as the engine takes it: plain and frozen, compiled from the
    validated config at load time (`gatewayd.mapping.stage.compile_rules`)."""

    event: str
    rule: str  # "bit_set", "bit_cleared", "threshold", "in_set" or "change"
    point: str
    params: tuple[tuple[str, Value], ...] = ()
    above: float | None = None  # threshold: exactly one of above / below
    below: float | None = None
    hysteresis: float = 0.0
    values: tuple[Value, ...] = ()  # in_set


def _usable(value: Value) -> bool:
    return not (isinstance(value, float) and not math.isfinite(value))


def _truth(value: Value) -> bool | None:
    if isinstance(value, str):
        return None
    return bool(value)


def _number(value: Value) -> float | None:
    if isinstance(value, str):
        return None
    return float(value)


class _BitState:
    """Edge detector for bit_set / bit_cleared."""

    def __init__(self, rule: RuleSpec) -> None:
        self.rising = rule.rule == "bit_set"
        self.previous: bool | None = None

    def step(self, value: Value) -> bool:
        state = _truth(value)
        if state is None:
            return False
        previous, self.previous = self.previous, state
        if self.rising:
            return state and previous is not True
        return previous is True and not state


class _ThresholdState:
    """Threshold crossing with hysteresis: fire, then wait to re-arm past the band."""

    def __init__(self, rule: RuleSpec) -> None:
        self.above = rule.above
        self.below = rule.below
        self.hysteresis = rule.hysteresis
        self.armed = True

    def step(self, value: Value) -> bool:
        number = _number(value)
        if number is None:
            return False
        if self.above is not None:
            past, back = number > self.above, number <= self.above - self.hysteresis
        else:
            assert self.below is not None  # the config requires exactly one bound
            past, back = number < self.below, number >= self.below + self.hysteresis
        if self.armed and past:
            self.armed = False
            return True
        if not self.armed and back:
            self.armed = True
        return False


class _InSetState:
    """Fires when the value enters the set."""

    def __init__(self, rule: RuleSpec) -> None:
        self.values = list(rule.values)
        self.inside: bool | None = None

    def step(self, value: Value) -> bool:
        inside = value in self.values  # by ==: a reading of 1.0 is in the set [1]
        was_inside, self.inside = self.inside, inside
        return inside and not was_inside


class _ChangeState:
    """Fires when the value differs from the previous good reading."""

    def __init__(self, rule: RuleSpec) -> None:
        self.previous: Value | None = None

    def step(self, value: Value) -> bool:
        previous, self.previous = self.previous, value
        return previous is not None and previous != value


_State = _BitState | _ThresholdState | _InSetState | _ChangeState


def _state_for(rule: RuleSpec) -> _State:
    if rule.rule in ("bit_set", "bit_cleared"):
        return _BitState(rule)
    if rule.rule == "threshold":
        return _ThresholdState(rule)
    if rule.rule == "in_set":
        return _InSetState(rule)
    if rule.rule == "change":
        return _ChangeState(rule)
    raise ValueError(f"unknown event rule kind {rule.rule!r}")


class EventEngine:
    """The event rules of one device with their state; fires each event once per transition."""

    def __init__(self, rules: Iterable[RuleSpec], *, device: str = "") -> None:
        self.device = device
        self._rules = [(rule, _state_for(rule)) for rule in rules]
        #: The measurepoints some rule watches: the only values `update` looks at.
        self.points: frozenset[str] = frozenset(rule.point for rule, _ in self._rules)

    def update(self, values: Mapping[str, Value], ts_ms: int) -> list[Event]:
        """Feed one cycle's good values (measurepoint → value); return the events that fire.

        Events come out in rule order and carry `ts_ms` (the readings' timestamp).
        """
        events: list[Event] = []
        for rule, state in self._rules:
            if rule.point not in values:
                continue
            value = values[rule.point]
            if not _usable(value) or not state.step(value):
                continue
            params: dict[str, Value] = {"measurepoint": rule.point, "value": value}
            params.update(rule.params)
            events.append(Event(self.device, rule.event, ts_ms, params))
        return events
