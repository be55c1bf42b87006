"""Line-tracking YAML loading: positions, duplicate keys, merges, syntax errors."""

from __future__ import annotations

from gatewayd.config.errors import ConfigError, ConfigIssue, format_path
from gatewayd.config.suggest import closest, did_you_mean
from gatewayd.config.yamlload import parse_yaml

TEXT = """\
gateway:
  broker:
    host: 127.0.0.1
devices:
  - name: a
    enum: {0: zero, 1: one}
  - name: b
"""


def test_every_node_has_its_line_and_column() -> None:
    """Values, list items and non-string keys map to their 1-based positions."""
    doc, issues = parse_yaml(TEXT, "f.yaml")
    assert issues == []
    assert doc is not None
    assert doc.data["devices"][0]["enum"] == {0: "zero", 1: "one"}
    assert doc.position(("gateway", "broker", "host")) == (3, 11)
    assert doc.position(("devices", 1)) == (7, 5)
    assert doc.position(("devices", 1, "name")) == (7, 11)
    assert doc.position(("devices", 0, "enum", "1")) == (6, 24)
    assert doc.position(("devices", 1, "name"), key=True) == (7, 5)


def test_missing_path_falls_back_to_nearest_parent() -> None:
    """A key that is not written is located at the mapping that should hold it."""
    doc, _ = parse_yaml(TEXT, "f.yaml")
    assert doc is not None
    assert doc.position(("gateway", "broker", "port")) == (3, 5)
    assert doc.position(("devices", 7, "name")) == (5, 3)


def test_duplicate_keys_are_reported_and_first_value_kept() -> None:
    """A repeated key is an issue at the repeat, naming the first line; the first wins."""
    doc, issues = parse_yaml("a: 1\nb: 2\na: 3\n", "f.yaml")
    assert doc is not None
    assert doc.data == {"a": 1, "b": 2}
    assert [i.render() for i in issues] == [
        "f.yaml:3:1: a: duplicate key 'a' (first given at line 1)"
    ]


def test_merge_keys_do_not_count_as_duplicates() -> None:
    """`<<: *anchor` fills keys not written explicitly; explicit keys override silently."""
    text = "base: &b {host: x, port: 1}\nbus:\n  <<: *b\n  port: 2\n"
    doc, issues = parse_yaml(text, "f.yaml")
    assert issues == []
    assert doc is not None
    assert doc.data["bus"] == {"host": "x", "port": 2}
    assert doc.position(("bus", "host")) == (1, 17)


def test_syntax_error_is_a_located_issue() -> None:
    """A YAML syntax error becomes FILE:LINE:COL with the parser's context as hint."""
    doc, issues = parse_yaml("a: [1, 2\nb: 3\n", "cfg.yaml")
    assert doc is None
    assert [i.render() for i in issues] == [
        "cfg.yaml:2:2: YAML syntax error: did not find expected ',' or ']' "
        "(while parsing a flow sequence that starts at line 1)"
    ]


def test_unknown_tag_is_reported() -> None:
    """Tags the safe loader does not know (e.g. !include) are errors, not crashes."""
    doc, issues = parse_yaml("a: !include other.yaml\n", "f.yaml")
    assert doc is not None
    assert [i.render() for i in issues] == [
        "f.yaml:1:4: a: unknown tag '!include' (remove the tag)"
    ]


def test_recursive_alias_is_reported() -> None:
    """An alias that contains itself is an issue instead of infinite recursion."""
    doc, issues = parse_yaml("a: &x\n  b: *x\n", "f.yaml")
    assert doc is not None
    assert [i.message for i in issues] == ["recursive alias"]


def test_empty_document_has_no_data() -> None:
    """Only comments: data is None and there is nothing to report yet."""
    doc, issues = parse_yaml("# nothing\n", "f.yaml")
    assert doc is not None
    assert (doc.data, issues) == (None, [])


def test_issue_rendering_omits_missing_parts() -> None:
    """No path → no path part; no position → no LINE:COL; no hint → no parentheses."""
    assert ConfigIssue("f", 1, 2, (), "bad").render() == "f:1:2: bad"
    assert ConfigIssue("f", None, None, (), "cannot read").render() == "f: cannot read"
    assert ConfigIssue("f", 3, 4, ("a", 0, "b"), "m", "h").render() == "f:3:4: a[0].b: m (h)"
    assert format_path(("devices", 2, "poll_interval")) == "devices[2].poll_interval"
    error = ConfigError([ConfigIssue("f", 1, 1, ("a",), "x")] * 2)
    assert error.render().splitlines()[-1] == "2 errors"
    assert ConfigError([ConfigIssue("f", 1, 1, ("a",), "x")]).lines()[-1] == "1 error"


def test_did_you_mean_finds_near_misses_only() -> None:
    """Close names are suggested (typos, case slips); unrelated ones are not."""
    assert did_you_mean("pol_interval", ["poll_interval", "name"]) == (
        "did you mean 'poll_interval'?"
    )
    assert closest("Input", ["input", "holding"]) == "input"
    assert closest("colour", ["path", "max_bytes"]) is None


def test_a_bare_boolean_word_as_a_key_is_that_word() -> None:
    """`on:` as a key is the text 'on' (a report rule's `on`); as a value it stays true."""
    doc, issues = parse_yaml("report: {on: change}\nenabled: on\nyes: 1\n", "f.yaml")
    assert issues == []
    assert doc is not None
    assert doc.data == {"report": {"on": "change"}, "enabled": True, "yes": 1}
