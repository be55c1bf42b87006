"""EnOS topic builders and parser: every topic of spec §3.0, replies, ordering, unknowns."""

# ruff: noqa: E501  (the §3.0 catalogue reads best as one row per topic)

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gatewayd.enos import topics as t
from gatewayd.enos.topics import ParsedTopic, TopicKind, parse_topic, reply_topic

GW = ("gwPK", "gwDK")
SUB = ("subPK", "subDK")

# (built topic, exact expected string, kind, keys in topic, extra, method) for §3.0 #1-#32.
CATALOGUE = [
    (t.combine_login(*GW), "/ext/session/gwPK/gwDK/combine/login", TopicKind.COMBINE_LOGIN, GW, None, "combine.login"),
    (t.combine_login_batch(*GW), "/ext/session/gwPK/gwDK/combine/login/batch", TopicKind.COMBINE_LOGIN_BATCH, GW, None, "combine.login.batch"),
    (t.combine_logout(*GW), "/ext/session/gwPK/gwDK/combine/logout", TopicKind.COMBINE_LOGOUT, GW, None, "combine.logout"),
    (t.topo_add(*GW), "/sys/gwPK/gwDK/thing/topo/add", TopicKind.TOPO_ADD, GW, None, "thing.topo.add"),
    (t.topo_get(*GW), "/sys/gwPK/gwDK/thing/topo/get", TopicKind.TOPO_GET, GW, None, "thing.topo.get"),
    (t.topo_delete(*GW), "/sys/gwPK/gwDK/thing/topo/delete", TopicKind.TOPO_DELETE, GW, None, "thing.topo.delete"),
    (t.device_register(*GW), "/sys/gwPK/gwDK/thing/device/register", TopicKind.DEVICE_REGISTER, GW, None, "thing.device.register"),
    (t.measurepoint_post(*SUB), "/sys/subPK/subDK/thing/measurepoint/post", TopicKind.MEASUREPOINT_POST, SUB, None, "thing.measurepoint.post"),
    (t.measurepoint_post_batch(*GW), "/sys/gwPK/gwDK/thing/measurepoint/post/batch", TopicKind.MEASUREPOINT_POST_BATCH, GW, None, "thing.measurepoint.post.batch"),
    (t.measurepoint_resume(*SUB), "/sys/subPK/subDK/thing/measurepoint/resume", TopicKind.MEASUREPOINT_RESUME, SUB, None, "thing.measurepoint.resume"),
    (t.measurepoint_resume_batch(*GW), "/sys/gwPK/gwDK/thing/measurepoint/resume/batch", TopicKind.MEASUREPOINT_RESUME_BATCH, GW, None, "thing.measurepoint.resume.batch"),
    (t.event_post(*SUB, "overTemp"), "/sys/subPK/subDK/thing/event/overTemp/post", TopicKind.EVENT_POST, SUB, "overTemp", "thing.event.overTemp.post"),
    (t.attribute_update(*SUB), "/sys/subPK/subDK/thing/attribute/update", TopicKind.ATTRIBUTE_UPDATE, SUB, None, "thing.attribute.update"),
    (t.attribute_query(*SUB), "/sys/subPK/subDK/thing/attribute/query", TopicKind.ATTRIBUTE_QUERY, SUB, None, "thing.attribute.query"),
    (t.attribute_delete(*SUB), "/sys/subPK/subDK/thing/attribute/delete", TopicKind.ATTRIBUTE_DELETE, SUB, None, "thing.attribute.delete"),
    (t.tag_update(*SUB), "/sys/subPK/subDK/thing/tag/update", TopicKind.TAG_UPDATE, SUB, None, "thing.tag.update"),
    (t.tag_query(*SUB), "/sys/subPK/subDK/thing/tag/query", TopicKind.TAG_QUERY, SUB, None, "thing.tag.query"),
    (t.tag_delete(*SUB), "/sys/subPK/subDK/thing/tag/delete", TopicKind.TAG_DELETE, SUB, None, "thing.tag.delete"),
    (t.tsl_template_get(*SUB), "/sys/subPK/subDK/thing/tsltemplate/get", TopicKind.TSL_TEMPLATE_GET, SUB, None, "thing.tsltemplate.get"),
    (t.model_up_raw(*SUB), "/sys/subPK/subDK/thing/model/up_raw", TopicKind.MODEL_UP_RAW, SUB, None, None),
    (t.measurepoint_set(*SUB), "/sys/subPK/subDK/thing/service/measurepoint/set", TopicKind.MEASUREPOINT_SET, SUB, None, "thing.service.measurepoint.set"),
    (t.measurepoint_get(*SUB), "/sys/subPK/subDK/thing/service/measurepoint/get", TopicKind.MEASUREPOINT_GET, SUB, None, "thing.service.measurepoint.get"),
    (t.service(*SUB, "reset"), "/sys/subPK/subDK/thing/service/reset", TopicKind.SERVICE, SUB, "reset", "thing.service.reset"),
    (t.model_down_raw(*SUB), "/sys/subPK/subDK/thing/model/down_raw", TopicKind.MODEL_DOWN_RAW, SUB, None, None),
    (t.combine_enable(*GW), "/ext/session/gwPK/gwDK/combine/enable", TopicKind.COMBINE_ENABLE, GW, None, "combine.enable"),
    (t.combine_disable(*GW), "/ext/session/gwPK/gwDK/combine/disable", TopicKind.COMBINE_DISABLE, GW, None, "combine.disable"),
    (t.combine_delete(*GW), "/ext/session/gwPK/gwDK/combine/delete", TopicKind.COMBINE_DELETE, GW, None, "combine.delete"),
    (t.thing_enable(*SUB), "/sys/subPK/subDK/thing/enable", TopicKind.THING_ENABLE, SUB, None, "thing.enable"),
    (t.thing_disable(*SUB), "/sys/subPK/subDK/thing/disable", TopicKind.THING_DISABLE, SUB, None, "thing.disable"),
    (t.thing_delete(*SUB), "/sys/subPK/subDK/thing/delete", TopicKind.THING_DELETE, SUB, None, "thing.delete"),
    (t.activate_info(*SUB), "/ext/session/subPK/subDK/thing/activate/info", TopicKind.ACTIVATE_INFO, SUB, None, "thing.activate.info"),
]  # fmt: skip

INTEGRATION = [
    (t.integration_measurepoint_post("pk"), "/sys/pk/integration/measurepoint/post", TopicKind.INTEGRATION_MEASUREPOINT_POST, "integration.measurepoint.post"),
    (t.integration_event_post("pk"), "/sys/pk/integration/event/post", TopicKind.INTEGRATION_EVENT_POST, "integration.event.post"),
    (t.integration_attribute_post("pk"), "/sys/pk/integration/attribute/post", TopicKind.INTEGRATION_ATTRIBUTE_POST, "integration.attribute.post"),
    (t.integration_up_raw("pk"), "/sys/pk/integration/model/up_raw", TopicKind.INTEGRATION_UP_RAW, None),
]  # fmt: skip


Case = tuple[str, str, TopicKind, tuple[str, str], str | None, str | None]


@pytest.mark.parametrize("case", CATALOGUE, ids=[c[1] for c in CATALOGUE])
def test_catalogue_topic_builds_and_parses(case: Case) -> None:
    """Each §3.0 topic is spelled exactly and parses back to its kind, keys, extra, method."""
    built, expected, kind, keys, extra, method = case
    assert built == expected
    parsed = parse_topic(built)
    assert parsed == ParsedTopic(kind, keys[0], keys[1], extra, is_reply=False)
    assert parsed.method == method


@pytest.mark.parametrize("case", CATALOGUE, ids=[c[1] for c in CATALOGUE])
def test_catalogue_reply_topics_parse_as_replies(case: Case) -> None:
    """`topic + "_reply"` parses to the same kind with is_reply set."""
    built, expected, kind, keys, extra, _ = case
    reply = reply_topic(built)
    assert reply == expected + "_reply"
    assert parse_topic(reply) == ParsedTopic(kind, keys[0], keys[1], extra, is_reply=True)


@pytest.mark.parametrize(("built", "expected", "kind", "method"), INTEGRATION)
def test_integration_topics_with_and_without_leading_slash(
    built: str, expected: str, kind: TopicKind, method: str | None
) -> None:
    """SDK spelling (leading slash) is built; both spellings and replies parse."""
    assert built == expected
    for topic in (built, built.lstrip("/")):
        assert parse_topic(topic) == ParsedTopic(kind, "pk", None, None, is_reply=False)
        assert parse_topic(topic + "_reply").is_reply
    assert parse_topic(built).method == method


@pytest.mark.parametrize(
    ("topic", "kind"),
    [
        ("sys/pk/integration/attributes/post", TopicKind.INTEGRATION_ATTRIBUTE_POST),
        ("sys/pk/integration/up_raw", TopicKind.INTEGRATION_UP_RAW),
        ("/sys/pk/integration/up_raw_reply", TopicKind.INTEGRATION_UP_RAW),
    ],
)
def test_integration_docs_alias_paths(topic: str, kind: TopicKind) -> None:
    """The docs' alternative integration paths (§7.8) are recognised."""
    assert parse_topic(topic).kind is kind


def test_rrpc_request_and_response() -> None:
    """RRPC answers on `rrpc/response/{id}`, not `_reply`."""
    assert t.rrpc_request("pk", "dk", "77") == "/sys/pk/dk/rrpc/request/77"
    assert t.rrpc_response("pk", "dk", "77") == "/sys/pk/dk/rrpc/response/77"
    assert parse_topic("/sys/pk/dk/rrpc/request/77") == ParsedTopic(
        TopicKind.RRPC, "pk", "dk", "77", is_reply=False
    )
    parsed = parse_topic("/sys/pk/dk/rrpc/response/77")
    assert parsed.is_reply
    assert parsed.method is None


def test_measurepoint_set_and_get_win_over_generic_service() -> None:
    """`measurepoint/set|get` are not service ids; a service named `measurepoint` still is."""
    assert parse_topic("/sys/p/d/thing/service/measurepoint/set").kind is TopicKind.MEASUREPOINT_SET
    assert parse_topic("/sys/p/d/thing/service/measurepoint/get").kind is TopicKind.MEASUREPOINT_GET
    generic = parse_topic("/sys/p/d/thing/service/measurepoint")
    assert (generic.kind, generic.extra) == (TopicKind.SERVICE, "measurepoint")
    other = parse_topic("/sys/p/d/thing/service/measurepoint/put")
    assert other.kind is TopicKind.UNKNOWN


def test_service_reply_topic_keeps_service_id() -> None:
    """`thing/service/{id}_reply` is the reply of service {id} (§2.3)."""
    parsed = parse_topic("/sys/p/d/thing/service/reset_reply")
    assert parsed == ParsedTopic(TopicKind.SERVICE, "p", "d", "reset", is_reply=True)
    assert parsed.method == "thing.service.reset"


def test_event_ids_with_dots_and_underscores() -> None:
    """Event ids keep dots/underscores; only `/` delimits."""
    parsed = parse_topic("/sys/p/d/thing/event/over_temp.v2/post_reply")
    assert (parsed.kind, parsed.extra, parsed.is_reply) == (
        TopicKind.EVENT_POST,
        "over_temp.v2",
        True,
    )
    assert parsed.method == "thing.event.over_temp.v2.post"


@pytest.mark.parametrize(
    "topic",
    [
        "",
        "/",
        "garbage",
        "/sys/pk/dk",
        "/sys/pk/dk/thing/measurepoint/post/extra",
        "/sys//dk/thing/measurepoint/post",
        "/sys/pk//thing/measurepoint/post",
        "sys/pk/dk/thing/measurepoint/post",  # device topics need the leading slash
        "/ext/session/pk/dk/combine/login/batch/x",
        "/sys/pk/dk/thing/event//post",
        "/sys/pk/dk/thing/service/",
        "/sys/pk/dk/thing/topo/change",  # Alibaba's, not EnOS (§7.16)
        "/sys/pk/integration/",
        "_reply",
        "/sys/pk/dk/rrpc/request/",
    ],
)
def test_unknown_topics_are_unknown_not_errors(topic: str) -> None:
    """Anything unrecognised is `UNKNOWN` with no keys and no method."""
    parsed = parse_topic(topic)
    assert parsed.kind is TopicKind.UNKNOWN
    assert parsed.method is None
    assert parsed.product_key is None


@pytest.mark.parametrize("bad", ["", "a/b", "+", "x#"])
def test_builders_reject_ids_that_would_change_the_topic(bad: str) -> None:
    """Event/service/rrpc ids must be one non-wildcard segment."""
    for build in (
        lambda: t.event_post("p", "d", bad),
        lambda: t.service("p", "d", bad),
        lambda: t.rrpc_request("p", "d", bad),
    ):
        with pytest.raises(ValueError, match="must be non-empty"):
            build()


SEGMENT = st.text(
    alphabet=st.characters(blacklist_characters="/+#", blacklist_categories=("Cs",)),
    min_size=1,
    max_size=10,
)


@given(pk=SEGMENT, dk=SEGMENT, ident=SEGMENT.filter(lambda s: not s.endswith("_reply")))
def test_parse_never_raises_and_round_trips(pk: str, dk: str, ident: str) -> None:
    """Arbitrary keys and ids round-trip through builder and parser."""
    assert parse_topic(t.service(pk, dk, ident)) == ParsedTopic(TopicKind.SERVICE, pk, dk, ident)
    assert parse_topic(t.event_post(pk, dk, ident)).extra == ident
    assert parse_topic(t.measurepoint_post(pk, dk)).kind is TopicKind.MEASUREPOINT_POST


@given(st.text(max_size=80))
def test_parse_arbitrary_text_never_raises(topic: str) -> None:
    """The parser is total."""
    assert isinstance(parse_topic(topic), ParsedTopic)


def test_every_route_builds_what_it_parses() -> None:
    """Each row of the one table: built, then parsed back to its kind, keys and id; its
    `_reply` topic parses as the reply (rrpc answers by its own path instead); aliases too."""
    kinds = {route.kind for route in t.ROUTES}
    assert kinds == set(TopicKind) - {TopicKind.UNKNOWN}
    for route in t.ROUTES:
        ident = "id-1" if "{id}" in route.path else None
        topic = t.build(route.kind, "pk", "dk", ident or "", response=route.response)
        integration = route.scope == "integration"
        dk = None if integration else "dk"
        parsed = parse_topic(topic)
        assert parsed == ParsedTopic(route.kind, "pk", dk, ident, route.response), topic
        if route.kind is not TopicKind.RRPC:
            assert parse_topic(reply_topic(topic)) == ParsedTopic(route.kind, "pk", dk, ident, True)
        for alias in route.aliases:
            assert parse_topic(f"sys/pk/integration/{alias}").kind is route.kind
