"""Capture rules (pure): what a device did around an event, as the rows of a CSV file.

An event rule with `capture: {points, before, after, param}` makes the event go to EnOS
with a file (through the HTTP integration) instead of by `thing.event.post`. This module
is the sans-IO core; `captures.py` runs it in the daemon and `capture_store.py` writes it.

- `CaptureRing`: per device, the captured points' recent GOOD values (ts_ms, value),
  covering the longest `before` of the device's rules. Memory is bounded by count: each
  point keeps at most `ring_slots(before, its poll interval)` = 1.25 × before / interval
  + 2 entries (slack for cycles that ran late), and entries older than `before` behind
  the newest reading are dropped as readings arrive. An entry is a (ts_ms, value) tuple,
  about 100 bytes with its float: 10 points polled every second with a 60 s `before`
  hold 610 entries, 62 KiB (`python -m tests.bench capture_hook`).
- `DeviceCaptures`: the device's rules and its running captures. `observe` feeds a poll's
  good readings (the ring, and the rows of running captures); `fire` takes the events the
  rules fired and starts a capture for each captured one (the event is withheld from
  `thing.event.post`: it goes with its file); `expire` closes captures whose `after` ran
  out while no reading arrived (a device gone silent). Each returns `Action`s for the
  file writer: `Begin` (header and the `before` rows: written at once, so a kill -9
  keeps them), `Append` (later rows), `Finish` (complete the drop).
- A capture's rows are the readings with `fired - before <= ts <= fired` (written at
  `Begin`) and `fired < ts <= fired + after` (appended). It finishes with the first
  reading after `fired + after`, or `FINISH_GRACE_MS` later by the clock.
- A second firing of a captured event while a capture runs starts a separate capture
  (its own file, whose `before` rows overlap the first one's); at most
  `MAX_RUNNING` captures run per device: beyond that an event goes by `thing.event.post`
  without a file, so a flapping rule cannot fill the disk and no event is lost.

CSV (RFC 4180, CRLF): header `time,<point1>,<point2>...`; one row per reading time, the
time as UTC ISO-8601 with milliseconds (`2026-12-05T10:00:00.000Z`); a cell is empty when
the point had no good value at that time; values as the spool sends them (after scale):
numbers as JSON writes them, booleans `true`/`false`, text as it is.
"""

from __future__ import annotations

import csv
import math
import re
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from gatewayd.samples import Event, Quality, Sample, SampleBlock, Value

if TYPE_CHECKING:
    from pathlib import Path

    from gatewayd.config.models import Config, DeviceConfig, DeviceModel

__all__ = [
    "CAPTURES_DIR",
    "FINISH_GRACE_MS",
    "MAX_RUNNING",
    "Action",
    "Append",
    "Begin",
    "CaptureRing",
    "CaptureSpec",
    "DeviceCaptures",
    "Finish",
    "capture_dir",
    "capture_file_events",
    "capture_filename",
    "capture_specs",
    "csv_text",
    "iso_time",
    "point_intervals_ms",
    "ring_slots",
]

#: The capture directory inside the state directory (where the file-event watcher looks).
CAPTURES_DIR = "captures"
#: A capture whose `after` ran out is closed this long later if no reading closed it.
FINISH_GRACE_MS = 5_000
#: Captures running at once on one device; more firings go without a file.
MAX_RUNNING = 8

#: One CSV row: the reading time and the captured points' values (None: no value).
Row = tuple[int, tuple[Value | None, ...]]


@dataclass(frozen=True, slots=True)
class CaptureSpec:
    """One rule's capture as the core takes it (compiled from the config at load time)."""

    event: str
    points: tuple[str, ...]
    before_ms: int
    after_ms: int
    param: str  # the event parameter that gets the file


def capture_specs(model: DeviceModel) -> dict[str, CaptureSpec]:
    """Event id → capture of the model's captured rules (a captured event has one rule)."""
    return {
        rule.event: CaptureSpec(
            rule.event,
            tuple(rule.capture.points),
            round(rule.capture.before * 1000),
            round(rule.capture.after * 1000),
            rule.capture.param,
        )
        for rule in model.events
        if rule.capture is not None
    }


def capture_dir(config: Config) -> Path:
    """Where complete captures are dropped: `captures/` in the state directory (next to
    the spool, like every state file)."""
    return config.spool.path.parent / CAPTURES_DIR


def point_intervals_ms(device: DeviceConfig, model: DeviceModel) -> dict[str, int]:
    """Each point's poll interval in ms (its own, else the device's)."""
    return {
        p.measurepoint: round((p.poll_interval or device.poll_interval) * 1000)
        for p in model.points
    }


def capture_file_events(model: DeviceModel) -> list[dict[str, Any]]:
    """The file events a model's capture rules declare implicitly, shaped like the
    model's `file_events:` entries (`{event, file_param, params: {name: type}}`): the
    rule's params, plus `measurepoint` and `value` that the event engine adds."""
    types = {p.measurepoint: _value_type(p) for p in model.points}
    declared = []
    for rule in model.events:
        if rule.capture is None:
            continue
        params = {"measurepoint": "string", "value": types.get(rule.point, "float")}
        params.update({name: _param_type(value) for name, value in rule.params.items()})
        declared.append({"event": rule.event, "file_param": rule.capture.param, "params": params})
    return declared


def _value_type(point: Any) -> str:
    if point.enum or point.type.value == "string":
        return "string"
    if point.type.value == "bool":
        return "bool"
    if point.type.is_integer and point.scale == 1 and point.offset == 0:
        return "int"
    return "float"


def _param_type(value: Value) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    return "string"


def ring_slots(keep_ms: int, interval_ms: int) -> int:
    """Entries a point needs to cover `keep_ms` at one reading per `interval_ms`: a
    quarter more, plus two, for cycles that ran late (readings closer than the interval)."""
    return math.ceil(keep_ms * 5 / (4 * max(interval_ms, 1))) + 2


class CaptureRing:
    """The captured points' recent good values of one device, bounded by count and age."""

    def __init__(self, keep_ms: int, slots: Mapping[str, int]) -> None:
        """`keep_ms`: how far behind the newest reading values are kept; `slots`: the
        captured points, each with its most entries."""
        self.keep_ms = keep_ms
        self._points: dict[str, deque[tuple[int, Value]]] = {
            name: deque(maxlen=n) for name, n in slots.items()
        }

    @property
    def points(self) -> frozenset[str]:
        """The points the ring keeps."""
        return frozenset(self._points)

    def add(self, ts_ms: int, values: Mapping[str, Value]) -> None:
        """One reading time's good values (points the ring does not keep are ignored)."""
        oldest = ts_ms - self.keep_ms
        for name, value in values.items():
            entries = self._points.get(name)
            if entries is None:
                continue
            entries.append((ts_ms, value))
            while entries[0][0] < oldest:
                entries.popleft()

    def entries(self, point: str) -> list[tuple[int, Value]]:
        """What the ring holds of `point`, oldest first."""
        return list(self._points.get(point, ()))

    def rows(self, points: Sequence[str], since_ms: int, until_ms: int) -> list[Row]:
        """Rows of `points` for the reading times in [since_ms, until_ms], oldest first."""
        by_time: dict[int, dict[str, Value]] = {}
        for name in points:
            for ts_ms, value in self._points.get(name, ()):
                if since_ms <= ts_ms <= until_ms:
                    by_time.setdefault(ts_ms, {})[name] = value
        return [(ts, tuple(by_time[ts].get(p) for p in points)) for ts in sorted(by_time)]


@dataclass(frozen=True, slots=True)
class Begin:
    """Start a capture's file: `text` is the header and the `before` rows; `sidecar`
    what the drop's `NAME.json` holds once the capture is complete."""

    capture: int
    filename: str
    sidecar: dict[str, Any]
    text: str


@dataclass(frozen=True, slots=True)
class Append:
    """More rows of a running capture."""

    capture: int
    text: str
    rows: int


@dataclass(frozen=True, slots=True)
class Finish:
    """The capture is complete: close its file and publish the drop. `cut_short`: it
    ended before its `after` ran out (the daemon stopped)."""

    capture: int
    cut_short: bool = False


Action = Begin | Append | Finish


@dataclass(slots=True)
class _Running:
    spec: CaptureSpec
    fired_ms: int
    rows: int = 0

    @property
    def end_ms(self) -> int:
        return self.fired_ms + self.spec.after_ms


@dataclass
class DeviceCaptures:
    """One device's capture rules, its ring and its running captures."""

    device: str
    specs: Mapping[str, CaptureSpec]
    intervals_ms: Mapping[str, int]
    #: Numbers the captures; shared by a daemon's devices so a number names one capture.
    counter: list[int] = field(default_factory=lambda: [0])

    def __post_init__(self) -> None:
        keep_ms = max((s.before_ms for s in self.specs.values()), default=0)
        names = {name for spec in self.specs.values() for name in spec.points}
        slots = {n: ring_slots(keep_ms, self.intervals_ms.get(n, 1000)) for n in names}
        self.ring = CaptureRing(keep_ms, slots)
        self.running: dict[int, _Running] = {}

    def take(
        self,
        samples: Sequence[Sample],
        blocks: Sequence[SampleBlock],
        events: list[Event],
        *,
        publishing: bool,
    ) -> tuple[list[Event], list[Action]]:
        """One poll's output (as the mapping stage made it) → the events that still go by
        `thing.event.post`, and the file actions. A muted device starts no capture (its
        events go nowhere), but its ring keeps following its readings."""
        actions = self.observe(_readings(samples, blocks, self.ring.points))
        if not publishing or not events:
            return events, actions
        kept, started = self.fire(events)
        return kept, actions + started

    def observe(self, readings: Mapping[int, Mapping[str, Value]]) -> list[Action]:
        """Good values by reading time: into the ring, and onto running captures."""
        for ts_ms in sorted(readings):
            self.ring.add(ts_ms, readings[ts_ms])
        actions: list[Action] = []
        for number, capture in list(self.running.items()):
            points = capture.spec.points
            rows: list[Row] = []
            past_end = False
            for ts_ms in sorted(readings):
                if ts_ms > capture.end_ms:
                    past_end = True
                elif ts_ms > capture.fired_ms:
                    values = readings[ts_ms]
                    row = tuple(values.get(p) for p in points)
                    if any(v is not None for v in row):
                        rows.append((ts_ms, row))
            if rows:
                capture.rows += len(rows)
                actions.append(Append(number, csv_text(rows), len(rows)))
            if past_end:
                actions.append(Finish(number))
                del self.running[number]
        return actions

    def fire(self, events: Iterable[Event]) -> tuple[list[Event], list[Action]]:
        """Start a capture for each captured event: (the events that go without a file,
        the `Begin`s)."""
        kept: list[Event] = []
        actions: list[Action] = []
        for event in events:
            spec = self.specs.get(event.event_id)
            if spec is None or len(self.running) >= MAX_RUNNING:
                kept.append(event)
                continue
            self.counter[0] += 1
            number = self.counter[0]
            rows = self.ring.rows(spec.points, event.ts_ms - spec.before_ms, event.ts_ms)
            self.running[number] = _Running(spec, event.ts_ms, len(rows))
            filename = capture_filename(self.device, event.event_id, event.ts_ms)
            sidecar = {
                "device": self.device,
                "event": event.event_id,
                "file_param": spec.param,
                "params": {k: v for k, v in event.params.items() if k != spec.param},
                "time": event.ts_ms,
                "filename": filename,
            }
            text = csv_text([], header=spec.points) + csv_text(rows)
            actions.append(Begin(number, filename, sidecar, text))
        return kept, actions

    def expire(self, now_ms: int) -> list[Action]:
        """Finish the captures whose `after` ran out `FINISH_GRACE_MS` before `now_ms`."""
        done = [n for n, c in self.running.items() if now_ms > c.end_ms + FINISH_GRACE_MS]
        for number in done:
            del self.running[number]
        return [Finish(n) for n in done]

    def finish_all(self) -> list[Action]:
        """Finish every running capture now (the daemon stops)."""
        actions: list[Action] = [Finish(n, cut_short=True) for n in self.running]
        self.running.clear()
        return actions

    def adopt(self, other: DeviceCaptures) -> None:
        """Take over `other`'s running captures and ring contents (a reload)."""
        self.running.update(other.running)
        merged: dict[int, dict[str, Value]] = {}
        for name in self.ring.points:
            for ts_ms, value in other.ring.entries(name):
                merged.setdefault(ts_ms, {})[name] = value
        for ts_ms in sorted(merged):
            self.ring.add(ts_ms, merged[ts_ms])


def _readings(
    samples: Sequence[Sample], blocks: Sequence[SampleBlock], points: frozenset[str]
) -> dict[int, dict[str, Value]]:
    """The good values of `points` in one poll's output, by reading time."""
    readings: dict[int, dict[str, Value]] = {}
    for block in blocks:
        present = points.intersection(block.measurepoints)
        if not present:
            continue
        # Python work per captured point only: the block's other points are skipped in C.
        names, values = block.measurepoints, block.values
        found = readings.setdefault(block.ts_ms, {})
        for name in present:
            found[name] = values[names.index(name)]
    good = Quality.GOOD
    for sample in samples:
        if sample.quality is good and sample.measurepoint in points:
            readings.setdefault(sample.ts_ms, {})[sample.measurepoint] = sample.value
    return readings


_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def iso_time(ts_ms: int) -> str:
    """UTC ISO-8601 with milliseconds: `2026-12-05T10:00:00.000Z`."""
    return (_EPOCH + timedelta(milliseconds=ts_ms)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def capture_filename(device: str, event: str, ts_ms: int) -> str:
    """The name the cloud keeps: device, event, UTC time (`inv-01-trip-20261205T100000Z.csv`)."""
    stamp = (_EPOCH + timedelta(milliseconds=ts_ms)).strftime("%Y%m%dT%H%M%SZ")
    return f"{_UNSAFE.sub('_', device)}-{_UNSAFE.sub('_', event)}-{stamp}.csv"


class _Lines:
    """A file-like sink for `csv.writer` that keeps what it is given."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def write(self, text: str) -> int:
        self.parts.append(text)
        return len(text)


def _cell(value: Value | None) -> str:
    if value is None:
        return ""
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, float):
        return repr(value)  # what JSON (the spool) writes for a finite float
    return str(value)


def csv_text(rows: Iterable[Row], *, header: Sequence[str] | None = None) -> str:
    """CSV lines for `rows` (after the header line, when given)."""
    sink = _Lines()
    writer = csv.writer(sink)
    if header is not None:
        writer.writerow(["time", *header])
    for ts_ms, values in rows:
        writer.writerow([iso_time(ts_ms), *(_cell(v) for v in values)])
    return "".join(sink.parts)
