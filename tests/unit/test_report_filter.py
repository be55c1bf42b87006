"""The report-by-exception filter (gatewayd/mapping/report.py): rules and property tests."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from gatewayd.mapping.report import (
    ALWAYS,
    LastSent,
    ReportFilter,
    ReportSpec,
    Resend,
    should_send,
)
from gatewayd.samples import Quality, Value

GOOD, BAD, STALE = Quality.GOOD, Quality.BAD, Quality.STALE
CHANGE = ReportSpec(on_change=True, deadband=0.5, heartbeat_ms=60_000)


def test_always_sends_every_reading() -> None:
    """`always` sends a repeated value, `change` holds it back."""
    last = LastSent(1.0, GOOD, 0)
    assert should_send(ALWAYS, 1.0, GOOD, 1000, last) is True
    assert should_send(CHANGE, 1.0, GOOD, 1000, last) is False


def test_absolute_deadband_is_strict() -> None:
    """A move of exactly the deadband is held; just beyond it is sent."""
    last = LastSent(10.0, GOOD, 0)
    assert should_send(CHANGE, 10.5, GOOD, 1, last) is False
    assert should_send(CHANGE, 9.5, GOOD, 1, last) is False
    assert should_send(CHANGE, 10.51, GOOD, 1, last) is True
    assert should_send(CHANGE, 9.49, GOOD, 1, last) is True


def test_percent_deadband_is_relative_to_last_sent() -> None:
    """2 % of 200 is 4: 203.9 is held, 204.1 is sent; of 0 any change is sent."""
    spec = ReportSpec(on_change=True, percent=2.0, heartbeat_ms=60_000)
    assert should_send(spec, 203.9, GOOD, 1, LastSent(200.0, GOOD, 0)) is False
    assert should_send(spec, 204.1, GOOD, 1, LastSent(200.0, GOOD, 0)) is True
    assert should_send(spec, 0.001, GOOD, 1, LastSent(0.0, GOOD, 0)) is True


def test_integers_booleans_strings_compare_exactly() -> None:
    """The deadband applies to floats only; other types and a change of type are exact."""
    assert should_send(CHANGE, 11, GOOD, 1, LastSent(10, GOOD, 0)) is True
    assert should_send(CHANGE, 10, GOOD, 1, LastSent(10, GOOD, 0)) is False
    assert should_send(CHANGE, True, GOOD, 1, LastSent(1, GOOD, 0)) is True
    assert should_send(CHANGE, "run", GOOD, 1, LastSent("run", GOOD, 0)) is False
    assert should_send(CHANGE, "stop", GOOD, 1, LastSent("run", GOOD, 0)) is True
    assert should_send(CHANGE, 10.0, GOOD, 1, LastSent(10, GOOD, 0)) is True


def test_quality_change_heartbeat_and_first_reading_are_sent() -> None:
    """Quality changes, the heartbeat, a clock stepping back and no last sent all send."""
    last = LastSent(1.0, GOOD, 1000)
    assert should_send(CHANGE, 1.0, BAD, 1001, last) is True
    assert should_send(CHANGE, 1.0, STALE, 1001, LastSent(1.0, BAD, 1000)) is True
    assert should_send(CHANGE, 1.0, GOOD, 60_999, last) is False
    assert should_send(CHANGE, 1.0, GOOD, 61_000, last) is True
    assert should_send(CHANGE, 1.0, GOOD, 999, last) is True
    assert should_send(CHANGE, 1.0, GOOD, 1001, None) is True


def test_filter_forget_makes_the_next_reading_go() -> None:
    """`forget` and `forget_all` reset points; `always` points are not tracked."""
    f = ReportFilter({"p": CHANGE, "q": CHANGE, "a": ALWAYS})
    assert f.active
    assert set(f.specs) == {"p", "q"}
    assert [f.keep("p", 1.0, GOOD, 0), f.keep("p", 1.0, GOOD, 1)] == [True, False]
    assert [f.keep("a", 1.0, GOOD, 0), f.keep("a", 1.0, GOOD, 1)] == [True, True]
    f.forget(["p"])
    assert f.keep("p", 1.0, GOOD, 2) is True
    assert f.keep("q", 1.0, GOOD, 2) is True
    f.forget_all()
    assert [f.keep("p", 1.0, GOOD, 3), f.keep("q", 1.0, GOOD, 3)] == [True, True]
    assert ReportFilter({"a": ALWAYS}).active is False


def test_resend_flags_once_per_signal() -> None:
    """A device flag is taken once; `all` bumps the generation."""
    resend = Resend()
    assert resend.take("d") is False
    resend.device("d")
    assert [resend.take("d"), resend.take("d")] == [True, False]
    before = resend.generation
    resend.all()
    assert resend.generation == before + 1


_floats = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False)
_steps = st.lists(
    st.tuples(st.integers(min_value=1, max_value=120_000), _floats), min_size=1, max_size=200
)


def _run(spec: ReportSpec, steps: list[tuple[int, float]]) -> list[tuple[int, float, bool]]:
    """Feed a polled series through one point's filter: (ts, value, sent) per reading."""
    f = ReportFilter({"p": spec})
    ts = 0
    out = []
    for dt, value in steps:
        ts += dt
        out.append((ts, value, f.keep("p", value, GOOD, ts)))
    return out


@settings(max_examples=300, deadline=None)
@given(
    deadband=st.floats(min_value=0, max_value=1000),
    heartbeat=st.integers(min_value=1, max_value=3_600_000),
    steps=_steps,
)
def test_reconstruction_stays_within_absolute_deadband(
    deadband: float, heartbeat: int, steps: list[tuple[int, float]]
) -> None:
    """Holding each sent value until the next never misses the polled series by more than
    the deadband, and no reading is held past the heartbeat."""
    spec = ReportSpec(on_change=True, deadband=deadband, heartbeat_ms=heartbeat)
    held: tuple[int, float] | None = None
    for ts, value, sent in _run(spec, steps):
        if sent:
            held = (ts, value)
            continue
        assert held is not None  # the first reading is always sent
        assert abs(value - held[1]) <= deadband
        assert ts - held[0] < heartbeat


@settings(max_examples=300, deadline=None)
@given(
    percent=st.floats(min_value=0, max_value=50),
    heartbeat=st.integers(min_value=1, max_value=3_600_000),
    steps=_steps,
)
def test_reconstruction_stays_within_percent_deadband(
    percent: float, heartbeat: int, steps: list[tuple[int, float]]
) -> None:
    """With a percent deadband the held value is within that percent of itself."""
    spec = ReportSpec(on_change=True, percent=percent, heartbeat_ms=heartbeat)
    held: tuple[int, float] | None = None
    for ts, value, sent in _run(spec, steps):
        if sent:
            held = (ts, value)
            continue
        assert held is not None
        assert abs(value - held[1]) <= abs(held[1]) * percent / 100.0
        assert ts - held[0] < heartbeat


@settings(max_examples=200, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.integers(min_value=1, max_value=10_000),
            st.integers(min_value=-3, max_value=3),
            st.sampled_from([GOOD, BAD, STALE]),
        ),
        min_size=1,
        max_size=200,
    )
)
def test_exact_values_and_every_quality_change_are_sent(
    steps: list[tuple[int, int, Quality]],
) -> None:
    """For integers the cloud's series equals the polled one exactly, quality included."""
    f = ReportFilter({"p": ReportSpec(on_change=True, deadband=100.0, heartbeat_ms=10**9)})
    ts = 0
    held: tuple[int, Quality] | None = None
    for dt, value, quality in steps:
        ts += dt
        if f.keep("p", value, quality, ts):
            held = (value, quality)
        assert held == (value, quality)


@settings(max_examples=200, deadline=None)
@given(
    cycles=st.lists(
        st.tuples(
            st.integers(min_value=-5, max_value=120_000),
            st.lists(
                st.one_of(st.integers(-2, 2), st.floats(-10, 10), st.booleans(), st.just("x")),
                min_size=3,
                max_size=3,
            ),
        ),
        min_size=1,
        max_size=60,
    ),
    quality_at=st.integers(min_value=0, max_value=60),
)
def test_keep_good_decides_as_keep_point_by_point(
    cycles: list[tuple[int, list[Value]]], quality_at: int
) -> None:
    """The block path (`keep_good`) gives the same masks and state as `keep`."""
    specs = {
        "a": ReportSpec(on_change=True, deadband=0.5, heartbeat_ms=60_000),
        "b": ReportSpec(on_change=True, percent=5.0, heartbeat_ms=30_000),
        "c": ALWAYS,
    }
    block, single = ReportFilter(specs), ReportFilter(specs)
    names = ("a", "b", "c")
    ts = 0
    for n, (dt, values) in enumerate(cycles):
        ts += dt
        if n == quality_at:  # a BAD reading in between
            assert block.keep("a", 0, BAD, ts) == single.keep("a", 0, BAD, ts)
        expected = [single.keep(m, v, GOOD, ts) for m, v in zip(names, values, strict=True)]
        assert block.keep_good(names, values, ts) == expected
