"""Attribute and tag sync's pure parts (what changed, request sizes) and the state file."""

from __future__ import annotations

import json
from pathlib import Path

from gatewayd.uplink.attributes import MAX_PER_REQUEST, changed, chunks
from gatewayd.uplink.sentstate import SentState, device_id
from gatewayd.uplink.tags import tag_changes, tag_text


def test_changed_keeps_only_new_or_different_values() -> None:
    """Same value (even 5 vs 5.0 as JSON differs) is resent only when its JSON differs."""
    sent = {"serial": "SN1", "firmware": 312, "rated": 5.0, "gone": 1}
    current = {"serial": "SN1", "firmware": 313, "rated": 5.0, "site": "N"}
    assert changed(current, sent) == {"firmware": 313, "site": "N"}
    assert changed({"rated": 5}, {"rated": 5.0}) == {"rated": 5}
    assert changed({}, sent) == {}


def test_chunks_hold_at_most_200_in_name_order() -> None:
    """450 attributes go out as 200 + 200 + 50, each name once, sorted."""
    values = {f"a{i:03d}": i for i in range(450)}
    parts = list(chunks(values))
    assert [len(p) for p in parts] == [MAX_PER_REQUEST, MAX_PER_REQUEST, 50]
    assert [n for p in parts for n in p] == sorted(values)
    assert list(chunks({})) == []


def test_sent_state_survives_a_reload_with_mode_0600(tmp_path: Path) -> None:
    """What was recorded is what a new process reads back; the file is 0600."""
    path = tmp_path / "attributes.json"
    state = SentState(path)
    key = device_id("pk", "dk")
    state.update(key, {"serial": "SN1", "rated": 5.0})
    state.update(key, {"serial": "SN2"})
    assert path.stat().st_mode & 0o777 == 0o600
    assert SentState(path).get(key) == {"serial": "SN2", "rated": 5.0}
    state.remove(key, ["rated"])
    assert SentState(path).get(key) == {"serial": "SN2"}


def test_corrupt_sent_state_is_empty_not_fatal(tmp_path: Path) -> None:
    """A damaged file means 'send again' (harmless), never a crash; the next save repairs it."""
    path = tmp_path / "attributes.json"
    path.write_text('{"version": 1, "devices": {"pk&dk": 3}}')
    state = SentState(path)
    assert state.get("pk&dk") == {}
    state.update("pk&dk", {"a": 1})
    assert json.loads(path.read_text()) == {"version": 1, "devices": {"pk&dk": {"a": 1}}}
    path.write_text("not json")
    assert SentState(path).get("pk&dk") == {}


def test_tag_changes_updates_differences_and_deletes_dropped_keys() -> None:
    """Only differing values are updated; keys EnOS holds that the config lost are deleted."""
    sent = {"owner": "ACME", "line": "A", "critical": "true"}
    wanted = {"owner": "ACME", "critical": "false", "site": "N"}
    assert tag_changes(wanted, sent) == ({"critical": "false", "site": "N"}, ["line"])
    assert tag_changes(sent, sent) == ({}, [])


def test_tag_values_are_text_and_device_tags_win() -> None:
    """YAML true becomes "true" (not Python's "True"), numbers their text."""
    assert [tag_text(v) for v in (True, False, 3, 2.5, "x")] == ["true", "false", "3", "2.5", "x"]
