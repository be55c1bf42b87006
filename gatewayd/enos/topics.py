"""EnOS MQTT topics (enos-protocol.md §3.0): builders, the reply rule, and a parser.

Builders produce the exact SDK spelling (leading slash everywhere, also for the integration
topics -- §7.8). The parser is what the emulator and the command dispatcher use: it never
raises; anything it does not recognise comes back as `TopicKind.UNKNOWN`.

Parsing order matters: ``thing/service/measurepoint/set`` and ``.../get`` share the prefix of
the generic ``thing/service/{serviceId}``; the specific patterns are tried first (as the SDKs
do), and a service id never contains ``/``, so ``measurepoint/set`` cannot be a service id.
A trailing ``_reply`` marks a reply (§2.3): a service literally named ``x_reply`` is therefore
indistinguishable from the reply of service ``x`` -- EnOS has the same ambiguity.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum

REPLY_SUFFIX = "_reply"


class TopicKind(StrEnum):
    """What a topic is about. The value is the request ``method`` where it is fixed."""

    COMBINE_LOGIN = "combine.login"
    COMBINE_LOGIN_BATCH = "combine.login.batch"
    COMBINE_LOGOUT = "combine.logout"
    COMBINE_ENABLE = "combine.enable"
    COMBINE_DISABLE = "combine.disable"
    COMBINE_DELETE = "combine.delete"
    ACTIVATE_INFO = "thing.activate.info"
    TOPO_ADD = "thing.topo.add"
    TOPO_GET = "thing.topo.get"
    TOPO_DELETE = "thing.topo.delete"
    DEVICE_REGISTER = "thing.device.register"
    MEASUREPOINT_POST = "thing.measurepoint.post"
    MEASUREPOINT_POST_BATCH = "thing.measurepoint.post.batch"
    MEASUREPOINT_RESUME = "thing.measurepoint.resume"
    MEASUREPOINT_RESUME_BATCH = "thing.measurepoint.resume.batch"
    EVENT_POST = "thing.event.{id}.post"
    ATTRIBUTE_UPDATE = "thing.attribute.update"
    ATTRIBUTE_QUERY = "thing.attribute.query"
    ATTRIBUTE_DELETE = "thing.attribute.delete"
    TAG_UPDATE = "thing.tag.update"
    TAG_QUERY = "thing.tag.query"
    TAG_DELETE = "thing.tag.delete"
    TSL_TEMPLATE_GET = "thing.tsltemplate.get"
    MODEL_UP_RAW = "raw.up"  # passthrough bytes: no method
    MODEL_DOWN_RAW = "raw.down"  # passthrough bytes: no method
    MEASUREPOINT_SET = "thing.service.measurepoint.set"
    MEASUREPOINT_GET = "thing.service.measurepoint.get"
    SERVICE = "thing.service.{id}"
    THING_ENABLE = "thing.enable"
    THING_DISABLE = "thing.disable"
    THING_DELETE = "thing.delete"
    RRPC = "rrpc"  # no envelope; the response topic is not `_reply`
    INTEGRATION_MEASUREPOINT_POST = "integration.measurepoint.post"
    INTEGRATION_EVENT_POST = "integration.event.post"
    INTEGRATION_ATTRIBUTE_POST = "integration.attribute.post"
    INTEGRATION_UP_RAW = "integration.raw.up"  # passthrough bytes: no method
    UNKNOWN = "unknown"


#: Kinds whose messages carry no JSON envelope (raw bytes) or no `method` at all.
_NO_METHOD = frozenset(
    {
        TopicKind.MODEL_UP_RAW,
        TopicKind.MODEL_DOWN_RAW,
        TopicKind.RRPC,
        TopicKind.INTEGRATION_UP_RAW,
        TopicKind.UNKNOWN,
    }
)


@dataclass(frozen=True, slots=True)
class ParsedTopic:
    """A recognised (or `UNKNOWN`) topic.

    `product_key`/`device_key` are the keys *in the topic* (the gateway's for combine/topo/
    batch topics; the device's own for per-device topics; `device_key` is None for
    integration topics). `extra` is the event id, service id or rrpc id where the topic has
    one. `is_reply` is True for ``..._reply`` topics (and rrpc responses).
    """

    kind: TopicKind
    product_key: str | None = None
    device_key: str | None = None
    extra: str | None = None
    is_reply: bool = False

    @property
    def method(self) -> str | None:
        """The ``method`` a request on this topic must carry (None: raw/rrpc/unknown)."""
        if self.kind in _NO_METHOD:
            return None
        if self.kind is TopicKind.EVENT_POST:
            return f"thing.event.{self.extra}.post"
        if self.kind is TopicKind.SERVICE:
            return f"thing.service.{self.extra}"
        return str(self.kind.value)


UNKNOWN_TOPIC = ParsedTopic(TopicKind.UNKNOWN)


# --- builders -------------------------------------------------------------------------------


def _sys(pk: str, dk: str, path: str) -> str:
    return f"/sys/{pk}/{dk}/{path}"


def _session(pk: str, dk: str, path: str) -> str:
    return f"/ext/session/{pk}/{dk}/{path}"


def reply_topic(topic: str) -> str:
    """The topic EnOS (or the device) answers a request/command on: topic + ``_reply``."""
    return topic + REPLY_SUFFIX


def combine_login(gw_pk: str, gw_dk: str) -> str:
    """Sub-device login (#1); keys are the gateway's."""
    return _session(gw_pk, gw_dk, "combine/login")


def combine_login_batch(gw_pk: str, gw_dk: str) -> str:
    """Sub-device batch login (#2)."""
    return _session(gw_pk, gw_dk, "combine/login/batch")


def combine_logout(gw_pk: str, gw_dk: str) -> str:
    """Sub-device logout (#3)."""
    return _session(gw_pk, gw_dk, "combine/logout")


def combine_enable(gw_pk: str, gw_dk: str) -> str:
    """Downstream: sub-devices enabled in the cloud (#23)."""
    return _session(gw_pk, gw_dk, "combine/enable")


def combine_disable(gw_pk: str, gw_dk: str) -> str:
    """Downstream: sub-devices disabled in the cloud (#24)."""
    return _session(gw_pk, gw_dk, "combine/disable")


def combine_delete(gw_pk: str, gw_dk: str) -> str:
    """Downstream: sub-devices deleted in the cloud (#25)."""
    return _session(gw_pk, gw_dk, "combine/delete")


def activate_info(pk: str, dk: str) -> str:
    """Downstream: device secret after a secure-mode-3 CONNECT (#27)."""
    return _session(pk, dk, "thing/activate/info")


def topo_add(gw_pk: str, gw_dk: str) -> str:
    """Add sub-devices to the gateway's topology (#4)."""
    return _sys(gw_pk, gw_dk, "thing/topo/add")


def topo_get(gw_pk: str, gw_dk: str) -> str:
    """List the gateway's topology (#5)."""
    return _sys(gw_pk, gw_dk, "thing/topo/get")


def topo_delete(gw_pk: str, gw_dk: str) -> str:
    """Remove sub-devices from the topology (#6)."""
    return _sys(gw_pk, gw_dk, "thing/topo/delete")


def device_register(gw_pk: str, gw_dk: str) -> str:
    """Dynamic registration of sub-devices (#7)."""
    return _sys(gw_pk, gw_dk, "thing/device/register")


def measurepoint_post(pk: str, dk: str) -> str:
    """Live measurepoints of one device (#8)."""
    return _sys(pk, dk, "thing/measurepoint/post")


def measurepoint_post_batch(gw_pk: str, gw_dk: str) -> str:
    """Live measurepoints of many devices, on the gateway's topic (#9)."""
    return _sys(gw_pk, gw_dk, "thing/measurepoint/post/batch")


def measurepoint_resume(pk: str, dk: str) -> str:
    """Backfilled measurepoints of one device (#10)."""
    return _sys(pk, dk, "thing/measurepoint/resume")


def measurepoint_resume_batch(gw_pk: str, gw_dk: str) -> str:
    """Backfilled measurepoints of many devices (#11)."""
    return _sys(gw_pk, gw_dk, "thing/measurepoint/resume/batch")


def event_post(pk: str, dk: str, event_id: str) -> str:
    """One event of one device (#12)."""
    _check_segment("event id", event_id)
    return _sys(pk, dk, f"thing/event/{event_id}/post")


def attribute_update(pk: str, dk: str) -> str:
    """Update device attributes (#13)."""
    return _sys(pk, dk, "thing/attribute/update")


def attribute_query(pk: str, dk: str) -> str:
    """Query device attributes (#14)."""
    return _sys(pk, dk, "thing/attribute/query")


def attribute_delete(pk: str, dk: str) -> str:
    """Delete device attributes (#15)."""
    return _sys(pk, dk, "thing/attribute/delete")


def tag_update(pk: str, dk: str) -> str:
    """Update device tags (#16)."""
    return _sys(pk, dk, "thing/tag/update")


def tag_query(pk: str, dk: str) -> str:
    """Query device tags (#16)."""
    return _sys(pk, dk, "thing/tag/query")


def tag_delete(pk: str, dk: str) -> str:
    """Delete device tags (#16)."""
    return _sys(pk, dk, "thing/tag/delete")


def tsl_template_get(pk: str, dk: str) -> str:
    """Fetch the device's thing model (#17)."""
    return _sys(pk, dk, "thing/tsltemplate/get")


def model_up_raw(pk: str, dk: str) -> str:
    """Passthrough upload (#18)."""
    return _sys(pk, dk, "thing/model/up_raw")


def model_down_raw(pk: str, dk: str) -> str:
    """Passthrough download (#22)."""
    return _sys(pk, dk, "thing/model/down_raw")


def measurepoint_set(pk: str, dk: str) -> str:
    """Downstream: set measurepoints (#19)."""
    return _sys(pk, dk, "thing/service/measurepoint/set")


def measurepoint_get(pk: str, dk: str) -> str:
    """Downstream: read measurepoints (#20, older docs/SDKs)."""
    return _sys(pk, dk, "thing/service/measurepoint/get")


def service(pk: str, dk: str, service_id: str) -> str:
    """Downstream: invoke a model service (#21)."""
    _check_segment("service id", service_id)
    return _sys(pk, dk, f"thing/service/{service_id}")


def thing_enable(pk: str, dk: str) -> str:
    """Downstream: the device itself was enabled (#26, SDK constant only)."""
    return _sys(pk, dk, "thing/enable")


def thing_disable(pk: str, dk: str) -> str:
    """Downstream: the device itself was disabled (#26)."""
    return _sys(pk, dk, "thing/disable")


def thing_delete(pk: str, dk: str) -> str:
    """Downstream: the device itself was deleted (#26)."""
    return _sys(pk, dk, "thing/delete")


def rrpc_request(pk: str, dk: str, rrpc_id: str) -> str:
    """Downstream RRPC request (#28, SDK constant only)."""
    _check_segment("rrpc id", rrpc_id)
    return _sys(pk, dk, f"rrpc/request/{rrpc_id}")


def rrpc_response(pk: str, dk: str, rrpc_id: str) -> str:
    """Answer to an RRPC request (#28): not the `_reply` rule."""
    _check_segment("rrpc id", rrpc_id)
    return _sys(pk, dk, f"rrpc/response/{rrpc_id}")


def integration_measurepoint_post(pk: str) -> str:
    """Integration channel measurepoints (#29, SDK spelling)."""
    return f"/sys/{pk}/integration/measurepoint/post"


def integration_event_post(pk: str) -> str:
    """Integration channel events (#30, SDK spelling; docs/seeds drop the leading slash)."""
    return f"/sys/{pk}/integration/event/post"


def integration_attribute_post(pk: str) -> str:
    """Integration channel attributes (#31, SDK spelling; docs say `attributes`)."""
    return f"/sys/{pk}/integration/attribute/post"


def integration_up_raw(pk: str) -> str:
    """Integration channel passthrough (#32, SDK spelling; docs say `integration/up_raw`)."""
    return f"/sys/{pk}/integration/model/up_raw"


def _check_segment(what: str, value: str) -> None:
    # An id with '/' or MQTT wildcards would build a topic that parses as something else.
    if not value or any(c in value for c in "/+#"):
        raise ValueError(f"EnOS {what} {value!r} must be non-empty without '/', '+' or '#'")


# --- parser ---------------------------------------------------------------------------------

_SEG = r"([^/]+)"
_PK_DK = rf"/sys/{_SEG}/{_SEG}/"
_SESSION = rf"/ext/session/{_SEG}/{_SEG}/"
_INTEGRATION = rf"/?sys/{_SEG}/integration/"

# Per-device/gateway patterns with (pk, dk[, extra]) groups, tried IN ORDER: the specific
# service patterns come before the generic `thing/service/{id}`.
_DEVICE_PATTERNS: tuple[tuple[re.Pattern[str], TopicKind], ...] = tuple(
    (re.compile(prefix + path + r"\Z"), kind)
    for prefix, path, kind in (
        (_SESSION, "combine/login", TopicKind.COMBINE_LOGIN),
        (_SESSION, "combine/login/batch", TopicKind.COMBINE_LOGIN_BATCH),
        (_SESSION, "combine/logout", TopicKind.COMBINE_LOGOUT),
        (_SESSION, "combine/enable", TopicKind.COMBINE_ENABLE),
        (_SESSION, "combine/disable", TopicKind.COMBINE_DISABLE),
        (_SESSION, "combine/delete", TopicKind.COMBINE_DELETE),
        (_SESSION, "thing/activate/info", TopicKind.ACTIVATE_INFO),
        (_PK_DK, "thing/topo/add", TopicKind.TOPO_ADD),
        (_PK_DK, "thing/topo/get", TopicKind.TOPO_GET),
        (_PK_DK, "thing/topo/delete", TopicKind.TOPO_DELETE),
        (_PK_DK, "thing/device/register", TopicKind.DEVICE_REGISTER),
        (_PK_DK, "thing/measurepoint/post", TopicKind.MEASUREPOINT_POST),
        (_PK_DK, "thing/measurepoint/post/batch", TopicKind.MEASUREPOINT_POST_BATCH),
        (_PK_DK, "thing/measurepoint/resume", TopicKind.MEASUREPOINT_RESUME),
        (_PK_DK, "thing/measurepoint/resume/batch", TopicKind.MEASUREPOINT_RESUME_BATCH),
        (_PK_DK, rf"thing/event/{_SEG}/post", TopicKind.EVENT_POST),
        (_PK_DK, "thing/attribute/update", TopicKind.ATTRIBUTE_UPDATE),
        (_PK_DK, "thing/attribute/query", TopicKind.ATTRIBUTE_QUERY),
        (_PK_DK, "thing/attribute/delete", TopicKind.ATTRIBUTE_DELETE),
        (_PK_DK, "thing/tag/update", TopicKind.TAG_UPDATE),
        (_PK_DK, "thing/tag/query", TopicKind.TAG_QUERY),
        (_PK_DK, "thing/tag/delete", TopicKind.TAG_DELETE),
        (_PK_DK, "thing/tsltemplate/get", TopicKind.TSL_TEMPLATE_GET),
        (_PK_DK, "thing/model/up_raw", TopicKind.MODEL_UP_RAW),
        (_PK_DK, "thing/model/down_raw", TopicKind.MODEL_DOWN_RAW),
        (_PK_DK, "thing/service/measurepoint/set", TopicKind.MEASUREPOINT_SET),
        (_PK_DK, "thing/service/measurepoint/get", TopicKind.MEASUREPOINT_GET),
        (_PK_DK, rf"thing/service/{_SEG}", TopicKind.SERVICE),
        (_PK_DK, "thing/enable", TopicKind.THING_ENABLE),
        (_PK_DK, "thing/disable", TopicKind.THING_DISABLE),
        (_PK_DK, "thing/delete", TopicKind.THING_DELETE),
    )
)

# Integration topics: SDK spelling with a leading slash, docs spelling without, and the docs'
# alternative path names (§7.8). Group 1 is the product key.
_INTEGRATION_PATTERNS: tuple[tuple[re.Pattern[str], TopicKind], ...] = tuple(
    (re.compile(_INTEGRATION + path + r"\Z"), kind)
    for path, kind in (
        ("measurepoint/post", TopicKind.INTEGRATION_MEASUREPOINT_POST),
        ("event/post", TopicKind.INTEGRATION_EVENT_POST),
        ("attributes?/post", TopicKind.INTEGRATION_ATTRIBUTE_POST),
        ("(?:model/)?up_raw", TopicKind.INTEGRATION_UP_RAW),
    )
)

_RRPC = re.compile(_PK_DK + rf"rrpc/(request|response)/{_SEG}\Z")


def parse_topic(topic: str) -> ParsedTopic:
    """Classify `topic`; returns `UNKNOWN_TOPIC` for anything unrecognised (never raises)."""
    rrpc = _RRPC.match(topic)
    if rrpc:
        pk, dk, direction, rrpc_id = rrpc.groups()
        return ParsedTopic(TopicKind.RRPC, pk, dk, rrpc_id, is_reply=direction == "response")

    is_reply = topic.endswith(REPLY_SUFFIX)
    base = topic[: -len(REPLY_SUFFIX)] if is_reply else topic
    for pattern, kind in _DEVICE_PATTERNS:
        match = pattern.match(base)
        if match:
            groups = match.groups()
            extra = groups[2] if len(groups) > 2 else None
            return ParsedTopic(kind, groups[0], groups[1], extra, is_reply)
    for pattern, kind in _INTEGRATION_PATTERNS:
        match = pattern.match(base)
        if match:
            return ParsedTopic(kind, match.group(1), None, None, is_reply)
    return UNKNOWN_TOPIC
