"""Checks of one device model beyond field types: point shapes, overlaps, references.

Each point, event rule and service is validated on its own first, so one broken point
does not hide the overlaps and dangling references of the others; the field errors
themselves are reported by the whole-model validation (`loader`), not here.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from gatewayd.config.errors import ConfigIssue, DataPath
from gatewayd.config.models import (
    REGISTER_COUNT,
    AttributePointConfig,
    BitRule,
    DataType,
    EventRule,
    PointConfig,
    ServiceConfig,
    ServiceWrite,
    Table,
    ThresholdRule,
)
from gatewayd.config.suggest import hint_for
from gatewayd.config.yamlload import YamlDocument

_TABLE_NAMES = {
    Table.COIL: "coil",
    Table.DISCRETE: "discrete input",
    Table.HOLDING: "holding register",
    Table.INPUT: "input register",
}
_EVENT_ADAPTER: TypeAdapter[Any] = TypeAdapter(EventRule)


def valid_items(raw: object, kind: type[BaseModel] | TypeAdapter[Any]) -> Iterator[tuple[int, Any]]:
    """(index, validated item) for each item of the list `raw` that validates alone."""
    if not isinstance(raw, list):
        return
    for index, item in enumerate(raw):
        try:
            if isinstance(kind, TypeAdapter):
                yield index, kind.validate_python(item)
            else:
                yield index, kind.model_validate(item)
        except ValidationError:
            continue


@dataclass
class _Checker:
    doc: YamlDocument
    prefix: DataPath
    issues: list[ConfigIssue] = field(default_factory=list)

    def add(self, path: DataPath, message: str, hint: str | None = None) -> None:
        self.issues.append(self.doc.issue((*self.prefix, *path), message, hint))

    def line_of(self, path: DataPath) -> int:
        return self.doc.position((*self.prefix, *path))[0]


def check_model(doc: YamlDocument, prefix: DataPath, raw: object) -> list[ConfigIssue]:
    """Every rule violation of the model whose raw data sits at `prefix` in `doc`."""
    if not isinstance(raw, dict):
        return []
    checker = _Checker(doc, prefix)
    points = list(valid_items(raw.get("points"), PointConfig))
    # Names of all points, valid or not: a broken point is not also "unknown" elsewhere.
    names = {
        p["measurepoint"]: i
        for i, p in enumerate(raw.get("points") or [])
        if isinstance(p, dict) and isinstance(p.get("measurepoint"), str)
    }
    for index, point in points:
        _check_point_shape(checker, index, point)
    _check_duplicate_measurepoints(checker, points)
    _check_overlaps(checker, points)
    by_name = {point.measurepoint: point for _, point in points}
    _check_events(checker, raw.get("events"), names, by_name)
    _check_services(checker, raw.get("services"), names, by_name)
    _check_attributes(checker, raw.get("attributes"))
    return checker.issues


def _check_attributes(c: _Checker, raw: object) -> None:
    """Attribute points follow the point shape rules; their names are unique."""
    first: dict[str, int] = {}
    for index, attribute in valid_items(raw, AttributePointConfig):
        _check_point_shape(c, index, attribute.as_point(), section="attributes")
        seen = first.setdefault(attribute.attribute, index)
        if seen != index:
            c.add(
                ("attributes", index, "attribute"),
                f"duplicate attribute '{attribute.attribute}'",
                f"first used by attributes[{seen}] at line {c.line_of(('attributes', seen))}",
            )


def _check_point_shape(c: _Checker, i: int, p: PointConfig, section: str = "points") -> None:
    at: DataPath = (section, i)
    table_name = _TABLE_NAMES[p.table]
    if p.table.is_bit and p.type is not DataType.BOOL:
        c.add((*at, "type"), f"a {table_name} holds one bit: type must be bool")
    if p.bit is not None and p.table.is_bit:
        c.add((*at, "bit"), f"'bit' selects a bit of a register; a {table_name} is a bit already")
    elif p.bit is not None and p.type is not DataType.BOOL:
        c.add((*at, "bit"), f"'bit' needs type bool, not {p.type.value}")
    if not p.table.is_bit and p.type is DataType.BOOL and p.bit is None:
        c.add((*at, "bit"), f"required for a bool in a {table_name}", "the bit number, 0-15")
    if p.type is DataType.STRING and p.count is None:
        c.add((*at, "count"), "required for type string", "registers, two characters each")
    elif p.count is not None and p.type is not DataType.STRING:
        size = REGISTER_COUNT[p.type]
        unit = "register" if size == 1 else "registers"
        c.add(
            (*at, "count"),
            f"count {p.count} does not match type {p.type.value}",
            f"{p.type.value} takes {size} {unit}; remove count",
        )
    if p.enum is not None and not p.type.is_integer:
        c.add((*at, "enum"), f"enum needs an integer type, not {p.type.value}")
    if p.min is not None and p.max is not None and p.min > p.max:
        c.add((*at, "min"), f"min {p.min:g} is greater than max {p.max:g}")
    if p.writable and p.table in (Table.DISCRETE, Table.INPUT):
        c.add((*at, "writable"), f"{table_name}s are read-only", "use a coil or holding register")
    if p.address + max(p.register_count, 1) - 1 > 65535:
        c.add((*at, "address"), "point runs past address 65535")


def _check_duplicate_measurepoints(c: _Checker, points: list[tuple[int, PointConfig]]) -> None:
    first: dict[str, int] = {}
    for index, point in points:
        seen = first.setdefault(point.measurepoint, index)
        if seen != index:
            c.add(
                ("points", index, "measurepoint"),
                f"duplicate measurepoint '{point.measurepoint}'",
                f"first used by points[{seen}] at line {c.line_of(('points', seen))}",
            )


def _check_overlaps(c: _Checker, points: list[tuple[int, PointConfig]]) -> None:
    """Registers used twice in one table; bools with `bit` may share a register, but
    only with other bits of it."""
    # (table, address) → index of the whole-register point, or {bit: index}
    used: dict[tuple[Table, int], int | dict[int, int]] = {}
    by_index = dict(points)
    for index, point in points:
        span = point.register_count
        for address in range(point.address, point.address + span):
            owner = used.get((point.table, address))
            clash = _clash(owner, point)
            if clash is not None:
                other = by_index[clash]
                where = f"{_TABLE_NAMES[point.table]} {address}"
                if point.bit is not None and isinstance(owner, dict):
                    where += f" bit {point.bit}"
                c.add(
                    ("points", index, "address"),
                    f"overlaps point '{other.measurepoint}' (points[{clash}]) at {where}",
                )
                break
            if point.bit is not None and not point.table.is_bit:
                bits = owner if isinstance(owner, dict) else {}
                bits[point.bit] = index
                used[(point.table, address)] = bits
            else:
                used[(point.table, address)] = index


def _clash(owner: int | dict[int, int] | None, point: PointConfig) -> int | None:
    if owner is None:
        return None
    if isinstance(owner, int):
        return owner
    if point.bit is None or point.table.is_bit:
        return next(iter(owner.values()))
    return owner.get(point.bit)


def _check_events(
    c: _Checker, raw: object, names: dict[str, int], by_name: dict[str, PointConfig]
) -> None:
    for index, rule in valid_items(raw, _EVENT_ADAPTER):
        at: DataPath = ("events", index, "point")
        if rule.point not in names:
            c.add(at, f"unknown point '{rule.point}'", hint_for(rule.point, names, known="points"))
            continue
        point = by_name.get(rule.point)
        if point is None:
            continue
        if isinstance(rule, BitRule) and point.type is not DataType.BOOL:
            c.add(at, f"{rule.rule} needs a bool point; '{rule.point}' is {point.type.value}")
        if isinstance(rule, ThresholdRule) and not point.type.is_numeric:
            c.add(at, f"threshold needs a numeric point; '{rule.point}' is {point.type.value}")
    _check_captures(c, raw, names)


#: Event parameters the engine sets itself (`gatewayd.mapping.events`).
_ENGINE_PARAMS = ("measurepoint", "value")


def _check_captures(c: _Checker, raw: object, names: dict[str, int]) -> None:
    """A capture names measurepoints of the model, once each; its file parameter is not
    one the rule already fills; its event is fired by this rule alone (the capture is
    found by the event's id)."""
    rules = list(valid_items(raw, _EVENT_ADAPTER))
    for index, rule in rules:
        capture = rule.capture
        if capture is None:
            continue
        at: DataPath = ("events", index, "capture")
        first: dict[str, int] = {}
        for p, name in enumerate(capture.points):
            if name not in names:
                c.add((*at, "points", p), f"unknown point '{name}'",
                      hint_for(name, names, known="points"))  # fmt: skip
            elif first.setdefault(name, p) != p:
                c.add((*at, "points", p), f"point '{name}' is listed twice")
        if capture.param in rule.params or capture.param in _ENGINE_PARAMS:
            by = "the rule's params" if capture.param in rule.params else "the event rule"
            c.add(
                (*at, "param"),
                f"parameter '{capture.param}' is filled by {by} already",
                "name the parameter the cloud model declares for the file",
            )
        others = [i for i, other in rules if other.event == rule.event and i != index]
        if others:
            c.add(
                at,
                f"event '{rule.event}' is also fired by events[{others[0]}] "
                f"(line {c.line_of(('events', others[0]))}); a captured event needs its own id",
            )


def _check_services(
    c: _Checker, raw: object, names: dict[str, int], by_name: dict[str, PointConfig]
) -> None:
    first: dict[str, int] = {}
    for index, service in valid_items(raw, ServiceConfig):
        at: DataPath = ("services", index)
        seen = first.setdefault(service.id, index)
        if seen != index:
            c.add(
                (*at, "id"),
                f"duplicate service '{service.id}'",
                f"first defined at line {c.line_of(('services', seen))}",
            )
        for name, param in service.params.items():
            if param.min is not None and param.max is not None and param.min > param.max:
                c.add(
                    (*at, "params", name, "min"),
                    f"min {param.min:g} is greater than max {param.max:g}",
                )
        for w, write in enumerate(service.writes):
            _check_write(c, (*at, "writes", w), write, service, names=names, by_name=by_name)
        for o, output in enumerate(service.outputs):
            if output not in names:
                c.add(
                    (*at, "outputs", o),
                    f"unknown point '{output}'",
                    hint_for(output, names, known="points"),
                )


def _check_write(
    c: _Checker,
    at: DataPath,
    write: ServiceWrite,
    service: ServiceConfig,
    *,
    names: dict[str, int],
    by_name: dict[str, PointConfig],
) -> None:
    point_name, value = write.point, write.value
    if point_name not in names:
        c.add(
            (*at, "point"),
            f"unknown point '{point_name}'",
            hint_for(point_name, names, known="points"),
        )
    else:
        point = by_name.get(point_name)
        if point is not None and not point.writable:
            c.add(
                (*at, "point"),
                f"point '{point_name}' is not writable",
                "set 'writable: true' on the point",
            )
        elif point is not None and isinstance(value, int | float) and not isinstance(value, bool):
            if point.min is not None and value < point.min:
                c.add((*at, "value"), f"value {value:g} is below the point's min {point.min:g}")
            if point.max is not None and value > point.max:
                c.add((*at, "value"), f"value {value:g} is above the point's max {point.max:g}")
    if isinstance(value, str) and value.startswith("$"):
        param = value[1:]
        if param not in service.params:
            declared = [f"${p}" for p in service.params]
            hint = hint_for(value, declared, known="declared params")
            c.add(
                (*at, "value"),
                f"unknown parameter '{value}'",
                hint or f"declare '{param}' under the service's params",
            )
