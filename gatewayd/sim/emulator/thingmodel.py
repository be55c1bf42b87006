"""Validation of measurepoint values and event params against a thing model (code 1204).

Pure functions: they say which values are valid and why the others are not; the responder
decides whether an invalid value rejects the whole request or is skipped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from gatewayd.sim.emulator.config import EventSpec, MeasurepointSpec, ThingModel

#: EnOS documents quality as an integer 0-9.
QUALITY_RANGE = range(10)


@dataclass(frozen=True, slots=True)
class PointValue:
    """One accepted measurepoint value, with its quality when the message carried one."""

    point: str
    value: Any
    quality: int | None


@dataclass(frozen=True, slots=True)
class PointCheck:
    """The outcome of checking one `measurepoints` object."""

    valid: list[PointValue]
    errors: list[str]


def check_measurepoints(model: ThingModel, measurepoints: dict[str, Any]) -> PointCheck:
    """Split `measurepoints` into values the model accepts and readable errors."""
    valid: list[PointValue] = []
    errors: list[str] = []
    for point, raw in measurepoints.items():
        spec = model.measurepoints.get(point)
        if spec is None:
            errors.append(f"measurepoint {point!r} is not in the model")
            continue
        value, quality = raw, None
        if isinstance(raw, dict) and "value" in raw and spec.type != "struct":
            if not spec.quality:
                errors.append(f"measurepoint {point!r} has no quality indicator in the model")
                continue
            value, quality = raw["value"], raw.get("quality")
            if (
                isinstance(quality, bool)
                or not isinstance(quality, int)
                or quality not in QUALITY_RANGE
            ):
                errors.append(f"measurepoint {point!r}: quality {quality!r} is not an int 0-9")
                continue
        problem = value_problem(spec, value)
        if problem is not None:
            errors.append(f"measurepoint {point!r}: {problem}")
            continue
        valid.append(PointValue(point, value, quality))
    return PointCheck(valid, errors)


def value_problem(spec: MeasurepointSpec, value: Any) -> str | None:
    """Why `value` does not fit `spec`, or None when it does."""
    kind = spec.type
    if value is None:
        return "value is null"
    if kind in ("int", "long"):
        if isinstance(value, bool):
            return f"expected {kind}, got bool"
        if isinstance(value, int):
            return None
        if isinstance(value, float) and math.isfinite(value) and value.is_integer():
            return None
        return f"expected {kind}, got {value!r}"
    if kind in ("float", "double"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"expected {kind}, got {value!r}"
        if not math.isfinite(value):
            return f"{value!r} is not a finite number"
        return None
    if kind == "string":
        return None if isinstance(value, str) else f"expected string, got {value!r}"
    if kind == "bool":
        if isinstance(value, bool) or (isinstance(value, int) and value in (0, 1)):
            return None
        return f"expected bool, got {value!r}"
    if kind == "enum":
        if isinstance(value, bool) or not isinstance(value, int | str):
            return f"expected an enum value, got {value!r}"
        if spec.values is not None and value not in spec.values:
            return f"{value!r} is not one of {spec.values}"
        return None
    if kind == "array":
        return None if isinstance(value, list) else f"expected array, got {value!r}"
    return None if isinstance(value, dict) else f"expected struct, got {value!r}"


def event_problem(model: ThingModel, event_id: str, params: Any) -> str | None:
    """Why an event post does not fit the model, or None when it does."""
    spec: EventSpec | None = model.events.get(event_id)
    if spec is None:
        return f"event {event_id!r} is not in the model"
    if not isinstance(params, dict):
        return "event params must be an object"
    if spec.params is not None:
        unknown = sorted(set(params) - set(spec.params))
        if unknown:
            return f"event {event_id!r} has no params {unknown}"
    return None
