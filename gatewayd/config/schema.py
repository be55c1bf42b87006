"""JSON Schemas of `gatewayd.yaml` and of a device model file, from the pydantic models.

Shipped as `config/gatewayd.schema.json` and `config/model.schema.json` for editors
(yaml-language-server reads the `# yaml-language-server: $schema=...` comment at the top
of each example file); a test keeps the shipped files equal to `schema_text()`.
"""

from __future__ import annotations

import json
from typing import Any

from gatewayd.config.models import Config, DeviceModel

_DRAFT = "https://json-schema.org/draft/2020-12/schema"


def config_schema() -> dict[str, Any]:
    """The JSON Schema of `gatewayd.yaml`."""
    schema = Config.model_json_schema(mode="validation")
    return {"$schema": _DRAFT, "title": "gatewayd.yaml", **_without_title(schema)}


def model_schema() -> dict[str, Any]:
    """The JSON Schema of a device model file (`models/<name>.yaml`)."""
    schema = DeviceModel.model_json_schema(mode="validation")
    return {"$schema": _DRAFT, "title": "gatewayd device model", **_without_title(schema)}


def schema_text(*, model: bool = False) -> str:
    """The schema as the shipped file holds it: indented JSON and a final newline."""
    schema = model_schema() if model else config_schema()
    return json.dumps(schema, indent=2, sort_keys=False) + "\n"


def _without_title(schema: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in schema.items() if k != "title"}
