"""Upstream EnOS topics and payload shapes from enos-protocol.md §2–3 (pure, no I/O).

`route` says what a topic is (and which method it demands, §2.1 / 1260); the `check_*`
functions list every way a payload strays from the shapes §2.1 and §3.5 state. An empty
list means the payload is what the spec describes.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Any

_KEY = r"([^/]+)"


@dataclass(frozen=True)
class Route:
    """An upstream request topic: what it is, whose keys are in it, the method it demands."""

    kind: str  # login, login_batch, logout, topo_add, topo_get, topo_delete, post, ...
    product_key: str
    device_key: str
    method: str
    event_id: str = ""


_UPSTREAM: list[tuple[re.Pattern[str], str, str]] = [
    (re.compile(rf"^/ext/session/{_KEY}/{_KEY}/combine/login$"), "login", "combine.login"),
    (re.compile(rf"^/ext/session/{_KEY}/{_KEY}/combine/login/batch$"), "login_batch",
     "combine.login.batch"),
    (re.compile(rf"^/ext/session/{_KEY}/{_KEY}/combine/logout$"), "logout", "combine.logout"),
    (re.compile(rf"^/sys/{_KEY}/{_KEY}/thing/topo/add$"), "topo_add", "thing.topo.add"),
    (re.compile(rf"^/sys/{_KEY}/{_KEY}/thing/topo/get$"), "topo_get", "thing.topo.get"),
    (re.compile(rf"^/sys/{_KEY}/{_KEY}/thing/topo/delete$"), "topo_delete", "thing.topo.delete"),
    (re.compile(rf"^/sys/{_KEY}/{_KEY}/thing/device/register$"), "register",
     "thing.device.register"),
    (re.compile(rf"^/sys/{_KEY}/{_KEY}/thing/measurepoint/post$"), "post",
     "thing.measurepoint.post"),
    (re.compile(rf"^/sys/{_KEY}/{_KEY}/thing/measurepoint/post/batch$"), "post_batch",
     "thing.measurepoint.post.batch"),
    (re.compile(rf"^/sys/{_KEY}/{_KEY}/thing/measurepoint/resume$"), "resume",
     "thing.measurepoint.resume"),
    (re.compile(rf"^/sys/{_KEY}/{_KEY}/thing/measurepoint/resume/batch$"), "resume_batch",
     "thing.measurepoint.resume.batch"),
    # §3.6 #13-#15: on the (sub-)device's own topic.
    (re.compile(rf"^/sys/{_KEY}/{_KEY}/thing/attribute/update$"), "attribute_update",
     "thing.attribute.update"),
    (re.compile(rf"^/sys/{_KEY}/{_KEY}/thing/attribute/query$"), "attribute_query",
     "thing.attribute.query"),
    (re.compile(rf"^/sys/{_KEY}/{_KEY}/thing/attribute/delete$"), "attribute_delete",
     "thing.attribute.delete"),
    (re.compile(rf"^/sys/{_KEY}/{_KEY}/thing/tag/update$"), "tag_update", "thing.tag.update"),
    (re.compile(rf"^/sys/{_KEY}/{_KEY}/thing/tag/query$"), "tag_query", "thing.tag.query"),
    (re.compile(rf"^/sys/{_KEY}/{_KEY}/thing/tag/delete$"), "tag_delete", "thing.tag.delete"),
    (re.compile(rf"^/sys/{_KEY}/{_KEY}/thing/tsltemplate/get$"), "tsl_get",
     "thing.tsltemplate.get"),
]  # fmt: skip
_EVENT = re.compile(rf"^/sys/{_KEY}/{_KEY}/thing/event/{_KEY}/post$")
#: §3.8 / seeds 001-002: the product's integration channel (SDK spelling with the leading
#: slash; the docs' spelling without it is accepted too, §7.8).
_INTEGRATION_EVENT = re.compile(rf"^/?sys/{_KEY}/integration/event/post$")
#: Replies devices send to downstream commands (§3.0 rows 19–27).
_COMMAND_REPLY = re.compile(
    r"^(/sys/[^/]+/[^/]+/thing/service/.+"
    r"|/ext/session/[^/]+/[^/]+/combine/(enable|disable|delete)"
    r"|/ext/session/[^/]+/[^/]+/thing/activate/info)_reply$"
)


def route(topic: str) -> Route | None:
    """The upstream request this topic carries, or None for any other topic."""
    for pattern, kind, method in _UPSTREAM:
        match = pattern.match(topic)
        if match:
            return Route(kind, match[1], match[2], method)
    match = _EVENT.match(topic)
    if match:
        return Route("event", match[1], match[2], f"thing.event.{match[3]}.post", match[3])
    match = _INTEGRATION_EVENT.match(topic)
    if match:
        return Route("integration_event", match[1], "", "integration.event.post")
    return None


def is_command_reply(topic: str) -> bool:
    """Whether `topic` is where a device answers a downstream command."""
    return _COMMAND_REPLY.match(topic) is not None


def check_envelope(doc: object, method: str) -> list[str]:
    """Problems that make a request unusable (§2.1): not an object, a method that does not
    match the topic (1260), no params."""
    if not isinstance(doc, dict):
        return [f"payload is {type(doc).__name__}, not a JSON object"]
    problems = []
    if doc.get("method") != method:
        problems.append(f"method {doc.get('method')!r} does not match the topic ({method})")
    if "params" not in doc:
        problems.append("params missing")
    return problems


def check_id_and_version(doc: dict[str, Any]) -> list[str]:
    """Deviations the cloud tolerates but the spec advises against (§2.1): an id that is
    not a non-empty string (older docs type it Long), a version that is not a string."""
    problems = []
    request_id = doc.get("id")
    if not isinstance(request_id, str) or not request_id:
        problems.append(f"id {request_id!r} is not a non-empty string (§2.1)")
    if not isinstance(doc.get("version"), str):
        problems.append(f"version {doc.get('version')!r} is not a string")
    return problems


def check_time(value: object, where: str) -> list[str]:
    """`time` is an integer of Unix epoch milliseconds (§5), not seconds, not a float."""
    if isinstance(value, bool) or not isinstance(value, int):
        return [f"{where}: time {value!r} is not an integer"]
    # 2001-09-09 .. 2286-11-20 in ms: seconds or microseconds fall outside.
    if not 10**12 <= value < 10**13:
        return [f"{where}: time {value} is not epoch milliseconds"]
    return []


def check_value(value: object, where: str) -> list[str]:
    """A measurepoint value in one of the shapes of §3.5.4."""
    if isinstance(value, dict) and "value" in value and "quality" in value:
        quality = value["quality"]
        extra = set(value) - {"value", "quality"}
        problems = [f"{where}: unexpected keys {sorted(extra)}"] if extra else []
        if isinstance(quality, bool) or not isinstance(quality, int) or not 0 <= quality <= 9:
            problems.append(f"{where}: quality {quality!r} is not an integer 0-9")
        return problems + check_value(value["value"], where)
    if isinstance(value, float) and not math.isfinite(value):
        return [f"{where}: value {value} is not finite"]
    if isinstance(value, str | int | float | list | dict):
        return []
    return [f"{where}: value {value!r} has no shape of §3.5.4"]


@dataclass
class BatchRecord:
    """One (device, time) record of a batch; keys None = the device in the topic."""

    product_key: str | None
    device_key: str | None
    measurepoints: dict[str, Any]
    time: int


@dataclass
class BatchCheck:
    """A batch post/resume request taken apart: its records, flags and problems."""

    records: list[BatchRecord] = field(default_factory=list)
    allow_offline: bool = False
    skip_invalid: bool = False
    problems: list[str] = field(default_factory=list)


def check_batch(doc: dict[str, Any]) -> BatchCheck:
    """Check post.batch / resume.batch params (§3.5.2–3.5.3) and collect the records."""
    out = BatchCheck()
    for flag in ("allowOfflineSubDevice", "skipInvalidMeasurepoints"):
        if flag in doc and not isinstance(doc[flag], bool):
            out.problems.append(f"{flag} {doc[flag]!r} is not a boolean (top level, §2.1)")
    out.allow_offline = doc.get("allowOfflineSubDevice") is True
    out.skip_invalid = doc.get("skipInvalidMeasurepoints") is True
    params = doc.get("params")
    if not isinstance(params, list) or not params:
        out.problems.append(f"params is {type(params).__name__}, not a non-empty list")
        return out
    for index, item in enumerate(params):
        where = f"params[{index}]"
        if not isinstance(item, dict):
            out.problems.append(f"{where} is not an object")
            continue
        extra = set(item) - {"productKey", "deviceKey", "measurepoints", "time"}
        if extra:
            out.problems.append(f"{where}: unexpected keys {sorted(extra)}")
        pk, dk = item.get("productKey"), item.get("deviceKey")
        if (pk is None) != (dk is None):
            out.problems.append(f"{where}: productKey and deviceKey must come together")
        for name, key in (("productKey", pk), ("deviceKey", dk)):
            if key is not None and (not isinstance(key, str) or not key):
                out.problems.append(f"{where}: {name} {key!r} is not a non-empty string")
        points = item.get("measurepoints")
        if not isinstance(points, dict) or not points:
            out.problems.append(f"{where}: measurepoints is not a non-empty object")
            continue
        for name, value in points.items():
            out.problems += check_value(value, f"{where}.{name}")
        time_problems = check_time(item.get("time"), where)
        out.problems += time_problems
        if time_problems:
            continue
        out.records.append(BatchRecord(pk, dk, points, item["time"]))
    return out


def check_single_post(doc: dict[str, Any]) -> list[str]:
    """Params of a single-device post/resume (§3.5.1): measurepoints and time."""
    params = doc.get("params")
    if not isinstance(params, dict):
        return ["params is not an object"]
    points = params.get("measurepoints")
    if not isinstance(points, dict) or not points:
        return ["params.measurepoints is not a non-empty object"]
    problems = [p for name, v in points.items() for p in check_value(v, f"params.{name}")]
    return problems + check_time(params.get("time"), "params")


def check_event(doc: dict[str, Any]) -> list[str]:
    """Params of an event post (§3.6): an `events` object and a time."""
    params = doc.get("params")
    if not isinstance(params, dict):
        return ["params is not an object"]
    if not isinstance(params.get("events"), dict):
        return ["params.events is not an object"]
    return check_time(params.get("time"), "params")


def check_integration_event(doc: dict[str, Any]) -> list[str]:
    """Problems of an `integration.event.post` (seed 001, §3.8): params is a non-empty list
    of {deviceKey, events: {eventId: {param: value}}, time}; deviceKey alone names the
    device (the product is in the topic); time in epoch milliseconds."""
    params = doc.get("params")
    if not isinstance(params, list) or not params:
        return ["params is not a non-empty list"]
    problems = []
    for index, entry in enumerate(params):
        if not isinstance(entry, dict):
            problems.append(f"params[{index}] is not an object")
            continue
        extra = sorted(set(entry) - {"deviceKey", "events", "time"})
        if extra:
            problems.append(f"params[{index}] has keys the spec does not list: {extra}")
        if not isinstance(entry.get("deviceKey"), str) or not entry["deviceKey"]:
            problems.append(f"params[{index}].deviceKey is not a non-empty string")
        events = entry.get("events")
        if not isinstance(events, dict) or not events:
            problems.append(f"params[{index}].events is not a non-empty object")
        elif not all(isinstance(v, dict) for v in events.values()):
            problems.append(f"params[{index}].events values are not objects")
        stamp = entry.get("time")
        if not isinstance(stamp, int) or isinstance(stamp, bool) or stamp < 10**12:
            problems.append(f"params[{index}].time {stamp!r} is not epoch milliseconds")
    return problems
