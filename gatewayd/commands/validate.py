"""Pure checks of cloud commands against a device model: what may be written, read or run.

Nothing here does I/O. A command is turned into a plan of writes (or a list of points to
read) or into `Refusal`s that name each offending point or parameter and why. The checks
are the command layer's safety net before anything reaches a device:

- the point must exist in the model and be `writable` (coils and holding registers only);
- the value must have the point's JSON type: bool points take ``true``/``false`` (or 0/1),
  string points a string, enum points one of their labels or one of their integer codes,
  numeric points a finite number (not a boolean);
- numeric values must lie inside the point's declared ``min``/``max`` (engineering units);
- the value must be encodable by the codec (type range after un-scaling, string length,
  Latin-1 text): exactly what `gatewayd.modbus.codec.encode` would write.

Each planned write also carries the value the device should read back: the value as its
registers can hold it (``decode(encode(value))``), so a scaled int rounded to its step or a
float32 narrowed from a float64 still verifies exactly.
"""

from __future__ import annotations

import math
import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from gatewayd.config.models import (
    DataType,
    DeviceConfig,
    DeviceModel,
    PointConfig,
    ServiceConfig,
    ServiceParam,
    Table,
)
from gatewayd.enos.codes import ReplyCode
from gatewayd.modbus import codec
from gatewayd.samples import Value

__all__ = [
    "GetPlan",
    "PlannedWrite",
    "Refusal",
    "ServicePlan",
    "WritePlan",
    "check_write",
    "plan_get",
    "plan_service",
    "plan_set",
    "same_value",
    "show",
]

#: Longest rendering of cloud-supplied text or values in a reply (names can be anything).
SHOW_LIMIT = 64
#: Relative tolerance of a float read-back (the expectation is already register-exact).
FLOAT_TOLERANCE = 1e-9


def _bounded_repr() -> reprlib.Repr:
    bounded = reprlib.Repr()
    bounded.maxlevel = 2
    bounded.maxlist = bounded.maxdict = bounded.maxtuple = 4
    bounded.maxstring = bounded.maxother = bounded.maxlong = SHOW_LIMIT
    return bounded


#: repr for cloud-supplied values: never deep (a nested value cannot exhaust the stack).
_BOUNDED = _bounded_repr()


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why one point, parameter or service of a command is refused, with its reply code."""

    subject: str  # the point/parameter as shown to the operator (made safe by `show`)
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class PlannedWrite:
    """One validated write: hand `value` to the device handle, expect `expected` back."""

    point: PointConfig
    value: Value
    expected: Value

    @property
    def name(self) -> str:
        """The measurepoint written."""
        return self.point.measurepoint

    @property
    def requests(self) -> int:
        """Modbus requests the write takes: a bit inside a register is read-modify-write."""
        return 2 if self.point.table is Table.HOLDING and self.point.bit is not None else 1


@dataclass(frozen=True, slots=True)
class WritePlan:
    """`measurepoint.set` checked: the writes in command order, or why it is refused."""

    writes: tuple[PlannedWrite, ...]
    refusals: tuple[Refusal, ...]


@dataclass(frozen=True, slots=True)
class ServicePlan:
    """A service bound to its parameters: ordered writes, then the outputs to read."""

    service_id: str
    writes: tuple[PlannedWrite, ...]
    outputs: tuple[str, ...]
    refusals: tuple[Refusal, ...]


@dataclass(frozen=True, slots=True)
class GetPlan:
    """`measurepoint.get` checked: the distinct points to read, or the unknown names."""

    names: tuple[str, ...]
    refusals: tuple[Refusal, ...]


def show(value: object, limit: int = SHOW_LIMIT) -> str:
    """`value` rendered safely for a reply: printable, valid UTF-8, at most `limit` chars.

    Cloud-supplied names may hold control characters, lone surrogates or megabytes.
    """
    # repr escapes control characters and lone surrogates; reprlib bounds depth and size.
    text = value if isinstance(value, str) and value.isprintable() else _BOUNDED.repr(value)
    if len(text) > limit:
        text = text[: limit - 1] + "…"
    return text


# ---------------------------------------------------------------------------- points


def _shown(value: object) -> str:
    """A cloud-supplied value for a message: strings quoted, everything bounded."""
    return show(_BOUNDED.repr(value))


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class _Bad:
    """A value that does not fit its point: the reason."""

    reason: str


def _typed_value(point: PointConfig, value: object) -> Value | _Bad:
    """`value` normalised for `point` (0/1 → bool for bool points), or why it does not fit."""
    if point.table.is_bit or point.type is DataType.BOOL:
        if isinstance(value, bool):
            return value
        if _is_number(value) and value in (0, 1):
            return bool(value)
        return _Bad(f"takes true/false (or 0/1), got {_json_kind(value)} {_shown(value)}")
    if point.type is DataType.STRING:
        if isinstance(value, str):
            return value
        return _Bad(f"takes a string, got {_json_kind(value)} {_shown(value)}")
    if point.enum is not None:
        if isinstance(value, str) and value in point.enum.values():
            return value
        if isinstance(value, int) and not isinstance(value, bool) and value in point.enum:
            return value
        choices = ", ".join(f"{label!r} ({code})" for code, label in point.enum.items())
        return _Bad(f"takes one of {choices}, got {_json_kind(value)} {_shown(value)}")
    if not _is_number(value):
        return _Bad(f"takes a number, got {_json_kind(value)} {_shown(value)}")
    assert isinstance(value, int | float)
    if isinstance(value, float) and not math.isfinite(value):
        return _Bad(f"takes a finite number, got {_shown(value)}")
    if point.min is not None and value < point.min:
        return _Bad(f"{_shown(value)} is below the declared min {point.min:g}")
    if point.max is not None and value > point.max:
        return _Bad(f"{_shown(value)} is above the declared max {point.max:g}")
    return value


def check_write(
    point: PointConfig, value: object, *, device: DeviceConfig, model: DeviceModel
) -> PlannedWrite | Refusal:
    """Check one write of `value` to `point` (see the module docstring for the rules)."""
    name = point.measurepoint
    if not point.writable or point.table in (Table.DISCRETE, Table.INPUT):
        return Refusal(name, ReplyCode.POINT_NOT_WRITABLE, "read-only (not writable in the model)")
    typed = _typed_value(point, value)
    if isinstance(typed, _Bad):
        return Refusal(name, ReplyCode.VALUE_OUT_OF_RANGE, typed.reason)
    byte_order, word_order = codec.point_orders(point, device, model)
    bit_in_register = point.table is Table.HOLDING and point.bit is not None
    try:
        words = codec.encode(
            point,
            typed,
            byte_order=byte_order,
            word_order=word_order,
            current=0 if bit_in_register else None,
        )
        if bit_in_register:
            expected: Value = bool(typed)
        else:
            expected = codec.decode(point, words, byte_order=byte_order, word_order=word_order)
    except (ValueError, OverflowError) as exc:  # CodecError is a ValueError
        detail = show(str(exc).removeprefix(f"{name}: "), 160)
        return Refusal(name, ReplyCode.VALUE_OUT_OF_RANGE, f"cannot be encoded: {detail}")
    return PlannedWrite(point, typed, expected)


def _points_by_name(model: DeviceModel) -> dict[str, PointConfig]:
    return {p.measurepoint: p for p in model.points}


def plan_set(
    params: Mapping[str, object], *, device: DeviceConfig, model: DeviceModel
) -> WritePlan:
    """Check every point of a `measurepoint.set` (all of them, so the reply names each)."""
    points = _points_by_name(model)
    writes: list[PlannedWrite] = []
    refusals: list[Refusal] = []
    for name, value in params.items():
        point = points.get(name)
        if point is None:
            refusals.append(Refusal(show(name), ReplyCode.POINT_UNKNOWN, "unknown measurepoint"))
            continue
        checked = check_write(point, value, device=device, model=model)
        if isinstance(checked, Refusal):
            refusals.append(checked)
        else:
            writes.append(checked)
    return WritePlan(tuple(writes), tuple(refusals))


def plan_get(names: Sequence[str], *, model: DeviceModel) -> GetPlan:
    """The distinct known points of a `measurepoint.get`, in request order."""
    points = _points_by_name(model)
    unknown = [n for n in names if n not in points]
    refusals = tuple(
        Refusal(show(n), ReplyCode.POINT_UNKNOWN, "unknown measurepoint")
        for n in dict.fromkeys(unknown)
    )
    if not names:
        refusals = (
            Refusal("params", ReplyCode.COMMAND_INVALID_PARAMS, "name at least one measurepoint"),
        )
    return GetPlan(tuple(dict.fromkeys(n for n in names if n in points)), refusals)


# ---------------------------------------------------------------------------- services


def _check_param(spec: ServiceParam, value: object) -> str | None:
    """Why `value` does not fit parameter `spec`, or None."""
    kind = _json_kind(value)
    if spec.type == "bool":
        return None if isinstance(value, bool) else f"takes true/false, got {kind}"
    if spec.type == "string":
        return None if isinstance(value, str) else f"takes a string, got {kind}"
    if spec.type == "int" and not (isinstance(value, int) and not isinstance(value, bool)):
        return f"takes an integer, got {kind} {_shown(value)}"
    if not _is_number(value):
        return f"takes a number, got {kind} {_shown(value)}"
    assert isinstance(value, int | float)
    if isinstance(value, float) and not math.isfinite(value):
        return f"takes a finite number, got {_shown(value)}"
    if spec.min is not None and value < spec.min:
        return f"{_shown(value)} is below its min {spec.min:g}"
    if spec.max is not None and value > spec.max:
        return f"{_shown(value)} is above its max {spec.max:g}"
    return None


def _bind_params(service: ServiceConfig, params: Mapping[str, object]) -> list[Refusal]:
    invalid = ReplyCode.COMMAND_INVALID_PARAMS
    refusals = [
        Refusal(name, invalid, "missing parameter") for name in service.params if name not in params
    ]
    declared = ", ".join(service.params) or "none"
    for name, value in params.items():
        spec = service.params.get(name)
        if spec is None:
            unknown = f"unknown parameter (declared: {declared})"
            refusals.append(Refusal(show(name), invalid, unknown))
            continue
        reason = _check_param(spec, value)
        if reason is not None:
            refusals.append(Refusal(name, invalid, reason))
    return refusals


def plan_service(
    service_id: str,
    params: Mapping[str, object],
    *,
    device: DeviceConfig,
    model: DeviceModel,
) -> ServicePlan:
    """Bind a service's `$param` references and check every write before any is run."""
    service = next((s for s in model.services if s.id == service_id), None)
    if service is None:
        known = ", ".join(s.id for s in model.services) or "none"
        refusal = Refusal(
            show(service_id),
            ReplyCode.POINT_UNKNOWN,
            f"no such service on model {model.name!r} (services: {known})",
        )
        return ServicePlan(service_id, (), (), (refusal,))
    refusals = _bind_params(service, params)
    if refusals:
        return ServicePlan(service_id, (), tuple(service.outputs), tuple(refusals))
    points = _points_by_name(model)
    writes: list[PlannedWrite] = []
    for number, write in enumerate(service.writes, start=1):
        subject = f"{write.point} (write {number})"
        value: object = write.value
        if isinstance(value, str) and value.startswith("$"):
            if value[1:] not in params:  # the loader rejects this; guard a hand-built model
                refusals.append(
                    Refusal(subject, ReplyCode.COMMAND_INVALID_PARAMS, f"unbound {value}")
                )
                continue
            value = params[value[1:]]
        point = points.get(write.point)
        if point is None:
            refusals.append(Refusal(subject, ReplyCode.POINT_UNKNOWN, "unknown measurepoint"))
            continue
        checked = check_write(point, value, device=device, model=model)
        if isinstance(checked, Refusal):
            refusals.append(Refusal(subject, checked.code, checked.reason))
        else:
            writes.append(checked)
    unknown_outputs = [o for o in service.outputs if o not in points]
    refusals.extend(
        Refusal(o, ReplyCode.POINT_UNKNOWN, "unknown output measurepoint") for o in unknown_outputs
    )
    return ServicePlan(service_id, tuple(writes), tuple(service.outputs), tuple(refusals))


# ---------------------------------------------------------------------------- read-back


def same_value(expected: Value, actual: Value) -> bool:
    """Whether a read-back `actual` confirms a write expected to read back `expected`."""
    if isinstance(expected, bool) or isinstance(actual, bool):
        return isinstance(expected, bool) and isinstance(actual, bool) and expected == actual
    if isinstance(expected, str) or isinstance(actual, str):
        return isinstance(expected, str) and isinstance(actual, str) and expected == actual
    if isinstance(expected, int) and isinstance(actual, int):
        return expected == actual
    return math.isclose(expected, actual, rel_tol=FLOAT_TOLERANCE, abs_tol=1e-12)
