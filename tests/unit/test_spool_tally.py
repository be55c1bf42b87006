"""The spool's in-memory figures (pure): what they count and when losses are persisted."""

from __future__ import annotations

from contextlib import nullcontext

import pytest

from gatewayd.spool import stats
from gatewayd.spool.rows import Kind
from gatewayd.spool.tally import COUNTER_KEYS, TableCounts, Tally, persisting

_EMPTY = TableCounts(frames=0, points=0, events=0, dead_letters=0)


class _Rollback(Exception):
    """Stands for any error inside a write transaction."""


def test_appends_drops_and_deliveries_move_rows_and_points() -> None:
    """Frames count rows and points; drops count their points as dropped."""
    tally = Tally()
    tally.load(TableCounts(frames=2, points=40, events=1, dead_letters=3), {})
    tally.appended(frames=3, points=60, events=2, unsendable=4)
    tally.dropped(Kind.SAMPLES, rows=1, weight=20)
    tally.dropped(Kind.EVENTS, rows=1, weight=1)
    tally.removed(Kind.SAMPLES, 2, 30)
    assert (tally.rows[Kind.SAMPLES], tally.points, tally.rows[Kind.EVENTS]) == (2, 50, 2)
    assert tally.counters[stats.META_DROPPED[Kind.SAMPLES]] == 20
    assert tally.counters[stats.META_DROPPED[Kind.EVENTS]] == 1
    assert tally.counters[stats.META_UNSENDABLE] == 4
    assert tally.counters[stats.META_APPENDED] == 60
    assert tally.dead_letters == 3


def test_every_counter_is_persisted_in_a_fixed_order() -> None:
    """The meta rows name every counter once, as text."""
    tally = Tally()
    tally.load(_EMPTY, {stats.META_APPENDED: 7})
    tally.trimmed(2)
    assert tally.to_persist() == [
        (key, "7" if key == stats.META_APPENDED else "2" if "dead_letters" in key else "0")
        for key in COUNTER_KEYS
    ]
    assert not tally.dirty


def _persist_then_fail(tally: Tally) -> None:
    with persisting(tally, nullcontext()):
        tally.to_persist()
        raise _Rollback


@pytest.mark.parametrize("commits", [False, True])
def test_lost_values_survive_a_reload_until_a_commit_writes_them(commits: bool) -> None:
    """Values lost while nothing could be written stay counted across reloads from the
    file, until a transaction that wrote the counters commits."""
    tally = Tally()
    tally.load(_EMPTY, {})
    tally.lost(points=5, events=1)
    with pytest.raises(_Rollback):
        _persist_then_fail(tally)
    tally.load(_EMPTY, {})  # the file still says 0
    assert tally.counters[stats.META_DROPPED[Kind.SAMPLES]] == 5
    assert tally.dirty
    if commits:
        with persisting(tally, nullcontext()):
            tally.to_persist()
        on_file = {stats.META_DROPPED[Kind.SAMPLES]: 5, stats.META_DROPPED[Kind.EVENTS]: 1}
        tally.load(_EMPTY, on_file)
        assert tally.counters[stats.META_DROPPED[Kind.SAMPLES]] == 5
        assert not tally.dirty
    else:
        with persisting(tally, nullcontext()):
            pass  # a commit that did not write the counters
        tally.load(_EMPTY, {})
        assert tally.counters[stats.META_DROPPED[Kind.EVENTS]] == 1
