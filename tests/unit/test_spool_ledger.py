"""The delivery ledger without SQLite: in flight, cursors, unsettled rows, ack and nack.

Rows are plain tuples (id, device, points, ts_ms) and a list stands in for the table,
read the way the SQL store reads it: ids after the cursor, in id order, `window` rows.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewayd.spool.ledger import DeliveryLedger, TakeMode
from gatewayd.spool.rows import Kind

Row = tuple[int, str, int, int]  # id, device, points, ts_ms


def _table(count: int, *, ts_ms: int = 1000, device: str = "m1") -> list[Row]:
    return [(row_id, device, 10 + row_id, ts_ms + row_id) for row_id in range(1, count + 1)]


def _take(
    ledger: DeliveryLedger,
    table: list[Row],
    limit: int,
    *,
    kind: Kind = Kind.SAMPLES,
    older_than_ms: int | None = None,
    newer_than_ms: int | None = None,
    exclude: frozenset[str] = frozenset(),
) -> list[int]:
    """One take as `SpoolStore` does it: the ledger says where to read and keeps what it
    picks; the list plays the table (and the SQL filters)."""
    mode = TakeMode.of(older_than_ms, newer_than_ms)
    after = ledger.scan_from(kind, mode, exclude)
    window = ledger.window(kind, limit)
    read = [
        row
        for row in table
        if row[0] > after
        and row[1] not in exclude
        and (newer_than_ms is None or row[-1] >= newer_than_ms)
    ][:window]
    taken = ledger.take(kind, mode, read, limit, older_than_ms)
    for row in taken:
        if kind is Kind.SAMPLES:
            ledger.weigh(row[0], row[2])
    return [row[0] for row in taken]


def test_taken_rows_are_in_flight_and_not_handed_out_twice() -> None:
    """A second take skips the rows in flight and goes on after them."""
    ledger, table = DeliveryLedger(), _table(5)
    assert _take(ledger, table, 2) == [1, 2]
    assert _take(ledger, table, 2) == [3, 4]
    assert ledger.in_flight(Kind.SAMPLES) == 4
    assert ledger.in_flight_ids(Kind.SAMPLES) == [1, 2, 3, 4]
    assert ledger.in_flight_points() == 11 + 12 + 13 + 14
    assert ledger.in_flight(Kind.EVENTS) == 0
    assert _take(ledger, table, 10) == [5]
    assert _take(ledger, table, 10) == []


def test_the_cursor_skips_what_is_in_flight_and_the_window_covers_the_rest() -> None:
    """The scan starts after the last row taken; the window adds the rows in flight."""
    ledger, table = DeliveryLedger(), _table(6)
    assert ledger.scan_from(Kind.SAMPLES, TakeMode.ALL, frozenset()) == 0
    _take(ledger, table, 3)
    assert ledger.scan_from(Kind.SAMPLES, TakeMode.ALL, frozenset()) == 3
    assert ledger.window(Kind.SAMPLES, 2) == 2 + 3
    # Each mode keeps its own cursor.
    assert ledger.scan_from(Kind.SAMPLES, TakeMode.LIVE, frozenset()) == 0
    assert ledger.scan_from(Kind.EVENTS, TakeMode.ALL, frozenset()) == 0


def test_ack_path_lands_only_rows_in_flight_once_each() -> None:
    """Stale and repeated ids are ignored; landing returns the frames' points."""
    ledger, table = DeliveryLedger(), _table(4)
    _take(ledger, table, 3)
    assert ledger.owned(Kind.SAMPLES, [3, 99, 1]) == [3, 1]
    mine = ledger.to_ack(Kind.SAMPLES, [2, 2, 42, 1])
    assert mine == [2, 1]
    assert ledger.land(Kind.SAMPLES, mine) == 12 + 11
    assert ledger.in_flight_ids(Kind.SAMPLES) == [3]
    assert ledger.in_flight_points() == 13
    assert not ledger.holds(Kind.SAMPLES, 1)
    assert ledger.holds(Kind.SAMPLES, 3)
    # Acked rows are gone from the table; the next take goes on after the cursor.
    assert _take(ledger, [row for row in table if row[0] not in (1, 2)], 5) == [4]


def test_events_land_as_a_count_of_rows() -> None:
    """Events weigh one each; their ids are kept apart from the frames'."""
    ledger, table = DeliveryLedger(), _table(3)
    assert _take(ledger, table, 3, kind=Kind.EVENTS) == [1, 2, 3]
    assert _take(ledger, table, 3) == [1, 2, 3]  # frames with the same ids
    assert ledger.land(Kind.EVENTS, [1, 3]) == 2
    assert ledger.in_flight_ids(Kind.EVENTS) == [2]
    assert ledger.in_flight(Kind.SAMPLES) == 3


def test_nack_path_release_rewinds_the_cursor_below_the_oldest_row() -> None:
    """Released rows come out again, oldest first, before rows never taken."""
    ledger, table = DeliveryLedger(), _table(6)
    _take(ledger, table, 4)
    assert ledger.release(Kind.SAMPLES, [3, 2, 77]) == 2
    assert ledger.in_flight_points() == 11 + 14
    assert ledger.scan_from(Kind.SAMPLES, TakeMode.ALL, frozenset()) == 1
    assert _take(ledger, table, 3) == [2, 3, 5]
    assert ledger.release(Kind.SAMPLES, [2]) == 1
    assert ledger.release(Kind.SAMPLES, [2]) == 0  # no longer in flight


def test_a_backlog_release_does_not_rewind_the_live_cursor() -> None:
    """A row taken as backlog can never be live again, so only live takes rescan."""
    ledger = DeliveryLedger()
    old, new = _table(3, ts_ms=0), [(row_id, "m1", 1, 10_000 + row_id) for row_id in (4, 5)]
    table = old + new
    assert _take(ledger, table, 5, newer_than_ms=10_000) == [4, 5]
    assert _take(ledger, table, 5, older_than_ms=10_000) == [1, 2, 3]
    ledger.release(Kind.SAMPLES, [2])
    assert ledger.scan_from(Kind.SAMPLES, TakeMode.LIVE, frozenset()) == 5
    assert ledger.scan_from(Kind.SAMPLES, TakeMode.BACKLOG, frozenset()) == 1
    ledger.release(Kind.SAMPLES, [4])
    assert ledger.scan_from(Kind.SAMPLES, TakeMode.LIVE, frozenset()) == 3


def test_a_backlog_take_does_not_pass_a_live_row() -> None:
    """Rows too new for the backlog are skipped without moving the cursor past them."""
    ledger = DeliveryLedger()
    table = [(1, "m1", 1, 100), (2, "m1", 1, 5000), (3, "m1", 1, 200)]
    assert _take(ledger, table, 5, older_than_ms=1000) == [1, 3]
    assert ledger.scan_from(Kind.SAMPLES, TakeMode.BACKLOG, frozenset()) == 1
    # Later row 2 is old enough: the backlog finds it.
    assert _take(ledger, table, 5, older_than_ms=9000) == [2]


def test_a_device_no_longer_excluded_starts_its_mode_over() -> None:
    """Rows of a held device are passed by the cursor, and found again once released."""
    ledger = DeliveryLedger()
    table = [(1, "held", 1, 1), (2, "free", 1, 2), (3, "held", 1, 3), (4, "free", 1, 4)]
    assert _take(ledger, table, 5, exclude=frozenset({"held"})) == [2, 4]
    assert ledger.scan_from(Kind.SAMPLES, TakeMode.ALL, frozenset({"held"})) == 4
    assert _take(ledger, table, 5) == [1, 3]


def test_release_all_keeps_the_events_another_sender_holds() -> None:
    """A new gateway session returns what the last one left in flight, but not the events
    an integration channel is still sending: a take skips them, and the channel's own ack
    or release still applies to them."""
    ledger, table = DeliveryLedger(), _table(6)
    assert _take(ledger, table, 2, kind=Kind.EVENTS, newer_than_ms=0) == [1, 2]
    assert _take(ledger, table, 2, kind=Kind.EVENTS, older_than_ms=10**9) == [3, 4]
    assert _take(ledger, table, 2, kind=Kind.EVENTS) == [5, 6]
    assert ledger.release_all(keep_backlog_events=True) == 4
    assert ledger.in_flight_ids(Kind.EVENTS) == [3, 4]
    assert _take(ledger, table, 10, kind=Kind.EVENTS) == [1, 2, 5, 6]
    assert ledger.owned(Kind.EVENTS, [4, 3]) == [4, 3]
    assert ledger.release(Kind.EVENTS, [4]) == 1
    assert _take(ledger, table, 10, kind=Kind.EVENTS) == [4]
    assert ledger.release_all() == 6  # without the channel, every event goes back


def test_unsettled_rows_stay_in_flight_and_go_with_the_next_ack() -> None:
    """Delivered rows whose delete failed are neither sent again nor forgotten."""
    ledger, table = DeliveryLedger(), _table(5)
    _take(ledger, table, 4)
    ledger.keep_unsettled(Kind.SAMPLES, [1, 2])
    assert ledger.unsettled(Kind.SAMPLES) == 2
    # The connection drops: everything else goes back, the unsettled rows stay out.
    assert ledger.release_all() == 2
    assert ledger.in_flight_ids(Kind.SAMPLES) == [1, 2]
    assert ledger.in_flight_points() == 11 + 12
    assert _take(ledger, table, 10) == [3, 4, 5]
    # The next ack deletes them first, then its own rows.
    mine = ledger.to_ack(Kind.SAMPLES, [4, 1])
    assert mine == [1, 2, 4]
    ledger.settled(Kind.SAMPLES)
    assert ledger.land(Kind.SAMPLES, mine) == 11 + 12 + 14
    assert ledger.unsettled(Kind.SAMPLES) == 0
    assert ledger.in_flight_ids(Kind.SAMPLES) == [3, 5]


def test_releasing_an_unsettled_row_forgets_it() -> None:
    """A row given back (a dead letter that could not be written) is no longer unsettled."""
    ledger, table = DeliveryLedger(), _table(2)
    _take(ledger, table, 2, kind=Kind.EVENTS)
    ledger.keep_unsettled(Kind.EVENTS, [1])
    assert ledger.release(Kind.EVENTS, [1]) == 1
    assert ledger.unsettled(Kind.EVENTS) == 0
    assert ledger.to_ack(Kind.EVENTS, []) == []


def test_reset_forgets_everything_in_flight() -> None:
    """After the file is replaced every row is new: nothing in flight, cursors at 0."""
    ledger, table = DeliveryLedger(), _table(3)
    _take(ledger, table, 3)
    ledger.keep_unsettled(Kind.SAMPLES, [1])
    ledger.reset()
    assert (ledger.in_flight(Kind.SAMPLES), ledger.unsettled(Kind.SAMPLES)) == (0, 0)
    assert ledger.in_flight_points() == 0
    assert _take(ledger, table, 3) == [1, 2, 3]


def test_a_take_mode_is_one_filter_at_most() -> None:
    """Live and backlog filters together are refused."""
    assert TakeMode.of(None, None) is TakeMode.ALL
    assert TakeMode.of(None, 5) is TakeMode.LIVE
    assert TakeMode.of(5, None) is TakeMode.BACKLOG
    with pytest.raises(ValueError, match="not both"):
        TakeMode.of(1, 2)


_OPS = st.lists(
    st.tuples(
        st.sampled_from(["take", "live", "backlog", "ack", "release", "release_all"]),
        st.integers(min_value=1, max_value=6),
    ),
    max_size=40,
)


@settings(max_examples=150, deadline=None)
@given(_OPS)
def test_no_row_is_lost_or_handed_out_twice(ops: list[tuple[str, int]]) -> None:
    """Any mix of takes, acks and releases: a row is out at most once at a time, and
    after release_all every row not acked comes out again exactly once."""
    ledger = DeliveryLedger()
    table: list[Row] = [(row_id, "m1", 1, row_id * 10) for row_id in range(1, 25)]
    out: set[int] = set()
    for op, n in ops:
        if op in ("take", "live", "backlog"):
            cut = {"take": {}, "live": {"newer_than_ms": 120}, "backlog": {"older_than_ms": 120}}
            got = _take(ledger, table, n, **cut[op])  # type: ignore[arg-type]
            assert not out & set(got)
            out |= set(got)
        elif op == "ack":
            mine = ledger.to_ack(Kind.SAMPLES, sorted(out)[:n])
            ledger.land(Kind.SAMPLES, mine)
            table = [row for row in table if row[0] not in mine]
            out -= set(mine)
        elif op == "release":
            back = sorted(out)[-n:]
            assert ledger.release(Kind.SAMPLES, back) == len(back)
            out -= set(back)
        else:
            ledger.release_all()
            out = set()
        assert set(ledger.in_flight_ids(Kind.SAMPLES)) == out
    ledger.release_all()
    assert _take(ledger, table, 100) == [row[0] for row in table]


def test_the_ledger_needs_no_sqlite() -> None:
    """Importing the ledger loads no sqlite3 and no third-party module of its own."""
    code = (
        "import sys; import gatewayd; before = set(sys.modules); "
        "import gatewayd.spool.ledger; "
        "print(sorted(m for m in set(sys.modules) - before if m.split('.')[0] != 'gatewayd'"
        " and (m.split('.')[0] not in sys.stdlib_module_names or 'sqlite' in m)))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]"
