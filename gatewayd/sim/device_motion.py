"""How simulated point values move over time (pure: time comes in as an argument).

Each point gets a `Motion`; `value_at(point, motion, t)` is its engineering value `t`
seconds after the simulated device started. Values are chosen in the point's *raw* range
(then scaled like the device would) so that every value encodes without error:

- counters (measurepoint names containing "energy", "kwh" or "total"): rise 1 raw unit per
  second from 1000, wrapping at the type's maximum like a real register counter;
- floats and scaled integers: a sine around the middle of the range;
- other integers and BCD: a sawtooth ramp across the range;
- bools (coils, discrete inputs, bits): flip every `FLIP_EVERY` seconds, starting false;
- enums: cycle through the enum's keys every `FLIP_EVERY` seconds (the label is returned);
- strings: a fixed text.

The range is the point's `min`..`max` when configured, else raw 0..100.
"""

from __future__ import annotations

import math
from enum import StrEnum

from gatewayd.config.models import DataType, PointConfig
from gatewayd.samples import Value

__all__ = ["COUNTER_WORDS", "FLIP_EVERY", "PERIOD", "Motion", "default_motion", "value_at"]

#: Seconds between flips of bools and steps of enums.
FLIP_EVERY = 5.0
#: Seconds per sine period / ramp sweep.
PERIOD = 60.0
#: Measurepoint name fragments that mark a monotonic counter.
COUNTER_WORDS = ("energy", "kwh", "total")

_COUNTER_START = 1000
_DEFAULT_RAW_RANGE = (0.0, 100.0)


class Motion(StrEnum):
    """The kinds of movement a simulated point can have."""

    FIXED = "fixed"
    SINE = "sine"
    RAMP = "ramp"
    COUNTER = "counter"
    FLIP = "flip"
    CYCLE = "cycle"


def default_motion(point: PointConfig) -> Motion:
    """The motion a point gets unless the simulator is told otherwise (see module doc)."""
    if point.table.is_bit or point.type is DataType.BOOL:
        return Motion.FLIP
    if point.type is DataType.STRING:
        return Motion.FIXED
    if point.enum:
        return Motion.CYCLE
    name = point.measurepoint.lower()
    if any(word in name for word in COUNTER_WORDS):
        return Motion.COUNTER
    if point.type.is_float or point.scale != 1:
        return Motion.SINE
    return Motion.RAMP


def value_at(point: PointConfig, motion: Motion, t: float) -> Value:
    """The engineering value of `point` moving by `motion`, `t` seconds after start."""
    if point.table.is_bit or point.type is DataType.BOOL:
        return motion is not Motion.FIXED and int(t // FLIP_EVERY) % 2 == 1
    if point.type is DataType.STRING:
        return fixed_text(point)
    if point.enum:
        keys = sorted(point.enum)
        step = 0 if motion is Motion.FIXED else int(t // FLIP_EVERY)
        return point.enum[keys[step % len(keys)]]
    if motion is Motion.COUNTER:
        raw_counter = _COUNTER_START + t
        if not point.type.is_float:
            _, raw_max = point.type.raw_range or (0, 0)
            raw_counter = int(raw_counter) % (raw_max + 1)
        return _engineering(point, raw_counter)
    low, high = _range(point)
    if motion is Motion.SINE:
        value = (low + high) / 2 + (high - low) / 2 * math.sin(2 * math.pi * t / PERIOD)
    elif motion is Motion.RAMP:
        value = low + (high - low) * ((t / PERIOD) % 1.0)
    else:
        value = (low + high) / 2
    return _snap(point, value)


def fixed_text(point: PointConfig) -> str:
    """The text a string point shows: "SIM <name>", cut to its `count` registers."""
    return f"SIM {point.measurepoint}"[: 2 * (point.count or 0)]


def _range(point: PointConfig) -> tuple[float, float]:
    if point.min is not None and point.max is not None:
        return point.min, point.max
    low, high = (_engineering(point, raw) for raw in _DEFAULT_RAW_RANGE)
    return (low, high) if low <= high else (high, low)


def _engineering(point: PointConfig, raw: float) -> float | int:
    if point.scale == 1 and point.offset == 0:
        return raw
    return raw * point.scale + point.offset


def _snap(point: PointConfig, value: float) -> float | int:
    """Round to what the register can hold: whole raw steps for integer types."""
    if point.type.is_float:
        return value
    raw = round((value - point.offset) / point.scale)
    return _engineering(point, raw) if (point.scale, point.offset) != (1, 0) else raw
