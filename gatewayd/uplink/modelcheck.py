"""The YAML device models against the product's model in EnOS (`thing.tsltemplate.get`).

Pure: `CloudModel.parse` reads a TSL reply's data leniently (enos-protocol.md §3.6 #17:
the entry shape is not documented; a key that is present means the feature exists, a
type that cannot be read is "unknown" and never fails a check), and `check_model` lists
what the cloud would refuse with 1204: measurepoints, events and their parameters,
attributes and services it lacks, incompatible types, quality points without quality.
Each `Mismatch` carries the path of the offending item in the model (or, for a device's
static attribute, in gatewayd.yaml) so it prints like a local config error.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gatewayd.config.enums import DataType
from gatewayd.config.models import DeviceConfig, DeviceModel, StaticValue

DataPath = tuple[str | int, ...]

_INTEGER_TYPES = frozenset(
    {DataType.INT16, DataType.UINT16, DataType.INT32, DataType.UINT32, DataType.INT64,
     DataType.UINT64, DataType.BCD16, DataType.BCD32}
)  # fmt: skip
#: Cloud data types by family; anything else is "unknown" (not checked).
_FAMILIES = {
    "int": "int", "integer": "int", "long": "int", "short": "int",
    "float": "float", "double": "float", "decimal": "float",
    "enum": "enum", "text": "string", "string": "string",
    "bool": "bool", "boolean": "bool", "file": "file",
    "array": "array", "struct": "struct",
}  # fmt: skip
#: What each local kind may be sent as: the cloud families that accept its values.
_ACCEPTS = {
    "int": {"int", "float"},
    "float": {"float"},
    "string": {"string"},
    "bool": {"bool", "int", "enum"},
    "enum": {"enum", "string"},  # the label (the raw code when unmapped)
}


@dataclass(frozen=True)
class Feature:
    """One feature of the cloud model: its type family (None: unknown), quality, params."""

    family: str | None = None
    quality: bool | None = None  # None: the entry does not say
    params: frozenset[str] | None = None  # None: the entry does not list them


def _family(entry: Mapping[str, Any]) -> str | None:
    definition = entry.get("dataDefinition")
    raw = definition.get("dataType") if isinstance(definition, Mapping) else None
    if raw is None:
        raw = entry.get("dataType")
    if isinstance(raw, Mapping):  # {"type": "INT", ...}
        raw = raw.get("type")
    return _FAMILIES.get(raw.lower()) if isinstance(raw, str) else None


def _params(entry: Mapping[str, Any]) -> frozenset[str] | None:
    for key in ("outputData", "params", "parameters", "inputData"):
        listed = entry.get(key)
        if isinstance(listed, list):
            names = {
                item if isinstance(item, str) else item.get("identifier")
                for item in listed
                if isinstance(item, str | Mapping)
            }
            return frozenset(n for n in names if isinstance(n, str))
    return None


def _features(raw: Any) -> dict[str, Feature] | None:
    if not isinstance(raw, Mapping):
        return None  # the reply does not say: nothing of this kind is checked
    found = {}
    for name, value in raw.items():
        entry = value if isinstance(value, Mapping) else {}
        quality = entry.get("hasQuality")
        found[str(name)] = Feature(
            family=_family(entry),
            quality=quality if isinstance(quality, bool) else None,
            params=_params(entry),
        )
    return found


@dataclass(frozen=True)
class CloudModel:
    """The features of one product's model in EnOS; None: the reply has no such map."""

    measurepoints: dict[str, Feature] | None
    events: dict[str, Feature] | None
    attributes: dict[str, Feature] | None
    services: dict[str, Feature] | None

    @classmethod
    def parse(cls, data: Any) -> CloudModel | None:
        """The model in a TSL reply's data; None when it is not an object."""
        if not isinstance(data, Mapping):
            return None
        return cls(
            measurepoints=_features(data.get("tslMeasurepointMap")),
            events=_features(data.get("tslEventMap")),
            attributes=_features(data.get("tslAttributeMap")),
            services=_features(data.get("tslServiceMap")),
        )


@dataclass(frozen=True)
class Mismatch:
    """One difference: where (`in_config`: gatewayd.yaml, else the model) and what."""

    path: DataPath
    message: str
    in_config: bool = False
    point: str | None = None  # a measurepoint the cloud lacks: withheld by the daemon


def point_kind(
    type_: DataType, *, enum: bool = False, scale: float = 1.0, offset: float = 0.0
) -> str:
    """What gatewayd sends for a register value: int, float, string, bool or enum."""
    if enum:
        return "enum"
    if type_ is DataType.STRING:
        return "string"
    if type_ is DataType.BOOL:
        return "bool"
    if type_ in _INTEGER_TYPES and scale == 1.0 and offset == 0.0:
        return "int"
    return "float"


def static_kind(value: StaticValue) -> str:
    """What a static attribute's value is sent as."""
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "string"


def _lookup(features: dict[str, Feature] | None, name: str) -> Feature | None:
    """`name`'s feature; a map the reply did not give holds every name, type unknown."""
    return Feature() if features is None else features.get(name)


def _type_problem(kind: str, feature: Feature) -> str | None:
    if feature.family is None or feature.family in _ACCEPTS[kind]:
        return None
    return f"sends {kind} values but the cloud model's type is {feature.family}"


def check_model(
    model: DeviceModel, cloud: CloudModel, *, device: tuple[int, DeviceConfig] | None = None
) -> list[Mismatch]:
    """Every difference between `model` (and `device`'s static attributes: its index in
    `devices` and its config) and the cloud model that EnOS would refuse."""
    found: list[Mismatch] = []
    for i, p in enumerate(model.points):
        at: DataPath = ("points", i, "measurepoint")
        feature = _lookup(cloud.measurepoints, p.measurepoint)
        if feature is None:
            message = f"measurepoint '{p.measurepoint}' is not in the cloud model (withheld)"
            found.append(Mismatch(at, message, point=p.measurepoint))
            continue
        kind = point_kind(p.type, enum=p.enum is not None, scale=p.scale, offset=p.offset)
        if problem := _type_problem(kind, feature):
            found.append(Mismatch(at, f"measurepoint '{p.measurepoint}' {problem}"))
        if p.quality and feature.quality is False:
            found.append(Mismatch(("points", i, "quality"), f"measurepoint '{p.measurepoint}'"
                                  " sends a quality but the cloud model has none"))  # fmt: skip
    seen_events: set[str] = set()
    for i, rule in enumerate(model.events):
        if rule.event in seen_events:
            continue
        seen_events.add(rule.event)
        event = _lookup(cloud.events, rule.event)
        if event is None:
            found.append(Mismatch(("events", i, "event"),
                                  f"event '{rule.event}' is not in the cloud model"))  # fmt: skip
            continue
        sent = {"measurepoint", "value", *rule.params}
        if rule.capture is not None:
            sent.add(rule.capture.param)  # the capture's file goes in this parameter
        if event.params is not None and (extra := sorted(sent - event.params)):
            message = f"event '{rule.event}' sends parameters the cloud model lacks: "
            found.append(Mismatch(("events", i, "event"), message + ", ".join(extra)))
    for i, a in enumerate(model.attributes):
        at = ("attributes", i, "attribute")
        feature = _lookup(cloud.attributes, a.attribute)
        if feature is None:
            found.append(Mismatch(at, f"attribute '{a.attribute}' is not in the cloud model"))
            continue
        kind = point_kind(a.type, enum=a.enum is not None, scale=a.scale, offset=a.offset)
        if problem := _type_problem(kind, feature):
            found.append(Mismatch(at, f"attribute '{a.attribute}' {problem}"))
    for i, s in enumerate(model.services):
        if _lookup(cloud.services, s.id) is None:
            found.append(Mismatch(("services", i, "id"),
                                  f"service '{s.id}' is not in the cloud model"))  # fmt: skip
    if device is not None:
        index, config = device
        for name, value in config.attributes.items():
            at = ("devices", index, "attributes", name)
            feature = _lookup(cloud.attributes, name)
            if feature is None:
                found.append(Mismatch(at, f"attribute '{name}' is not in the cloud model",
                                      in_config=True))  # fmt: skip
            elif problem := _type_problem(static_kind(value), feature):
                found.append(Mismatch(at, f"attribute '{name}' {problem}", in_config=True))
    return found
