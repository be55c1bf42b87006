"""EnOS MQTT topics (PROTOCOL.md §3.0): builders, the reply rule, and a parser.

Every topic's path is written once, in `ROUTES`; the builders (`build`, and the named
builders such as `measurepoint_post`) and the parser are all made from that table. Builders
produce the exact SDK spelling (leading slash everywhere, also for the integration topics --
§7.8). The parser is what the emulator and the command dispatcher use: it never raises;
anything it does not recognise comes back as `TopicKind.UNKNOWN`.

Parsing order matters: ``thing/service/measurepoint/set`` and ``.../get`` share the prefix of
the generic ``thing/service/{serviceId}``; the specific patterns are tried first (as the SDKs
do), and a service id never contains ``/``, so ``measurepoint/set`` cannot be a service id.
A trailing ``_reply`` marks a reply (§2.3): a service literally named ``x_reply`` is therefore
indistinguishable from the reply of service ``x`` -- EnOS has the same ambiguity.
"""

from __future__ import annotations

import re
from collections.abc import Callable
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


# --- builders by name, made from ROUTES ------------------------------------------------------


def reply_topic(topic: str) -> str:
    """The topic EnOS (or the device) answers a request/command on: topic + ``_reply``."""
    return topic + REPLY_SUFFIX


def _spelling(kind: TopicKind, response: bool = False) -> str:
    route = _BY_KIND[(kind, response)]
    prefix = {
        "sys": "/sys/{pk}/{dk}/",
        "session": "/ext/session/{pk}/{dk}/",
        "integration": "/sys/{pk}/integration/",
    }[route.scope]
    return f"``{prefix}{route.path}`` (PROTOCOL.md §3.0)"


def _keyed(name: str, kind: TopicKind) -> Callable[[str, str], str]:
    def builder(pk: str, dk: str) -> str:
        return build(kind, pk, dk)

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = f"The ``{kind.value}`` topic: {_spelling(kind)}."
    return builder


def _with_id(
    name: str, kind: TopicKind, *, response: bool = False
) -> Callable[[str, str, str], str]:
    def builder(pk: str, dk: str, ident: str) -> str:
        return build(kind, pk, dk, ident, response=response)

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = f"The ``{kind.value}`` topic for one id: {_spelling(kind, response)}."
    return builder


def _of_product(name: str, kind: TopicKind) -> Callable[[str], str]:
    def builder(pk: str) -> str:
        return build(kind, pk)

    builder.__name__ = builder.__qualname__ = name
    builder.__doc__ = f"The ``{kind.value}`` topic (SDK spelling): {_spelling(kind)}."
    return builder


# Keys in the topic: the gateway's for combine/topo/register/batch topics, the device's own
# (gateway or logged-in sub-device) for the others.
combine_login = _keyed("combine_login", TopicKind.COMBINE_LOGIN)
combine_login_batch = _keyed("combine_login_batch", TopicKind.COMBINE_LOGIN_BATCH)
combine_logout = _keyed("combine_logout", TopicKind.COMBINE_LOGOUT)
combine_enable = _keyed("combine_enable", TopicKind.COMBINE_ENABLE)
combine_disable = _keyed("combine_disable", TopicKind.COMBINE_DISABLE)
combine_delete = _keyed("combine_delete", TopicKind.COMBINE_DELETE)
activate_info = _keyed("activate_info", TopicKind.ACTIVATE_INFO)
topo_add = _keyed("topo_add", TopicKind.TOPO_ADD)
topo_get = _keyed("topo_get", TopicKind.TOPO_GET)
topo_delete = _keyed("topo_delete", TopicKind.TOPO_DELETE)
device_register = _keyed("device_register", TopicKind.DEVICE_REGISTER)
measurepoint_post = _keyed("measurepoint_post", TopicKind.MEASUREPOINT_POST)
measurepoint_post_batch = _keyed("measurepoint_post_batch", TopicKind.MEASUREPOINT_POST_BATCH)
measurepoint_resume = _keyed("measurepoint_resume", TopicKind.MEASUREPOINT_RESUME)
measurepoint_resume_batch = _keyed("measurepoint_resume_batch", TopicKind.MEASUREPOINT_RESUME_BATCH)
event_post = _with_id("event_post", TopicKind.EVENT_POST)
attribute_update = _keyed("attribute_update", TopicKind.ATTRIBUTE_UPDATE)
attribute_query = _keyed("attribute_query", TopicKind.ATTRIBUTE_QUERY)
attribute_delete = _keyed("attribute_delete", TopicKind.ATTRIBUTE_DELETE)
tag_update = _keyed("tag_update", TopicKind.TAG_UPDATE)
tag_query = _keyed("tag_query", TopicKind.TAG_QUERY)
tag_delete = _keyed("tag_delete", TopicKind.TAG_DELETE)
tsl_template_get = _keyed("tsl_template_get", TopicKind.TSL_TEMPLATE_GET)
model_up_raw = _keyed("model_up_raw", TopicKind.MODEL_UP_RAW)
model_down_raw = _keyed("model_down_raw", TopicKind.MODEL_DOWN_RAW)
measurepoint_set = _keyed("measurepoint_set", TopicKind.MEASUREPOINT_SET)
measurepoint_get = _keyed("measurepoint_get", TopicKind.MEASUREPOINT_GET)
service = _with_id("service", TopicKind.SERVICE)
thing_enable = _keyed("thing_enable", TopicKind.THING_ENABLE)
thing_disable = _keyed("thing_disable", TopicKind.THING_DISABLE)
thing_delete = _keyed("thing_delete", TopicKind.THING_DELETE)
rrpc_request = _with_id("rrpc_request", TopicKind.RRPC)
rrpc_response = _with_id("rrpc_response", TopicKind.RRPC, response=True)  # not `_reply`
integration_measurepoint_post = _of_product(
    "integration_measurepoint_post", TopicKind.INTEGRATION_MEASUREPOINT_POST
)
integration_event_post = _of_product("integration_event_post", TopicKind.INTEGRATION_EVENT_POST)
integration_attribute_post = _of_product(
    "integration_attribute_post", TopicKind.INTEGRATION_ATTRIBUTE_POST
)
integration_up_raw = _of_product("integration_up_raw", TopicKind.INTEGRATION_UP_RAW)


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
