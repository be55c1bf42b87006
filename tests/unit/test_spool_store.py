"""Spool begin/commit semantics on a real SQLite file: take, ack, release, dead letters."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gatewayd.config.models import SyncMode
from gatewayd.samples import Event, Quality, Sample, SampleBlock
from gatewayd.spool.rows import Kind
from gatewayd.spool.store import SpoolStore
from gatewayd.uplink.frames import EnosQuality
from tests.unit.spool_points import Point, take_points

CAP = 64 << 20


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SpoolStore]:
    """A fresh spool in a temporary directory."""
    spool = SpoolStore.open(tmp_path / "spool.db", max_bytes=CAP)
    yield spool
    spool.close()


def _samples(device: str, start_ms: int, count: int, step_ms: int = 1000) -> list[Sample]:
    return [Sample(device, "P", float(i), start_ms + i * step_ms) for i in range(count)]


def _key(row: Point) -> tuple[str, str, object, int, int]:
    return (row.device, row.measurepoint, row.value, row.quality, row.ts_ms)


def test_blocks_are_spooled_and_counted_as_points(tmp_path: Path) -> None:
    """A block's points come back like samples; counts and losses count its points."""
    store = SpoolStore.open(tmp_path / "s.db", max_bytes=CAP)
    block = SampleBlock("m1", ("P", "Q", "R"), [1.5, 2, True], 1000)
    store.append([Sample("m1", "S", 4, 1000)], blocks=[block])
    assert [_key(r) for r in take_points(store, 10)] == [
        ("m1", "P", 1.5, 0, 1000),
        ("m1", "Q", 2, 0, 1000),
        ("m1", "R", True, 0, 1000),
        ("m1", "S", 4, 0, 1000),
    ]
    assert (store.counts().samples, store.counts().frames) == (4, 1)
    # A write that fails for real (a read-only connection) loses every point it carried.
    store._conn.execute("PRAGMA query_only = ON")
    store.append([Sample("m1", "S", 5, 2000)], blocks=[block._replace(ts_ms=2000)])
    assert store.counts().dropped_samples == 4
    store.close()


def test_take_returns_appended_rows_in_order_with_values(tmp_path: Path) -> None:
    """Rows come back oldest first with device, point, value, quality and time intact."""
    store = SpoolStore.open(
        tmp_path / "s.db", max_bytes=CAP, shapes=EnosQuality({("m2", "E"), ("m2", "name")})
    )
    store.append(
        [
            Sample("m1", "P", 1.25, 1000),
            Sample("m1", "on", True, 1000, Quality.GOOD),
            Sample("m2", "E", 123456789012, 1001, Quality.BAD),
            Sample("m2", "name", "pump", 1002, Quality.STALE),
        ],
        now_ms=5000,
    )
    rows = take_points(store, 10)
    assert [_key(r) for r in rows] == [
        ("m1", "P", 1.25, 0, 1000),
        ("m1", "on", True, 0, 1000),
        ("m2", "E", 123456789012, 1, 1001),
        ("m2", "name", "pump", 2, 1002),
    ]
    assert [r.id for r in rows] == sorted(r.id for r in rows)
    assert store.stats().last_append_ms == 5000
    store.close()


def test_append_groups_a_cycle_into_frames_and_counts_unsendable(store: SpoolStore) -> None:
    """One frame per (device, instant) in first-seen order; a repeated point opens a second
    frame; non-good values of points without quality indicator and NaN are counted, not
    spooled."""
    store.append(
        [
            Sample("a", "x", 1, 1000),
            Sample("b", "x", 2, 1000),
            Sample("a", "y", 3.5, 1000),
            Sample("a", "x", 4, 1000),  # the same instant spooled twice
            Sample("a", "bad", 0, 1000, Quality.BAD),
            Sample("a", "nan", float("nan"), 1000),
        ]
    )
    frames = store.take_frames(10)
    assert [(f.device, f.ts_ms, f.points, f.body) for f in frames] == [
        ("a", 1000, 2, '{"x":1,"y":3.5}'),
        ("b", 1000, 1, '{"x":2}'),
        ("a", 1000, 1, '{"x":4}'),
    ]
    counts = store.counts()
    assert (counts.samples, counts.frames, counts.unsendable_samples) == (4, 3, 2)
    assert (counts.in_flight_samples, counts.in_flight_frames) == (4, 3)
    assert counts.appended_samples == 4
    assert store.ack(Kind.SAMPLES, [f.id for f in frames]) == 3
    assert (store.counts().samples, store.counts().appended_samples) == (0, 4)
    snapshot = store.stats()
    assert (snapshot.unsendable_samples, snapshot.appended_samples) == (2, 4)


def test_rewrite_frame_settles_single_points(store: SpoolStore) -> None:
    """Delivered points leave the frame, dead ones become dead letters, the rest stays in
    flight; an emptied frame is deleted."""
    store.append([Sample("m", name, i, 1000) for i, name in enumerate("abcd")])
    (frame,) = store.take_frames(1)
    rest = store.rewrite_frame(frame.id, ["a", "c"], {"b": (1204, "bad type")}, 5000)
    assert rest is not None
    assert (rest.id, rest.points, rest.body) == (frame.id, 1, '{"d":3}')
    assert store.in_flight(Kind.SAMPLES) == 1
    assert [(d.name, d.value, d.code, d.message, d.row_id) for d in store.dead_letters()] == [
        ("b", 1, 1204, "bad type", frame.id)
    ]
    assert (store.counts().samples, store.counts().in_flight_samples) == (1, 1)
    store.release(Kind.SAMPLES, [frame.id])
    (again,) = store.take_frames(5)
    assert again.body == '{"d":3}'
    assert store.rewrite_frame(again.id, ["d"], {}, 5001) is None
    counts = store.counts()
    assert (counts.samples, counts.frames, counts.in_flight_frames) == (0, 0, 0)
    assert store.rewrite_frame(again.id, ["d"], {}, 5002) is None  # no longer in flight


def test_rows_in_flight_are_not_handed_out_twice(store: SpoolStore) -> None:
    """A second take skips rows the first one took; in_flight counts them."""
    store.append(_samples("m", 0, 10))
    first = take_points(store, 4)
    second = take_points(store, 100)
    assert [r.ts_ms for r in first] == [0, 1000, 2000, 3000]
    assert [r.ts_ms for r in second] == [4000 + 1000 * i for i in range(6)]
    assert take_points(store, 100) == []
    assert store.in_flight(Kind.SAMPLES) == 10


def test_ack_deletes_for_good(tmp_path: Path) -> None:
    """Acked rows are gone, also after reopening the file; the others remain."""
    path = tmp_path / "spool.db"
    store = SpoolStore.open(path, max_bytes=CAP)
    store.append(_samples("m", 0, 5))
    rows = take_points(store, 5)
    assert store.ack(Kind.SAMPLES, [rows[0].id, rows[2].id]) == 2
    assert store.counts().samples == 3
    assert store.in_flight(Kind.SAMPLES) == 3
    store.close()
    store = SpoolStore.open(path, max_bytes=CAP)
    assert [r.ts_ms for r in take_points(store, 10)] == [1000, 3000, 4000]
    store.close()


def test_release_puts_rows_back_oldest_first(store: SpoolStore) -> None:
    """Released rows come back, in spool order, before newer rows."""
    store.append(_samples("m", 0, 6))
    first = take_points(store, 3)
    take_points(store, 1)  # ts 3000 stays in flight
    assert store.release(Kind.SAMPLES, [first[2].id, first[0].id]) == 2
    again = take_points(store, 10)
    assert [r.ts_ms for r in again] == [0, 2000, 4000, 5000]
    assert [r.id for r in again][:2] == [first[0].id, first[2].id]


def test_unacked_rows_come_back_after_a_restart(tmp_path: Path) -> None:
    """Crash simulation: take without ack, close, reopen: every row is there again."""
    path = tmp_path / "spool.db"
    store = SpoolStore.open(path, max_bytes=CAP)
    store.append(_samples("m", 0, 8), [Event("m", "alarm", 500, {"level": 2})])
    taken = take_points(store, 8)
    store.take_events(1)
    store.ack(Kind.SAMPLES, [taken[0].id])
    store.close()
    store = SpoolStore.open(path, max_bytes=CAP)
    assert [r.ts_ms for r in take_points(store, 100)] == [1000 * i for i in range(1, 8)]
    events = store.take_events(10)
    assert [(e.device, e.event_id, e.params, e.ts_ms) for e in events] == [
        ("m", "alarm", {"level": 2}, 500)
    ]
    store.close()


def test_stale_ids_cannot_delete_rows(tmp_path: Path) -> None:
    """ack/release/dead_letter ignore ids not in flight (e.g. from before a restart)."""
    path = tmp_path / "spool.db"
    store = SpoolStore.open(path, max_bytes=CAP)
    store.append(_samples("m", 0, 3))
    ids = [r.id for r in take_points(store, 3)]
    store.close()
    store = SpoolStore.open(path, max_bytes=CAP)
    assert store.ack(Kind.SAMPLES, ids) == 0
    assert store.release(Kind.SAMPLES, ids) == 0
    assert store.dead_letter(Kind.SAMPLES, ids, 1204, "x", 0) == 0
    assert store.counts().samples == 3
    store.close()


def test_live_and_backlog_split_by_sample_time(store: SpoolStore) -> None:
    """newer_than_ms takes only fresh rows, older_than_ms only old ones; no row in both."""
    store.append(_samples("m", 0, 10))  # ts 0 .. 9000
    cutoff = 6000
    live = take_points(store, 100, newer_than_ms=cutoff)
    backlog = take_points(store, 100, older_than_ms=cutoff)
    assert [r.ts_ms for r in live] == [6000, 7000, 8000, 9000]
    assert [r.ts_ms for r in backlog] == [0, 1000, 2000, 3000, 4000, 5000]
    assert take_points(store, 100) == []


def test_live_row_not_delivered_in_time_becomes_backlog(store: SpoolStore) -> None:
    """A live row released after the window passed is found by a later backlog take."""
    store.append(_samples("m", 10_000, 3))  # ts 10000, 11000, 12000
    live = take_points(store, 10, newer_than_ms=9_000)
    assert len(live) == 3
    store.release(Kind.SAMPLES, [r.id for r in live])
    store.append(_samples("m", 50_000, 2))
    backlog = take_points(store, 10, older_than_ms=45_000)
    assert [r.ts_ms for r in backlog] == [10_000, 11_000, 12_000]
    assert [r.ts_ms for r in take_points(store, 10, newer_than_ms=45_000)] == [50_000, 51_000]


def test_backlog_take_does_not_skip_old_rows_behind_live_ones(store: SpoolStore) -> None:
    """An old-stamped row appended after live rows (clock step) still reaches the backlog."""
    store.append(_samples("a", 100_000, 3))  # live
    store.append([Sample("b", "P", 1.0, 5_000)])  # stamped before the live window
    # A backlog take looks at a bounded window from its cursor: one row, a live one.
    assert take_points(store, 1, older_than_ms=90_000) == []
    live = take_points(store, 10, newer_than_ms=90_000)
    store.ack(Kind.SAMPLES, [r.id for r in live])
    backlog = take_points(store, 10, older_than_ms=90_000)
    assert [(r.device, r.ts_ms) for r in backlog] == [("b", 5_000)]


def test_backlog_keeps_per_device_time_order_across_batches(store: SpoolStore) -> None:
    """Draining a backlog in small batches yields each device's samples in time order."""
    for cycle in range(20):
        store.append([Sample(f"dev{d}", "P", float(cycle), 1000 * cycle + d) for d in range(5)])
    seen: dict[str, list[int]] = {}
    while batch := take_points(store, 7, older_than_ms=10**9):
        for row in batch:
            seen.setdefault(row.device, []).append(row.ts_ms)
        store.ack(Kind.SAMPLES, [r.id for r in batch])
    assert seen == {f"dev{d}": [1000 * c + d for c in range(20)] for d in range(5)}
    assert store.counts().samples == 0


def test_dead_letter_moves_rows_with_the_reply(tmp_path: Path) -> None:
    """Rejected rows move to dead_letters with code and message; the rest stay deliverable."""
    store = SpoolStore.open(tmp_path / "s.db", max_bytes=CAP, shapes=EnosQuality({("m", "bad")}))
    store.append(
        [Sample("m", "P", 1.5, 1000), Sample("m", "bad", "oops", 1001, Quality.BAD)],
        [Event("m", "trip", 1001, {"phase": "L1"})],
    )
    samples = take_points(store, 10)
    events = store.take_events(10)
    assert store.dead_letter(Kind.SAMPLES, [samples[1].id], 1204, "no such point", 9000) == 1
    assert store.dead_letter(Kind.EVENTS, [events[0].id], 1206, "bad event", 9001) == 1
    letters = store.dead_letters()
    assert [
        (
            d.kind,
            d.row_id,
            d.device,
            d.name,
            d.value,
            d.quality,
            d.params,
            d.ts_ms,
            d.code,
            d.message,
            d.failed_ms,
        )
        for d in letters
    ] == [
        (
            Kind.EVENTS,
            events[0].id,
            "m",
            "trip",
            None,
            None,
            {"phase": "L1"},
            1001,
            1206,
            "bad event",
            9001,
        ),
        (
            Kind.SAMPLES,
            samples[1].id,
            "m",
            "bad",
            "oops",
            1,
            None,
            1001,
            1204,
            "no such point",
            9000,
        ),
    ]
    counts = store.counts()
    assert (counts.samples, counts.events, counts.dead_letters) == (1, 0, 2)
    assert store.in_flight(Kind.SAMPLES) == 1
    assert store.ack(Kind.SAMPLES, [samples[1].id]) == 0  # no longer in flight
    store.close()


def test_dead_letter_of_a_frame_keeps_every_point(store: SpoolStore) -> None:
    """A frame dead-lettered as a whole becomes one dead letter per point."""
    store.append([Sample("m", "a", True, 7), Sample("m", "b", 2**64 - 1, 7)])
    (frame,) = store.take_frames(1)
    assert store.dead_letter(Kind.SAMPLES, [frame.id], 1008, "too big", 9) == 2
    assert sorted((d.name, d.value, d.quality, d.ts_ms) for d in store.dead_letters()) == [
        ("a", True, 0, 7),
        ("b", 2**64 - 1, 0, 7),
    ]
    counts = store.counts()
    assert (counts.samples, counts.frames, counts.dead_letters) == (0, 0, 2)


def test_dead_letter_table_is_bounded_and_counts_what_it_drops(tmp_path: Path) -> None:
    """Beyond the limit the oldest dead letters go, counted in dropped_dead_letters."""
    store = SpoolStore.open(tmp_path / "s.db", max_bytes=CAP, dead_letter_limit=5)
    store.append(_samples("m", 0, 8))
    rows = take_points(store, 8)
    store.dead_letter(Kind.SAMPLES, [r.id for r in rows], 1204, "x", 1)
    assert [d.ts_ms for d in store.dead_letters()] == [7000, 6000, 5000, 4000, 3000]
    assert store.stats().dropped_dead_letters == 3
    assert store.counts().dead_letters == 5
    store.close()


def test_meta_is_persisted(tmp_path: Path) -> None:
    """set_meta survives a reopen; unknown keys read as None."""
    path = tmp_path / "s.db"
    store = SpoolStore.open(path, max_bytes=CAP)
    assert store.get_meta("enos.device_secret") is None
    store.set_meta("enos.device_secret", "s3cr3t")
    store.set_meta("enos.device_secret", "rotated")
    store.close()
    store = SpoolStore.open(path, max_bytes=CAP)
    assert store.get_meta("enos.device_secret") == "rotated"
    store.close()


def test_take_rejects_both_filters_and_ignores_empty_appends(store: SpoolStore) -> None:
    """Asking for live and backlog at once is a caller bug; an empty append writes nothing."""
    with pytest.raises(ValueError, match="not both"):
        take_points(store, 1, older_than_ms=1, newer_than_ms=1)
    store.append([], [])
    assert take_points(store, 5) == []
    assert take_points(store, 0) == []


def test_stats_reports_rows_bytes_and_oldest(store: SpoolStore) -> None:
    """stats() counts rows per kind, their pages, the oldest times and in-flight rows."""
    store.append(_samples("m", 7000, 300), [Event("m", "e", 6500, {})])
    take_points(store, 10)
    snap = store.stats()
    assert (snap.samples, snap.events, snap.dead_letters) == (300, 1, 0)
    assert (snap.oldest_sample_ts_ms, snap.oldest_event_ts_ms) == (7000, 6500)
    assert (snap.in_flight_samples, snap.in_flight_events) == (10, 0)
    assert snap.sample_bytes is not None
    assert snap.sample_bytes >= 300 * 10
    assert 0 < snap.file_bytes <= snap.max_bytes == CAP


def test_release_all_returns_everything(store: SpoolStore) -> None:
    """After a lost connection every row in flight is available again."""
    store.append(_samples("m", 0, 4), [Event("m", "e", 0, {})])
    take_points(store, 2, newer_than_ms=0)
    take_points(store, 2, older_than_ms=10**9)
    store.take_events(1)
    assert store.release_all() == 5
    assert len(take_points(store, 10)) == 4
    assert len(store.take_events(10)) == 1


# -- a model check of the cursors: random takes, acks, releases and appends -------------

_OPS = st.lists(
    st.one_of(
        st.tuples(st.just("append"), st.integers(1, 6), st.integers(-3, 3)),
        st.tuples(st.just("live"), st.integers(1, 5), st.integers(0, 40)),
        st.tuples(st.just("backlog"), st.integers(1, 5), st.integers(0, 40)),
        st.tuples(st.just("all"), st.integers(1, 5), st.just(0)),
        st.tuples(st.just("ack"), st.integers(0, 4), st.just(0)),
        st.tuples(st.just("release"), st.integers(0, 4), st.just(0)),
    ),
    max_size=40,
)


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(ops=_OPS)
def test_cursors_never_lose_or_duplicate_rows(
    tmp_path_factory: pytest.TempPathFactory, ops: list[tuple[str, int, int]]
) -> None:
    """Any mix of filtered takes, acks, releases and appends hands each row out at most
    once while in flight, only rows matching the filter, and loses none."""
    store = SpoolStore.open(tmp_path_factory.mktemp("model") / "s.db", max_bytes=CAP)
    clock = 0
    acked: set[int] = set()
    in_flight: list[int] = []
    appended = 0
    for op, n, arg in ops:
        if op == "append":
            clock += 1
            batch = [Sample(f"d{i % 2}", "P", appended + i, clock + arg) for i in range(n)]
            appended += n
            store.append(batch)
            continue
        if op in ("live", "backlog", "all"):
            cutoff = arg
            if op == "live":
                rows = take_points(store, n, newer_than_ms=cutoff)
                assert all(r.ts_ms >= cutoff for r in rows)
            elif op == "backlog":
                rows = take_points(store, n, older_than_ms=cutoff)
                assert all(r.ts_ms < cutoff for r in rows)
            else:
                rows = take_points(store, n)
            assert len(rows) <= n
            for row in rows:
                assert row.id not in in_flight
                assert row.id not in acked
            in_flight.extend(r.id for r in rows)
            continue
        chosen, in_flight = in_flight[:n], in_flight[n:]
        if op == "ack":
            assert store.ack(Kind.SAMPLES, chosen) == len(chosen)
            acked.update(chosen)
        else:
            assert store.release(Kind.SAMPLES, chosen) == len(chosen)
    assert store.in_flight(Kind.SAMPLES) == len(in_flight)
    # Everything not acked must still be deliverable: release all, drain everything.
    store.release_all()
    rest = take_points(store, 10_000)
    assert len(rest) == appended - len(acked)
    assert len({r.id for r in rest}) == len(rest)
    assert not acked & {r.id for r in rest}
    store.close()


def test_excluded_devices_stay_put_and_come_back(tmp_path: Path) -> None:
    """Rows of an excluded device are not taken; once it is included again they are."""
    store = SpoolStore.open(tmp_path / "s.db", max_bytes=64 << 20, synchronous=SyncMode.NORMAL)
    try:
        store.append([Sample("held", "p", 1, 1000), Sample("ok", "p", 2, 1001)], [])
        store.append([Sample("held", "p", 3, 2000), Sample("ok", "p", 4, 2001)], [])
        first = take_points(store, 10, older_than_ms=5000, exclude_devices={"held"})
        assert [(r.device, r.value) for r in first] == [("ok", 2), ("ok", 4)]
        store.ack(Kind.SAMPLES, [r.id for r in first])
        assert take_points(store, 10, older_than_ms=5000, exclude_devices={"held"}) == []
        again = take_points(store, 10, older_than_ms=5000)
        assert [(r.device, r.value) for r in again] == [("held", 1), ("held", 3)]
        store.append([], [Event("held", "e", 10), Event("ok", "e", 11)])
        events = store.take_events(10, exclude_devices={"held"})
        assert [e.device for e in events] == ["ok"]
        assert [e.device for e in store.take_events(10)] == ["held"]
    finally:
        store.close()
