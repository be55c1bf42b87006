"""The one "warn once until recovered" helper: episodes open with one line, close with one."""

from __future__ import annotations

from typing import Any

from gatewayd.episodes import Episodes


class RecordingLogger:
    """Collects (level, event, fields) calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, dict[str, Any]]] = []

    def __getattr__(self, level: str) -> Any:
        return lambda event, **fields: self.calls.append((level, event, fields))


def test_failed_ok_logs_one_warning_and_one_recovery() -> None:
    """Ten failed polls give one warning; the recovery line counts them and the downtime."""
    now = [100.0]
    logger = RecordingLogger()
    edge = Episodes(logger, clock=lambda: now[0])
    assert edge.failed("meter-1", "device unreachable", device="meter-1", error="timeout")
    for _ in range(9):
        now[0] += 1
        assert not edge.failed("meter-1", "device unreachable", device="meter-1")
    assert "meter-1" in edge
    assert not edge.ok("meter-2")  # never failed: nothing to say
    now[0] += 0.5
    assert edge.ok("meter-1", "device recovered", device="meter-1")
    assert not edge.ok("meter-1")
    assert logger.calls == [
        ("warning", "device unreachable", {"device": "meter-1", "error": "timeout"}),
        ("info", "device recovered", {"failures": 10, "down_for_s": 9.5, "device": "meter-1"}),
    ]


def test_failed_ok_keys_are_independent() -> None:
    """Two devices failing each log once; forgetting one drops it silently."""
    logger = RecordingLogger()
    edge = Episodes(logger)
    edge.failed("a", "down", level="error")
    edge.failed("b", "down")
    edge.failed("a", "down")
    assert edge.open == ("a", "b")
    edge.forget(["a"])
    assert edge.open == ("b",)
    assert [call[0] for call in logger.calls] == ["error", "warning"]


def test_counted_episode_ends_with_its_count_and_no_duration() -> None:
    """start/add/end: one warning, the rows counted under the name given, no downtime."""
    logger = RecordingLogger()
    episodes = Episodes(logger)
    assert episodes.start("cap", "dropping rows", cap=10)
    assert not episodes.start("cap", "dropping rows", cap=10)
    episodes.add("cap", 3)
    episodes.add("cap", 4)
    assert episodes.count("cap") == 7
    assert episodes.end("cap", "no longer dropping", count_as="dropped_rows")
    assert not episodes.end("cap", "no longer dropping", count_as="dropped_rows")
    assert episodes.count("cap") == 0
    assert logger.calls == [
        ("warning", "dropping rows", {"cap": 10}),
        ("info", "no longer dropping", {"dropped_rows": 7}),
    ]


def test_set_opens_silently_and_end_without_count() -> None:
    """set replaces the count without a line; count_as=None closes with the bare event."""
    logger = RecordingLogger()
    episodes = Episodes(logger)
    episodes.set("ack_full", 5)
    episodes.set("ack_full", 2)
    assert "ack_full" in episodes
    assert episodes.count("ack_full") == 2
    assert episodes.end("ack_full", "deleted again", count_as="rows")
    episodes.add("settle_full", 1)
    assert episodes.end("settle_full", "settled again", count_as=None)
    assert logger.calls == [
        ("info", "deleted again", {"rows": 2}),
        ("info", "settled again", {}),
    ]


def test_downtime_counts_from_the_silent_open() -> None:
    """An episode opened by add is timed from that moment, not from a later start."""
    now = [10.0]
    logger = RecordingLogger()
    episodes = Episodes(logger, clock=lambda: now[0])
    episodes.add("x", 2)
    now[0] = 12.0
    assert not episodes.start("x", "never said: already open")
    now[0] = 15.25
    assert episodes.end("x", "over", timed_as="down_for_s")
    assert logger.calls == [("info", "over", {"failures": 2, "down_for_s": 5.2})]
