"""EnOS MQTT topics (PROTOCOL.md §3.0): builders, the reply rule, and a parser.

Every topic's path is written once, in `ROUTES`; the builders (`build` and one named
function per topic) and the parser are both made from that table. Builders produce the exact
SDK spelling (leading slash everywhere, also for the integration topics -- §7.8). The parser
is what the emulator and the command dispatcher use: it never raises; anything it does not
recognise comes back as `TopicKind.UNKNOWN`.

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


# --- the table -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Route:
    """One topic shape: the builders spell `path`; the parser also accepts `aliases`.

    `scope` is where the keys go: "sys" (``/sys/{pk}/{dk}/``), "session"
    (``/ext/session/{pk}/{dk}/``) or "integration" (``/sys/{pk}/integration/``, no device
    key). ``{id}`` in a path stands for the event, service or rrpc id. `response` marks the
    rrpc answer, which is not spelled by the ``_reply`` rule.
    """

    kind: TopicKind
    scope: str
    path: str
    aliases: tuple[str, ...] = ()
    response: bool = False


#: Every topic, written once: builders and parser both come from here. Parsing tries the
#: routes IN ORDER, so the specific service routes come before the generic
#: ``thing/service/{id}``.
ROUTES: tuple[Route, ...] = (
    Route(TopicKind.COMBINE_LOGIN, "session", "combine/login"),
    Route(TopicKind.COMBINE_LOGIN_BATCH, "session", "combine/login/batch"),
    Route(TopicKind.COMBINE_LOGOUT, "session", "combine/logout"),
    Route(TopicKind.COMBINE_ENABLE, "session", "combine/enable"),
    Route(TopicKind.COMBINE_DISABLE, "session", "combine/disable"),
    Route(TopicKind.COMBINE_DELETE, "session", "combine/delete"),
    Route(TopicKind.ACTIVATE_INFO, "session", "thing/activate/info"),
    Route(TopicKind.TOPO_ADD, "sys", "thing/topo/add"),
    Route(TopicKind.TOPO_GET, "sys", "thing/topo/get"),
    Route(TopicKind.TOPO_DELETE, "sys", "thing/topo/delete"),
    Route(TopicKind.DEVICE_REGISTER, "sys", "thing/device/register"),
    Route(TopicKind.MEASUREPOINT_POST, "sys", "thing/measurepoint/post"),
    Route(TopicKind.MEASUREPOINT_POST_BATCH, "sys", "thing/measurepoint/post/batch"),
    Route(TopicKind.MEASUREPOINT_RESUME, "sys", "thing/measurepoint/resume"),
    Route(TopicKind.MEASUREPOINT_RESUME_BATCH, "sys", "thing/measurepoint/resume/batch"),
    Route(TopicKind.EVENT_POST, "sys", "thing/event/{id}/post"),
    Route(TopicKind.ATTRIBUTE_UPDATE, "sys", "thing/attribute/update"),
    Route(TopicKind.ATTRIBUTE_QUERY, "sys", "thing/attribute/query"),
    Route(TopicKind.ATTRIBUTE_DELETE, "sys", "thing/attribute/delete"),
    Route(TopicKind.TAG_UPDATE, "sys", "thing/tag/update"),
    Route(TopicKind.TAG_QUERY, "sys", "thing/tag/query"),
    Route(TopicKind.TAG_DELETE, "sys", "thing/tag/delete"),
    Route(TopicKind.TSL_TEMPLATE_GET, "sys", "thing/tsltemplate/get"),
    Route(TopicKind.MODEL_UP_RAW, "sys", "thing/model/up_raw"),
    Route(TopicKind.MODEL_DOWN_RAW, "sys", "thing/model/down_raw"),
    Route(TopicKind.MEASUREPOINT_SET, "sys", "thing/service/measurepoint/set"),
    Route(TopicKind.MEASUREPOINT_GET, "sys", "thing/service/measurepoint/get"),
    Route(TopicKind.SERVICE, "sys", "thing/service/{id}"),
    Route(TopicKind.THING_ENABLE, "sys", "thing/enable"),
    Route(TopicKind.THING_DISABLE, "sys", "thing/disable"),
    Route(TopicKind.THING_DELETE, "sys", "thing/delete"),
    Route(TopicKind.RRPC, "sys", "rrpc/request/{id}"),
    Route(TopicKind.RRPC, "sys", "rrpc/response/{id}", response=True),
    # SDK spelling with a leading slash; the docs' spellings (no slash, other path names:
    # §7.8) are accepted too.
    Route(TopicKind.INTEGRATION_MEASUREPOINT_POST, "integration", "measurepoint/post"),
    Route(TopicKind.INTEGRATION_EVENT_POST, "integration", "event/post"),
    Route(
        TopicKind.INTEGRATION_ATTRIBUTE_POST, "integration", "attribute/post", ("attributes/post",)
    ),
    Route(TopicKind.INTEGRATION_UP_RAW, "integration", "model/up_raw", ("up_raw",)),
)

_BY_KIND: dict[tuple[TopicKind, bool], Route] = {(r.kind, r.response): r for r in ROUTES}
#: What each id placeholder names, for the error of a bad one.
_ID_NAMES = {TopicKind.EVENT_POST: "event id", TopicKind.SERVICE: "service id"}


def build(
    kind: TopicKind, pk: str, dk: str = "", ident: str = "", *, response: bool = False
) -> str:
    """The topic of `kind` for product key `pk` and device key `dk` (unused by integration
    topics), with `ident` in place of the route's event, service or rrpc id."""
    route = _BY_KIND[(kind, response)]
    path = route.path
    if "{id}" in path:
        _check_segment(_ID_NAMES.get(kind, "rrpc id"), ident)
        path = path.replace("{id}", ident)
    if route.scope == "integration":
        return f"/sys/{pk}/integration/{path}"
    if route.scope == "session":
        return f"/ext/session/{pk}/{dk}/{path}"
    return f"/sys/{pk}/{dk}/{path}"


def _check_segment(what: str, value: str) -> None:
    # An id with '/' or MQTT wildcards would build a topic that parses as something else.
    if not value or any(c in value for c in "/+#"):
        raise ValueError(f"EnOS {what} {value!r} must be non-empty without '/', '+' or '#'")


# --- builders by name (the paths are in ROUTES) ---------------------------------------------


def reply_topic(topic: str) -> str:
    """The topic EnOS (or the device) answers a request/command on: topic + ``_reply``."""
    return topic + REPLY_SUFFIX


def combine_login(gw_pk: str, gw_dk: str) -> str:
    """Sub-device login (#1); keys are the gateway's."""
    return build(TopicKind.COMBINE_LOGIN, gw_pk, gw_dk)


def combine_login_batch(gw_pk: str, gw_dk: str) -> str:
    """Sub-device batch login (#2)."""
    return build(TopicKind.COMBINE_LOGIN_BATCH, gw_pk, gw_dk)


def combine_logout(gw_pk: str, gw_dk: str) -> str:
    """Sub-device logout (#3)."""
    return build(TopicKind.COMBINE_LOGOUT, gw_pk, gw_dk)


def combine_enable(gw_pk: str, gw_dk: str) -> str:
    """Downstream: sub-devices enabled in the cloud (#23)."""
    return build(TopicKind.COMBINE_ENABLE, gw_pk, gw_dk)


def combine_disable(gw_pk: str, gw_dk: str) -> str:
    """Downstream: sub-devices disabled in the cloud (#24)."""
    return build(TopicKind.COMBINE_DISABLE, gw_pk, gw_dk)


def combine_delete(gw_pk: str, gw_dk: str) -> str:
    """Downstream: sub-devices deleted in the cloud (#25)."""
    return build(TopicKind.COMBINE_DELETE, gw_pk, gw_dk)


def activate_info(pk: str, dk: str) -> str:
    """Downstream: device secret after a secure-mode-3 CONNECT (#27)."""
    return build(TopicKind.ACTIVATE_INFO, pk, dk)


def topo_add(gw_pk: str, gw_dk: str) -> str:
    """Add sub-devices to the gateway's topology (#4)."""
    return build(TopicKind.TOPO_ADD, gw_pk, gw_dk)


def topo_get(gw_pk: str, gw_dk: str) -> str:
    """List the gateway's topology (#5)."""
    return build(TopicKind.TOPO_GET, gw_pk, gw_dk)


def topo_delete(gw_pk: str, gw_dk: str) -> str:
    """Remove sub-devices from the topology (#6)."""
    return build(TopicKind.TOPO_DELETE, gw_pk, gw_dk)


def device_register(gw_pk: str, gw_dk: str) -> str:
    """Dynamic registration of sub-devices (#7)."""
    return build(TopicKind.DEVICE_REGISTER, gw_pk, gw_dk)


def measurepoint_post(pk: str, dk: str) -> str:
    """Live measurepoints of one device (#8)."""
    return build(TopicKind.MEASUREPOINT_POST, pk, dk)


def measurepoint_post_batch(gw_pk: str, gw_dk: str) -> str:
    """Live measurepoints of many devices, on the gateway's topic (#9)."""
    return build(TopicKind.MEASUREPOINT_POST_BATCH, gw_pk, gw_dk)


def measurepoint_resume(pk: str, dk: str) -> str:
    """Backfilled measurepoints of one device (#10)."""
    return build(TopicKind.MEASUREPOINT_RESUME, pk, dk)


def measurepoint_resume_batch(gw_pk: str, gw_dk: str) -> str:
    """Backfilled measurepoints of many devices (#11)."""
    return build(TopicKind.MEASUREPOINT_RESUME_BATCH, gw_pk, gw_dk)


def event_post(pk: str, dk: str, event_id: str) -> str:
    """One event of one device (#12)."""
    return build(TopicKind.EVENT_POST, pk, dk, event_id)


def attribute_update(pk: str, dk: str) -> str:
    """Update device attributes (#13)."""
    return build(TopicKind.ATTRIBUTE_UPDATE, pk, dk)


def attribute_query(pk: str, dk: str) -> str:
    """Query device attributes (#14)."""
    return build(TopicKind.ATTRIBUTE_QUERY, pk, dk)


def attribute_delete(pk: str, dk: str) -> str:
    """Delete device attributes (#15)."""
    return build(TopicKind.ATTRIBUTE_DELETE, pk, dk)


def tag_update(pk: str, dk: str) -> str:
    """Update device tags (#16)."""
    return build(TopicKind.TAG_UPDATE, pk, dk)


def tag_query(pk: str, dk: str) -> str:
    """Query device tags (#16)."""
    return build(TopicKind.TAG_QUERY, pk, dk)


def tag_delete(pk: str, dk: str) -> str:
    """Delete device tags (#16)."""
    return build(TopicKind.TAG_DELETE, pk, dk)


def tsl_template_get(pk: str, dk: str) -> str:
    """Fetch the device's thing model (#17)."""
    return build(TopicKind.TSL_TEMPLATE_GET, pk, dk)


def model_up_raw(pk: str, dk: str) -> str:
    """Passthrough upload (#18)."""
    return build(TopicKind.MODEL_UP_RAW, pk, dk)


def model_down_raw(pk: str, dk: str) -> str:
    """Passthrough download (#22)."""
    return build(TopicKind.MODEL_DOWN_RAW, pk, dk)


def measurepoint_set(pk: str, dk: str) -> str:
    """Downstream: set measurepoints (#19)."""
    return build(TopicKind.MEASUREPOINT_SET, pk, dk)


def measurepoint_get(pk: str, dk: str) -> str:
    """Downstream: read measurepoints (#20, older docs/SDKs)."""
    return build(TopicKind.MEASUREPOINT_GET, pk, dk)


def service(pk: str, dk: str, service_id: str) -> str:
    """Downstream: invoke a model service (#21)."""
    return build(TopicKind.SERVICE, pk, dk, service_id)


def thing_enable(pk: str, dk: str) -> str:
    """Downstream: the device itself was enabled (#26, SDK constant only)."""
    return build(TopicKind.THING_ENABLE, pk, dk)


def thing_disable(pk: str, dk: str) -> str:
    """Downstream: the device itself was disabled (#26)."""
    return build(TopicKind.THING_DISABLE, pk, dk)


def thing_delete(pk: str, dk: str) -> str:
    """Downstream: the device itself was deleted (#26)."""
    return build(TopicKind.THING_DELETE, pk, dk)


def rrpc_request(pk: str, dk: str, rrpc_id: str) -> str:
    """Downstream RRPC request (#28, SDK constant only)."""
    return build(TopicKind.RRPC, pk, dk, rrpc_id)


def rrpc_response(pk: str, dk: str, rrpc_id: str) -> str:
    """Answer to an RRPC request (#28): not the `_reply` rule."""
    return build(TopicKind.RRPC, pk, dk, rrpc_id, response=True)


def integration_measurepoint_post(pk: str) -> str:
    """Integration channel measurepoints (#29, SDK spelling)."""
    return build(TopicKind.INTEGRATION_MEASUREPOINT_POST, pk)


def integration_event_post(pk: str) -> str:
    """Integration channel events (#30, SDK spelling; docs/seeds drop the leading slash)."""
    return build(TopicKind.INTEGRATION_EVENT_POST, pk)


def integration_attribute_post(pk: str) -> str:
    """Integration channel attributes (#31, SDK spelling; docs say `attributes`)."""
    return build(TopicKind.INTEGRATION_ATTRIBUTE_POST, pk)


def integration_up_raw(pk: str) -> str:
    """Integration channel passthrough (#32, SDK spelling; docs say `integration/up_raw`)."""
    return build(TopicKind.INTEGRATION_UP_RAW, pk)


# --- parser ---------------------------------------------------------------------------------

_SEG = "([^/]+)"
#: Each scope's prefix as a pattern: groups (pk, dk), or (pk) for the integration channel.
_SCOPE_PATTERNS = {
    "sys": f"/sys/{_SEG}/{_SEG}/",
    "session": f"/ext/session/{_SEG}/{_SEG}/",
    "integration": f"/?sys/{_SEG}/integration/",
}


def _pattern(route: Route) -> re.Pattern[str]:
    paths = "|".join(
        re.escape(p).replace(re.escape("{id}"), _SEG) for p in (route.path, *route.aliases)
    )
    return re.compile(f"{_SCOPE_PATTERNS[route.scope]}(?:{paths})\\Z")


#: (pattern, route) in table order; rrpc topics are matched whole (no `_reply` rule).
_PATTERNS = tuple((_pattern(route), route) for route in ROUTES if route.kind is not TopicKind.RRPC)
_RRPC_PATTERNS = tuple((_pattern(route), route) for route in ROUTES if route.kind is TopicKind.RRPC)


def parse_topic(topic: str) -> ParsedTopic:
    """Classify `topic`; returns `UNKNOWN_TOPIC` for anything unrecognised (never raises)."""
    for pattern, route in _RRPC_PATTERNS:
        match = pattern.match(topic)
        if match:
            pk, dk, rrpc_id = match.groups()
            return ParsedTopic(TopicKind.RRPC, pk, dk, rrpc_id, is_reply=route.response)

    is_reply = topic.endswith(REPLY_SUFFIX)
    base = topic[: -len(REPLY_SUFFIX)] if is_reply else topic
    for pattern, route in _PATTERNS:
        match = pattern.match(base)
        if match is None:
            continue
        if route.scope == "integration":
            return ParsedTopic(route.kind, match.group(1), None, None, is_reply)
        groups = match.groups()
        extra = groups[2] if len(groups) > 2 else None
        return ParsedTopic(route.kind, groups[0], groups[1], extra, is_reply)
    return UNKNOWN_TOPIC
