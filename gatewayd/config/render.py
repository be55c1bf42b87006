"""A `Config` as plain data for printing: units spelled out, secrets masked.

Durations print as `5s`/`250ms` and sizes as `256MiB` (the way they are written), enums
as their YAML spelling, paths as strings. Unset optional fields (None: "inherit" or
"not used") are left out so the output stays readable. A secret read from a file is not
printed at all (its `*_secret_file` is); an inline secret prints as `***`.
"""

from __future__ import annotations

from enum import Enum
from functools import cache
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import BaseModel, SecretStr

from gatewayd.config.units import format_duration, format_size, parse_duration, parse_size

MASK = "***"
_Kind = Literal["duration", "size"] | None


def render_config(model: BaseModel) -> dict[str, Any]:
    """`model` (a `Config` or any section) as YAML-ready plain data."""
    out: dict[str, Any] = {}
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if value is None:
            continue
        if isinstance(value, SecretStr) and getattr(model, f"{name}_file", None) is not None:
            continue  # read from its file: showing the file name says enough
        out[field.alias or name] = _render(value, _unit_kind(type(model), name))
    # A bus reads best as "name, type, ...": put the union's tag right after the name.
    if "type" in out and "name" in out:
        out = {"name": out.pop("name"), "type": out.pop("type"), **out}
    return out


def _render(value: Any, kind: _Kind) -> Any:
    if isinstance(value, SecretStr):
        return MASK
    if isinstance(value, BaseModel):
        return render_config(value)
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: _render(v, kind) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_render(v, kind) for v in value]
    if isinstance(value, bool) or kind is None:
        return value
    if kind == "duration" and isinstance(value, int | float):
        return format_duration(float(value))
    if kind == "size" and isinstance(value, int):
        return format_size(value)
    return value


@cache
def _unit_kind(model: type[BaseModel], name: str) -> _Kind:
    """Whether a field holds a duration or a size (found through Annotated/unions)."""
    info = model.model_fields[name]
    return _search(info.metadata) or _search([info.annotation])


def _search(items: Any) -> _Kind:
    for item in items:
        func = getattr(item, "func", None)
        if func is parse_duration:
            return "duration"
        if func is parse_size:
            return "size"
        metadata = getattr(item, "__metadata__", None)
        found = _search(metadata) if metadata else None
        found = found or (_search(get_args(item)) if get_args(item) else None)
        if found:
            return found
    return None
