"""Map pydantic `ValidationError`s back to YAML positions and field-engineer wording.

A pydantic error location (`loc`) mixes data keys with schema labels (the tag of a
discriminated union member, `function-after[...]` for a union branch, `[key]` for a
dict key). Walking the loc against the validated data separates the two: what exists in
the data is the path, the rest is dropped. Errors of the branches of one union land on
the same path and are folded into one message.
"""

from __future__ import annotations

import re
import types
from collections.abc import Sequence
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from gatewayd.config.errors import ConfigIssue, DataPath, PathPart
from gatewayd.config.suggest import did_you_mean, hint_for
from gatewayd.config.yamlload import YamlDocument

_QUOTED = re.compile(r"'([^']*)'")
_SHOULD_BE = "Input should be "
#: Pydantic wordings that name Python types, in YAML terms.
_PLAIN = {
    "dict_type": "expected a mapping",
    "model_type": "expected a mapping",
    "model_attributes_type": "expected a mapping",
    "list_type": "expected a list",
    "path_type": "expected a path",
    "string_type": "expected a string",
}


def split_hint(message: str) -> tuple[str, str | None]:
    """`"x has no unit; did you mean '5s'?"` → (`"x has no unit"`, `"did you mean '5s'?"`)."""
    head, sep, tail = message.partition("; did you mean")
    if not sep:
        return message, None
    return head, "did you mean" + tail


def validation_issues(
    exc: ValidationError, doc: YamlDocument, root: type[BaseModel], data: Any, prefix: DataPath
) -> list[ConfigIssue]:
    """Issues for every error of `exc`, raised validating `data` (found at `prefix` in
    `doc`) as `root`."""
    grouped: dict[tuple[DataPath, bool], list[ErrorDetails]] = {}
    for error in exc.errors():
        path, at_key = _data_path(error, data)
        grouped.setdefault((path, at_key), []).append(error)
    issues = []
    for (data_path, at_key), errors in grouped.items():
        message, hint, path = _describe(errors, root, data_path)
        full = (*prefix, *path)
        issues.append(doc.issue(full, message, hint, key=at_key))
    return issues


def _data_path(error: ErrorDetails, data: Any) -> tuple[DataPath, bool]:
    """The part of `error['loc']` that names data, and whether it points at a key."""
    loc = error["loc"]
    path: list[PathPart] = []
    node = data
    for index, part in enumerate(loc):
        last = index == len(loc) - 1
        if part == "[key]":
            return tuple(path), True
        if isinstance(node, dict):
            key = _find_key(node, part)
            if key is not None:
                path.append(str(key))
                node = node[key]
                continue
            if last and error["type"] in ("missing", "extra_forbidden"):
                path.append(str(part))
            continue  # a union member's label, not data
        if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            path.append(part)
            node = node[part]
            continue
    return tuple(path), error["type"] == "extra_forbidden"


def _find_key(mapping: dict[Any, Any], part: PathPart) -> Any:
    if part in mapping:
        return part
    for key in mapping:
        if str(key) == str(part):
            return key
    return None


def _describe(
    errors: Sequence[ErrorDetails], root: type[BaseModel], path: DataPath
) -> tuple[str, str | None, DataPath]:
    """(message, hint, path) for the errors that landed on one path."""
    own = [e for e in errors if e["type"] in ("value_error", "assertion_error")]
    if own:  # our own validators speak the engineer's language: prefer them
        return (*split_hint(_own_message(own[0])), path)
    if len(errors) > 1:
        return _union_message(errors), None, path
    error = errors[0]
    kind, ctx = error["type"], error.get("ctx") or {}
    if kind == "missing":
        return "missing required key", None, path
    if kind == "extra_forbidden":
        model = _model_at(root, error["loc"][:-1])
        known = list(model.model_fields) if model is not None else []
        return "unknown key", hint_for(str(error["loc"][-1]), known, known="known keys"), path
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        discriminator = str(ctx.get("discriminator", "")).strip("'")
        tagged = (*path, discriminator) if discriminator else path
        if kind == "union_tag_not_found":
            return "missing required key", None, tagged
        tags = _QUOTED.findall(str(ctx.get("expected_tags", "")))
        tag = str(ctx.get("tag", ""))
        hint = hint_for(tag, tags, known="expected one of")
        return f"unknown {discriminator} '{tag}'", hint, tagged
    message = _PLAIN.get(kind) or _lower_first(error["msg"])
    if kind in ("literal_error", "enum") and isinstance(error["input"], str):
        return message, did_you_mean(error["input"], _QUOTED.findall(str(ctx["expected"]))), path
    if kind == "string_type" and isinstance(error["input"], bool):
        return message, "YAML reads yes/no/on/off as booleans; quote the value", path
    return message, None, path


def _own_message(error: ErrorDetails) -> str:
    cause = (error.get("ctx") or {}).get("error")
    return str(cause) if cause is not None else _lower_first(error["msg"])


def _union_message(errors: Sequence[ErrorDetails]) -> str:
    """One message for the failed branches of a union: `input should be 'auto' or ...`."""
    wants: list[str] = []
    for error in errors:
        msg = error["msg"]
        want = msg[len(_SHOULD_BE) :].split(",")[0] if msg.startswith(_SHOULD_BE) else msg
        if want not in wants:
            wants.append(want)
    joined = wants[0] if len(wants) == 1 else ", ".join(wants[:-1]) + " or " + wants[-1]
    return "input should be " + joined


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _model_at(root: Any, loc: Sequence[PathPart]) -> type[BaseModel] | None:
    """The model class validating the mapping at pydantic location `loc`."""
    tp = _unwrap(root)
    if get_origin(tp) in (Union, types.UnionType):
        members = [_unwrap(m) for m in get_args(tp) if m is not type(None)]
        if loc and isinstance(loc[0], str):
            for member in members:
                if _is_model(member) and loc[0] in _tags(member):
                    return _model_at(member, loc[1:])
        for member in members:
            found = _model_at(member, loc)
            if found is not None:
                return found
        return None
    if not loc:
        return tp if _is_model(tp) else None
    head, rest = loc[0], loc[1:]
    if _is_model(tp):
        field = tp.model_fields.get(str(head))
        return None if field is None else _model_at(field.annotation, rest)
    args = get_args(tp)
    if get_origin(tp) is list and args:
        return _model_at(args[0], rest)
    if get_origin(tp) is dict and len(args) == 2:
        return _model_at(args[1], rest)
    return None


def _unwrap(tp: Any) -> Any:
    while get_origin(tp) is Annotated:
        tp = get_args(tp)[0]
    return tp


def _is_model(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, BaseModel)


def _tags(model: type[BaseModel]) -> set[object]:
    """The values of a model's Literal fields: what a discriminated union selects it by."""
    values: set[object] = set()
    for field in model.model_fields.values():
        if get_origin(field.annotation) is Literal:
            values.update(get_args(field.annotation))
    return values
