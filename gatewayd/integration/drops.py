"""An outbox drop's sidecar, checked against the site's devices and their models. Pure.

The outbox contract (README "File events"): a drop is `NAME` (the payload) and
`NAME.json` (the sidecar, written last, by rename):

    {"device": "inv-01", "event": "tripRecord", "file_param": "record",
     "params": {"reason": 7}, "time": 1733400000000, "filename": "trip.csv"}

`parse_sidecar` turns the sidecar's bytes into a `Drop` or raises `BadDrop` with one line
saying why; the caller (`outbox`) does the file system work.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gatewayd.config.models import Config, FileEventConfig
from gatewayd.mapping.capture import capture_file_events

SIDECAR_SUFFIX = ".json"
#: Names writers use while a file is not complete; never taken for a payload or sidecar.
UNFINISHED_SUFFIXES = (".part", ".tmp")
ERROR_SUFFIX = ".error"
#: EnOS' limit of one file part (integration/PROTOCOL.md §3.5).
MAX_FILE_BYTES = 100 * 1024 * 1024

_KEYS = frozenset({"device", "event", "file_param", "params", "time", "filename"})


class BadDrop(Exception):
    """A drop that cannot be uploaded; the message is the one line of its `.error` file."""


@dataclass(frozen=True, slots=True)
class DeviceFileEvents:
    """What a drop may name for one device: its EnOS identity and its model's file events."""

    product_key: str
    device_key: str
    events: Mapping[str, FileEventConfig]


def catalogue(config: Config) -> dict[str, DeviceFileEvents]:
    """Every configured device with the file events its model declares: its `file_events`
    and, implicitly, its capture rules' events (which the capture writer drops)."""
    found: dict[str, DeviceFileEvents] = {}
    for device in config.devices:
        model = config.models.get(device.model)
        events: dict[str, FileEventConfig] = {}
        if model is not None:
            events = {f.event: f for f in model.file_events}
            for implicit in capture_file_events(model):
                # Built from validated rules: no second validation (rule params are not
                # held to identifier names).
                events.setdefault(implicit["event"], FileEventConfig.model_construct(**implicit))
        found[device.name] = DeviceFileEvents(device.product_key, device.device_key, events)
    return found


@dataclass(frozen=True, slots=True)
class Drop:
    """A valid sidecar: which event of which device the payload belongs to."""

    device: str
    product_key: str
    device_key: str
    event: str
    file_param: str
    params: dict[str, str | int | float | bool]
    #: ms since the epoch; None: the sidecar's mtime (the caller knows it).
    time_ms: int | None
    #: The name EnOS keeps (`originalFilename`); None: the payload's name.
    filename: str | None


def payload_name(sidecar_name: str) -> str | None:
    """The payload that `sidecar_name` describes, or None when it is not a sidecar."""
    if not sidecar_name.endswith(SIDECAR_SUFFIX) or sidecar_name.startswith("."):
        return None
    payload = sidecar_name.removesuffix(SIDECAR_SUFFIX)
    if not payload or payload.endswith((*UNFINISHED_SUFFIXES, SIDECAR_SUFFIX)):
        return None
    return payload


def parse_sidecar(raw: bytes, devices: Mapping[str, DeviceFileEvents]) -> Drop:
    """The drop `raw` describes; `BadDrop` naming the first thing wrong with it."""
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise BadDrop(f"sidecar is not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise BadDrop("sidecar is not a JSON object")
    unknown = sorted(set(doc) - _KEYS)
    if unknown:
        raise BadDrop(f"sidecar has unknown keys {unknown} (known: {sorted(_KEYS)})")
    name = _text(doc, "device")
    device = devices.get(name)
    if device is None:
        raise BadDrop(f"unknown device {name!r} (configured: {sorted(devices)})")
    event_id = _text(doc, "event")
    declared = device.events.get(event_id)
    if declared is None:
        raise BadDrop(
            f"device {name!r}: event {event_id!r} is not in its model's file_events "
            f"(declared: {sorted(device.events)})"
        )
    file_param = _text(doc, "file_param")
    if file_param != declared.file_param:
        raise BadDrop(
            f"event {event_id!r}: file_param {file_param!r} is not the declared "
            f"{declared.file_param!r}"
        )
    params = doc.get("params", {})
    if not isinstance(params, dict):
        raise BadDrop("params must be a JSON object")
    _check_params(event_id, params, declared.params)
    time_ms = doc.get("time")
    if time_ms is not None and (isinstance(time_ms, bool) or not isinstance(time_ms, int)):
        raise BadDrop(f"time must be an integer (ms since the epoch), not {time_ms!r}")
    if isinstance(time_ms, int) and time_ms < 0:
        raise BadDrop(f"time must not be negative, not {time_ms}")
    filename = doc.get("filename")
    if filename is not None and (not isinstance(filename, str) or not filename.strip()):
        raise BadDrop(f"filename must be a non-empty string, not {filename!r}")
    return Drop(
        device=name,
        product_key=device.product_key,
        device_key=device.device_key,
        event=event_id,
        file_param=file_param,
        params=params,
        time_ms=time_ms,
        filename=filename,
    )


def _text(doc: dict[str, Any], key: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not value:
        raise BadDrop(f"{key} must be a non-empty string, not {value!r}")
    return value


def _check_params(event_id: str, given: dict[str, Any], declared: Mapping[str, str]) -> None:
    """Exactly the declared params, each of its declared type."""
    unknown = sorted(set(given) - set(declared))
    if unknown:
        raise BadDrop(
            f"event {event_id!r}: unknown params {unknown} (declared: {sorted(declared)})"
        )
    missing = sorted(set(declared) - set(given))
    if missing:
        raise BadDrop(f"event {event_id!r}: missing params {missing}")
    for param, kind in declared.items():
        value = given[param]
        if not _fits(value, kind):
            raise BadDrop(
                f"event {event_id!r}: param {param!r} must be {kind}, not {type(value).__name__} "
                f"{value!r}"
            )


def _fits(value: object, kind: str) -> bool:
    if isinstance(value, bool):
        return kind == "bool"  # JSON true is no number here
    if kind == "int":
        return isinstance(value, int)
    if kind == "float":
        return isinstance(value, int | float)
    if kind == "string":
        return isinstance(value, str)
    return False
