"""The capture core (pure): the ring's bounds, a capture's rows before and after its
event, its CSV, and its lifecycle (separate captures, expiry, the running limit)."""

from __future__ import annotations

import csv

from gatewayd.config.models import DeviceModel
from gatewayd.mapping.capture import (
    FINISH_GRACE_MS,
    MAX_RUNNING,
    Action,
    Append,
    Begin,
    CaptureRing,
    CaptureSpec,
    DeviceCaptures,
    Finish,
    capture_file_events,
    capture_filename,
    csv_text,
    iso_time,
    ring_slots,
)
from gatewayd.samples import Event, Quality, Sample, SampleBlock, Value

T0 = 1_764_928_800_000  # 2025-12-05T10:00:00.000Z
SPEC = CaptureSpec("trip", ("power", "state"), before_ms=3000, after_ms=2000, param="record")


def device(spec: CaptureSpec = SPEC) -> DeviceCaptures:
    return DeviceCaptures("inv-01", {spec.event: spec}, {"power": 1000, "state": 1000})


def feed(captures: DeviceCaptures, ts_ms: int, **values: Value) -> list[Action]:
    return captures.observe({ts_ms: values})


def text_of(actions: list[Action], number: int) -> str:
    """The file a capture's actions write, in order."""
    return "".join(
        a.text for a in actions if isinstance(a, Begin | Append) and a.capture == number
    )


def test_ring_keeps_exactly_before_worth() -> None:
    """Readings every second for 200 s with a 60 s `before`: the ring holds the last 61
    (the reading 60 s before the newest included), no more."""
    ring = CaptureRing(60_000, {"power": ring_slots(60_000, 1000)})
    for second in range(200):
        ring.add(T0 + second * 1000, {"power": float(second)})
    entries = ring.entries("power")
    assert [ts for ts, _ in entries] == [T0 + s * 1000 for s in range(139, 200)]
    assert entries[-1] == (T0 + 199_000, 199.0)


def test_ring_is_bounded_by_count_when_readings_come_faster_than_the_interval() -> None:
    """A point read ten times per interval keeps at most its slots (1.25 × before /
    interval + 2)."""
    slots = ring_slots(10_000, 1000)
    assert slots == 15
    ring = CaptureRing(10_000, {"power": slots})
    for tenth in range(500):
        ring.add(T0 + tenth * 100, {"power": tenth, "other": 1})
    assert ring.entries("power") == [(T0 + t * 100, t) for t in range(485, 500)]
    assert ring.entries("other") == []


def test_a_fired_capture_has_exactly_the_rows_before_and_after() -> None:
    """Event at t=5 s, before 3 s, after 2 s: rows 2..5 s at Begin, 6 and 7 s appended,
    and the reading at 8 s finishes it (not written)."""
    captures = device()
    actions: list[Action] = []
    for second in range(6):
        actions += feed(captures, T0 + second * 1000, power=float(second) + 0.5, state=second)
    fired = Event("inv-01", "trip", T0 + 5000, {"measurepoint": "state", "value": 5, "x": 1})
    kept, started = captures.fire([fired])
    assert kept == []
    actions += started
    for second in range(6, 10):
        actions += feed(captures, T0 + second * 1000, power=float(second) + 0.5, state=second)
    begin = next(a for a in actions if isinstance(a, Begin))
    assert begin.filename == "inv-01-trip-20251205T100005Z.csv"
    assert begin.sidecar == {
        "device": "inv-01",
        "event": "trip",
        "file_param": "record",
        "params": {"measurepoint": "state", "value": 5, "x": 1},
        "time": T0 + 5000,
        "filename": "inv-01-trip-20251205T100005Z.csv",
    }
    assert begin.text == (
        "time,power,state\r\n"
        "2025-12-05T10:00:02.000Z,2.5,2\r\n"
        "2025-12-05T10:00:03.000Z,3.5,3\r\n"
        "2025-12-05T10:00:04.000Z,4.5,4\r\n"
        "2025-12-05T10:00:05.000Z,5.5,5\r\n"
    )
    assert text_of(actions, begin.capture) == begin.text + (
        "2025-12-05T10:00:06.000Z,6.5,6\r\n2025-12-05T10:00:07.000Z,7.5,7\r\n"
    )
    # Begin, the 6 s and 7 s rows, then Finish with the 8 s reading; 9 s: nothing.
    assert [type(a).__name__ for a in actions] == ["Begin", "Append", "Append", "Finish"]
    assert actions[-1] == Finish(begin.capture)
    assert captures.running == {}


def test_missing_values_are_empty_cells_and_values_look_as_the_spool_sends_them() -> None:
    """A point without a good value at a time is an empty cell; bools are true/false,
    floats as JSON writes them, text as it is (quoted by CSV where needed)."""
    spec = CaptureSpec("trip", ("a", "b", "c"), before_ms=5000, after_ms=1000, param="f")
    captures = DeviceCaptures("d", {"trip": spec}, {"a": 1000, "b": 1000, "c": 1000})
    feed(captures, T0, a=True, b=0.1, c="x, y")
    feed(captures, T0 + 1000, a=False, c='say "hi"')
    feed(captures, T0 + 2000, b=12)
    _, (begin,) = captures.fire([Event("d", "trip", T0 + 2000)])
    assert isinstance(begin, Begin)
    assert begin.text.splitlines() == [
        "time,a,b,c",
        '2025-12-05T10:00:00.000Z,true,0.1,"x, y"',
        '2025-12-05T10:00:01.000Z,false,,"say ""hi"""',
        "2025-12-05T10:00:02.000Z,,12,",
    ]
    # A general-purpose parser reads the cells back.
    rows = list(csv.reader(begin.text.splitlines()))
    assert rows[1] == ["2025-12-05T10:00:00.000Z", "true", "0.1", "x, y"]
    assert rows[2][3] == 'say "hi"'


def test_take_uses_only_good_values_of_captured_points_and_withholds_the_event() -> None:
    """The stage's hook: good block and sample values of captured points reach the ring
    (BAD samples and other points do not); the captured event is withheld, others pass."""
    captures = device()
    block = SampleBlock("inv-01", ["power", "other"], [10.0, 1], T0)
    samples = [
        Sample("inv-01", "state", 3, T0),
        Sample("inv-01", "state", 2, T0 + 1000, Quality.BAD),
    ]
    other = Event("inv-01", "alarmOn", T0)
    trip = Event("inv-01", "trip", T0 + 1000)
    kept, actions = captures.take(samples, [block], [other, trip], publishing=True)
    assert kept == [other]
    (begin,) = actions
    assert isinstance(begin, Begin)
    assert begin.text.splitlines()[1:] == ["2025-12-05T10:00:00.000Z,10.0,3"]


def test_a_muted_device_starts_no_capture_but_its_ring_follows() -> None:
    """Muted (not publishing): the event is left to the stage (which drops it), no file."""
    captures = device()
    trip = Event("inv-01", "trip", T0)
    block = SampleBlock("inv-01", ["power"], [1.0], T0)
    kept, actions = captures.take([], [block], [trip], publishing=False)
    assert (kept, actions) == ([trip], [])
    assert captures.ring.entries("power") == [(T0, 1.0)]


def test_a_second_firing_starts_a_separate_capture() -> None:
    """Two firings 1 s apart: two captures, each with its own rows and finish."""
    captures = device()
    actions: list[Action] = []
    for second in range(12):
        ts = T0 + second * 1000
        actions += feed(captures, ts, power=float(second), state=second)
        if second in (4, 5):
            actions += captures.fire([Event("inv-01", "trip", ts)])[1]
    first, second_ = [a for a in actions if isinstance(a, Begin)]
    assert first.capture != second_.capture
    assert [line[:24] for line in text_of(actions, first.capture).splitlines()[1:]] == [
        iso_time(T0 + s * 1000) for s in range(1, 7)
    ]
    assert [line[:24] for line in text_of(actions, second_.capture).splitlines()[1:]] == [
        iso_time(T0 + s * 1000) for s in range(2, 8)
    ]
    assert [a.capture for a in actions if isinstance(a, Finish)] == [
        first.capture,
        second_.capture,
    ]


def test_a_silent_device_finishes_by_the_clock() -> None:
    """No reading after the event: the capture closes `FINISH_GRACE_MS` after its end."""
    captures = device()
    feed(captures, T0, power=1.0)
    _, (begin,) = captures.fire([Event("inv-01", "trip", T0)])
    end = T0 + SPEC.after_ms
    assert captures.expire(end + FINISH_GRACE_MS) == []
    assert captures.expire(end + FINISH_GRACE_MS + 1) == [Finish(begin.capture)]
    assert captures.expire(end + FINISH_GRACE_MS + 2) == []


def test_finish_all_cuts_running_captures_short() -> None:
    """On stop every running capture is finished, marked cut short."""
    captures = device()
    _, begins = captures.fire([Event("inv-01", "trip", T0), Event("inv-01", "trip", T0 + 1)])
    assert captures.finish_all() == [Finish(b.capture, cut_short=True) for b in begins]
    assert captures.running == {}


def test_beyond_the_running_limit_events_go_without_a_file() -> None:
    """A flapping rule: the firing past `MAX_RUNNING` running captures is not withheld."""
    captures = device()
    events = [Event("inv-01", "trip", T0 + i) for i in range(MAX_RUNNING + 2)]
    kept, actions = captures.fire(events)
    assert len(actions) == MAX_RUNNING
    assert kept == events[MAX_RUNNING:]


def test_adopt_keeps_running_captures_and_ring_across_a_reload() -> None:
    """A reload's new device state takes the old one's running captures and values."""
    old = device()
    feed(old, T0, power=1.0, state=1)
    _, (begin,) = old.fire([Event("inv-01", "trip", T0)])
    new = device()
    new.adopt(old)
    assert new.ring.entries("power") == [(T0, 1.0)]
    (append,) = feed(new, T0 + 1000, power=2.0)
    assert isinstance(append, Append)
    assert append.capture == begin.capture


def test_filename_names_device_event_and_utc_time_safely() -> None:
    """Unsafe characters of an event id become `_`; the time is UTC to the second."""
    assert capture_filename("inv-01", "trip/Record", T0 + 999) == (
        "inv-01-trip_Record-20251205T100000Z.csv"
    )
    assert csv_text([(T0 + 1, (None,))], header=["p"]) == (
        "time,p\r\n2025-12-05T10:00:00.001Z,\r\n"
    )


def test_capture_file_events_declares_each_captured_event() -> None:
    """A capture rule declares its event as a file event: the file param and the types of
    the params the event carries."""
    model = DeviceModel.model_validate(
        {
            "name": "inv",
            "points": [
                {"measurepoint": "power", "table": "input", "address": 0, "type": "float32"},
                {"measurepoint": "code", "table": "input", "address": 2, "type": "uint16"},
            ],
            "events": [
                {"event": "fault", "rule": "in_set", "point": "code", "values": [3],
                 "params": {"reason": 7, "text": "x"},
                 "capture": {"points": ["power"], "before": "60s", "after": "10s",
                             "param": "record"}},
                {"event": "other", "rule": "change", "point": "power"},
            ],
        }
    )  # fmt: skip
    assert capture_file_events(model) == [
        {
            "event": "fault",
            "file_param": "record",
            "params": {"measurepoint": "string", "value": "int", "reason": "int", "text": "string"},
        }
    ]
