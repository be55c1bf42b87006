"""Bookkeeping of the demo, without I/O: what the daemon offered, what the cloud received.

- `Ledger` is the daemon's `observer`: every good sample and every event it committed;
- `CloudTally` reads the emulator's records incrementally: per device points, points/s,
  last values and events, and the post/resume totals;
- `OutageTimeline` follows one uplink cut: when the cloud went and came back, when the
  daemon reconnected, the backlog's peak, and when it had drained;
- `account` compares the ledger with the cloud (and what is still in the spool).

Time always comes in as an argument (seconds on the demo's monotonic clock).
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from gatewayd.modbus.poller import CycleResult
from gatewayd.samples import Quality, Value
from gatewayd.sim.emulator.records import EventRecord, PointRecord, Records

__all__ = [
    "Accounting",
    "CloudTally",
    "DeviceTally",
    "Ledger",
    "OutageTimeline",
    "ReconnectCountdown",
    "account",
]

#: Seconds over which points/s is averaged.
RATE_WINDOW_S = 5.0

#: (device key, measurepoint or event id, epoch ms): one value or event, as EnOS keys it.
Key = tuple[str, str, int]


class Ledger:
    """Everything the daemon committed to its spool (seen through its observer hook)."""

    def __init__(self, device_keys: dict[str, str]) -> None:
        """`device_keys` maps gatewayd device names to their EnOS device keys."""
        self._keys = device_keys
        self.samples: set[Key] = set()
        self.events: set[Key] = set()

    def observe(self, result: CycleResult) -> None:
        """Record one committed poll cycle (bad-quality samples are not sent: not counted)."""
        for sample in result.samples:
            if sample.quality is Quality.GOOD:
                key = self._keys.get(sample.device, sample.device)
                self.samples.add((key, sample.measurepoint, sample.ts_ms))
        for event in result.events:
            key = self._keys.get(event.device, event.device)
            self.events.add((key, event.event_id, event.ts_ms))


@dataclass
class DeviceTally:
    """What the cloud holds for one device."""

    name: str
    device_key: str
    post: int = 0
    resume: int = 0
    events: int = 0
    #: Latest value per measurepoint, in the order the points first arrived.
    values: dict[str, Value] = field(default_factory=dict)
    _arrivals: deque[tuple[float, int]] = field(default_factory=deque, repr=False)

    @property
    def points(self) -> int:
        """Values received, live and backfilled."""
        return self.post + self.resume

    def rate(self, now: float, since: float) -> float:
        """Points per second received over the last `RATE_WINDOW_S` (or since `since`)."""
        while self._arrivals and self._arrivals[0][0] <= now - RATE_WINDOW_S:
            self._arrivals.popleft()
        span = min(RATE_WINDOW_S, max(now - since, 1.0))
        return sum(n for _, n in self._arrivals) / span


class CloudTally:
    """Reads new emulator records since the last call and keeps per-device figures."""

    def __init__(self, devices: Iterable[tuple[str, str]], *, started: float) -> None:
        """`devices` gives (name, device key) in display order; `started` is time zero."""
        self.devices = [DeviceTally(name, key) for name, key in devices]
        self._by_key = {d.device_key: d for d in self.devices}
        self.started = started
        self.post = 0
        self.resume = 0
        self.events = 0
        self.delivered_samples: set[Key] = set()
        self.delivered_events: set[Key] = set()
        self.duplicates = 0
        self._points_read = 0
        self._events_read = 0

    def absorb(self, records: Records, now: float) -> None:
        """Take in the records that arrived since the previous call."""
        points = records.points[self._points_read :]
        events = records.events[self._events_read :]
        self._points_read += len(points)
        self._events_read += len(events)
        self._add_points(points, now)
        self._add_events(events)

    def _add_points(self, points: Sequence[PointRecord], now: float) -> None:
        arrived: dict[str, int] = {}
        for record in points:
            key = (record.device_key, record.point, record.time)
            if key in self.delivered_samples:
                self.duplicates += 1
            self.delivered_samples.add(key)
            if record.channel == "resume":
                self.resume += 1
            else:
                self.post += 1
            device = self._by_key.get(record.device_key)
            if device is None:
                continue
            if record.channel == "resume":
                device.resume += 1
            else:
                device.post += 1
            device.values[record.point] = record.value
            arrived[record.device_key] = arrived.get(record.device_key, 0) + 1
        for device_key, count in arrived.items():
            self._by_key[device_key]._arrivals.append((now, count))

    def _add_events(self, events: Sequence[EventRecord]) -> None:
        for record in events:
            self.delivered_events.add((record.device_key, record.event_id, record.time))
            self.events += 1
            device = self._by_key.get(record.device_key)
            if device is not None:
                device.events += 1


@dataclass
class OutageTimeline:
    """One planned uplink cut and how the daemon lived through it (times in demo seconds)."""

    after: float
    duration: float
    cut_at: float | None = None
    restored_at: float | None = None
    reconnected_at: float | None = None
    drained_at: float | None = None
    backlog_peak: int = 0
    resume_before: int = 0
    resume_after: int = 0

    @property
    def phase(self) -> str:
        """pending, down, reconnecting, draining or done."""
        if self.cut_at is None:
            return "pending"
        if self.restored_at is None:
            return "down"
        if self.reconnected_at is None:
            return "reconnecting"
        if self.drained_at is None:
            return "draining"
        return "done"

    def observe(self, now: float, *, connected: bool, backlog: int, resume: int) -> None:
        """Update with one refresh's uplink state, spool backlog and cloud resume total."""
        if self.cut_at is None:
            self.resume_before = resume
            return
        self.backlog_peak = max(self.backlog_peak, backlog)
        self.resume_after = resume - self.resume_before
        if self.restored_at is None:
            return
        if self.reconnected_at is None and connected:
            self.reconnected_at = now
        if self.reconnected_at is not None and self.drained_at is None and backlog == 0:
            self.drained_at = now

    def describe(self, now: float) -> str:
        """One phrase for the status footer."""
        phase = self.phase
        if phase == "pending":
            return f"uplink cut in {max(0.0, self.after - now):.0f}s"
        assert self.cut_at is not None
        if phase == "down":
            left = max(0.0, self.cut_at + self.duration - now)
            return f"CLOUD DOWN {now - self.cut_at:.0f}s (back in {left:.0f}s)"
        assert self.restored_at is not None
        if phase == "reconnecting":
            return f"cloud back {now - self.restored_at:.0f}s ago, daemon reconnecting"
        if phase == "draining":
            return f"draining backlog via resume ({self.resume_after} backfilled)"
        return (
            f"outage over: {self.resume_after} points backfilled, peak backlog "
            f"{self.backlog_peak} rows"
        )


_RECONNECTING = re.compile(r"^reconnecting in (\d+)s$")
#: A wait longer than plain backoff reaches this early means EnOS' connect throttle holds it.
_THROTTLE_HINT_S = 60


class ReconnectCountdown:
    """Turns the uplink's "reconnecting in Ns" (set once per wait) into a live countdown."""

    def __init__(self) -> None:
        self._seen: tuple[str, int] | None = None
        self._due = 0.0

    def text(self, now: float, state: str, attempts: int) -> str:
        """The uplink state to show; `attempts` tells one wait from the next with equal text."""
        match = _RECONNECTING.match(state)
        if match is None:
            self._seen = None
            return state
        if self._seen != (state, attempts):
            self._seen = (state, attempts)
            self._due = now + int(match.group(1))
        left = max(0.0, self._due - now)
        hint = (
            " (EnOS connect throttle: at most 4 CONNECTs in 120 s)"
            if int(match.group(1)) >= _THROTTLE_HINT_S
            else ""
        )
        return f"reconnecting in {left:.0f}s{hint}"


@dataclass(frozen=True, slots=True)
class Accounting:
    """Offered vs delivered, for the final summary."""

    offered_samples: int
    offered_events: int
    live: int
    backfilled: int
    events: int
    duplicates: int
    in_spool: int
    lost: int


def account(
    ledger: Ledger, cloud: CloudTally, *, spool_samples: int, spool_events: int
) -> Accounting:
    """Compare what the daemon committed with what the cloud holds.

    A committed sample the cloud does not have is *lost* unless the spool still keeps it
    for the next start (`spool_*`: rows left in the spool after the daemon stopped).
    """
    missing_samples = len(ledger.samples - cloud.delivered_samples)
    missing_events = len(ledger.events - cloud.delivered_events)
    return Accounting(
        offered_samples=len(ledger.samples),
        offered_events=len(ledger.events),
        live=cloud.post,
        backfilled=cloud.resume,
        events=cloud.events,
        duplicates=cloud.duplicates,
        in_spool=spool_samples + spool_events,
        lost=max(0, missing_samples - spool_samples) + max(0, missing_events - spool_events),
    )
