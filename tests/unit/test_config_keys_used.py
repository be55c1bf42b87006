"""Every key the config's JSON Schema accepts is read by the code that acts on it.

A key that is accepted, validated and shipped in the schema but read by nothing tells an
engineer a setting works when it does nothing. The walk takes every property of the
shipped schemas (`gatewayd.config.schema`) and looks for its name as an attribute access
(`.name`) anywhere in `gatewayd/` outside `gatewayd/config/` (the config package only
validates and renders). Keys read generically, not as attributes, are listed with why.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from gatewayd.config.schema import config_schema, model_schema

PACKAGE = Path(__file__).resolve().parents[2] / "gatewayd"

#: Keys no `.name` access reads, and why that is right.
ALLOWED_UNREAD = {
    # Read by the loader itself: it is where the model files are loaded from, and the
    # loaded models (`Config.models`) are what the rest of the code reads.
    "models_dir": "consumed by gatewayd/config/loader.py when loading the models",
}


def _properties(schema: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(dotted path, key) for every property the schema accepts, following `$ref`s."""
    defs: dict[str, Any] = schema.get("$defs", {})

    def walk(node: object, path: str, seen: frozenset[str]) -> Iterator[tuple[str, str]]:
        if not isinstance(node, dict):
            return
        ref = node.get("$ref")
        if isinstance(ref, str):
            name = ref.rsplit("/", 1)[-1]
            if name not in seen:
                yield from walk(defs[name], path, seen | {name})
            return
        for key, sub in node.get("properties", {}).items():
            dotted = f"{path}.{key}" if path else key
            yield dotted, key
            yield from walk(sub, dotted, seen)
        for key in ("items", "additionalProperties"):
            yield from walk(node.get(key), f"{path}[*]" if key == "items" else f"{path}.*", seen)
        for key in ("anyOf", "oneOf", "allOf"):
            for sub in node.get(key, []):
                yield from walk(sub, path, seen)

    yield from walk(schema, "", frozenset())


def _attributes_read_outside_config() -> set[str]:
    """Every `x.name` attribute name in the package's code outside gatewayd/config/."""
    names: set[str] = set()
    for file in PACKAGE.rglob("*.py"):
        if (PACKAGE / "config") in file.parents:
            continue
        for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Attribute):
                names.add(node.attr)
    return names


def test_the_walk_finds_keys_at_every_depth() -> None:
    """The schema walk reaches top-level, nested, list-item and inline-model keys."""
    paths = {path for path, _ in _properties(config_schema())}
    assert {"spool.max_bytes", "gateway.broker.tls.verify", "uplink.auto_topo"} <= paths
    assert "devices[*].poll_interval" in paths
    assert "models.*.points[*].register" in paths or "models.*.points[*].address" in paths


def test_every_schema_key_is_read_by_the_code() -> None:
    """No key of gatewayd.yaml or a model file is accepted that no code outside config/ reads."""
    read = _attributes_read_outside_config()
    unread = sorted(
        {
            path
            for schema in (config_schema(), model_schema())
            for path, key in _properties(schema)
            if key not in read and key not in ALLOWED_UNREAD
        }
    )
    assert unread == [], f"schema keys nothing reads (remove them or use them): {unread}"


def test_allow_list_holds_only_keys_that_exist_and_are_unread() -> None:
    """Each allow-listed key is still in the schema and still not read as an attribute."""
    keys = {key for path, key in _properties(config_schema())}
    read = _attributes_read_outside_config()
    assert sorted(k for k in ALLOWED_UNREAD if k not in keys or k in read) == []
