"""What the emulated cloud accepted: measurepoint values, events, attributes and logins.

Live (`post`) and backfill (`resume`) values are kept apart, as EnOS does (resume data is
stored but never reaches alerting/stream processing). Tests read `Records` directly; the
CLI writes it as JSON with `dump`.

Benchmarks that push tens of millions of points set `Records.tally` (a `PointTally`):
accepted values are then counted per device and channel instead of kept one object per
point, with per-device time order and live freshness checked on the way, so the cloud
side costs per record, not per point.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Channel = Literal["post", "resume"]
EventChannel = Literal["thing", "integration"]
Key = tuple[str, str]  # (product key, device key)


@dataclass
class PointTally:
    """Counting mode: accepted values per (channel, device), without per-point objects.

    `trust_values` skips the per-point thing-model check (the sender is trusted to send
    valid values: a benchmark measures the sender, not the cloud's validation).
    A record whose time is not after the previous record of the same device on the same
    channel counts in `out_of_order` (a duplicate or a reordering). `post_ages_ms` holds
    received-minus-sample time per live record (every point of a record shares it).
    """

    trust_values: bool = True
    points: Counter[tuple[Channel, Key]] = field(default_factory=Counter)
    records: Counter[Channel] = field(default_factory=Counter)
    out_of_order: Counter[Channel] = field(default_factory=Counter)
    post_ages_ms: list[tuple[int, int]] = field(default_factory=list)  # (received_at, age)
    #: When each channel accepted its first and its latest record (epoch ms).
    first_ms: dict[Channel, int] = field(default_factory=dict)
    last_ms: dict[Channel, int] = field(default_factory=dict)
    _last: dict[tuple[Channel, Key], int] = field(default_factory=dict)

    def add(self, device: Key, count: int, time: int, channel: Channel, received_at: int) -> None:
        """Count one accepted record of `count` values."""
        key = (channel, device)
        self.points[key] += count
        self.records[channel] += 1
        self.first_ms.setdefault(channel, received_at)
        self.last_ms[channel] = received_at
        previous = self._last.get(key)
        if previous is not None and time <= previous:
            self.out_of_order[channel] += 1
        else:
            self._last[key] = time
        if channel == "post":
            self.post_ages_ms.append((received_at, received_at - time))

    def total(self, channel: Channel | None = None) -> int:
        """Accepted values, of one channel or both."""
        return sum(n for (ch, _), n in self.points.items() if channel is None or ch == channel)


@dataclass(frozen=True, slots=True)
class PointRecord:
    """One accepted measurepoint value."""

    product_key: str
    device_key: str
    point: str
    value: Any
    quality: int | None
    time: int  # the message's `time` (epoch ms), or the server time when absent
    channel: Channel
    received_at: int  # epoch ms when the emulator accepted it
    message_id: str | None = None


@dataclass(frozen=True, slots=True)
class EventRecord:
    """One accepted event: live (`thing.event.post`, may fire alarms) or historical
    (`integration.event.post` on a product's mode-4 channel, stored as history)."""

    product_key: str
    device_key: str
    event_id: str
    params: dict[str, Any]
    time: int
    received_at: int
    message_id: str | None = None
    channel: EventChannel = "thing"


@dataclass(frozen=True, slots=True)
class AttributeRecord:
    """One accepted attribute update."""

    product_key: str
    device_key: str
    attributes: dict[str, Any]
    received_at: int


@dataclass(frozen=True, slots=True)
class TagRecord:
    """One accepted tag update or delete: the tags set (update) or the keys removed."""

    product_key: str
    device_key: str
    method: str
    tags: dict[str, str]  # update: key -> value; delete: key -> ""
    received_at: int


@dataclass(frozen=True, slots=True)
class LoginRecord:
    """One sub-device login/logout attempt with its outcome."""

    gateway: tuple[str, str]
    product_key: str
    device_key: str
    action: Literal["login", "logout"]
    code: int
    received_at: int


@dataclass
class Records:
    """Everything accepted so far, in arrival order."""

    points: list[PointRecord] = field(default_factory=list)
    events: list[EventRecord] = field(default_factory=list)
    attributes: list[AttributeRecord] = field(default_factory=list)
    tags: list[TagRecord] = field(default_factory=list)
    logins: list[LoginRecord] = field(default_factory=list)
    #: Set for counting mode (see `PointTally`); `points` then stays empty.
    tally: PointTally | None = None

    def values(
        self,
        channel: Channel | None = None,
        device: str | None = None,
        point: str | None = None,
        product: str | None = None,
    ) -> list[PointRecord]:
        """Accepted values, optionally only of one channel, device key, point or product."""
        return [
            r
            for r in self.points
            if (channel is None or r.channel == channel)
            and (device is None or r.device_key == device)
            and (point is None or r.point == point)
            and (product is None or r.product_key == product)
        ]

    def counts(self) -> dict[str, int]:
        """How many records of each kind (`post`, `resume`, `events`, `logins`, ...)."""
        per_channel = Counter(r.channel for r in self.points)
        if self.tally is not None:
            per_channel["post"] += self.tally.total("post")
            per_channel["resume"] += self.tally.total("resume")
        return {
            "post": per_channel["post"],
            "resume": per_channel["resume"],
            "events": len(self.events),
            "attributes": len(self.attributes),
            "logins": sum(1 for r in self.logins if r.action == "login" and r.code == 200),
            "logouts": sum(1 for r in self.logins if r.action == "logout" and r.code == 200),
        }

    def events_of(self, channel: EventChannel) -> list[EventRecord]:
        """Accepted events of one channel, in arrival order."""
        return [e for e in self.events if e.channel == channel]

    def clear(self) -> None:
        self.points.clear()
        self.events.clear()
        self.attributes.clear()
        self.logins.clear()

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict: live and backfill values under separate keys."""
        return {
            "counts": self.counts(),
            "post": [asdict(r) for r in self.points if r.channel == "post"],
            "resume": [asdict(r) for r in self.points if r.channel == "resume"],
            "events": [asdict(r) for r in self.events],
            "attributes": [asdict(r) for r in self.attributes],
            "logins": [asdict(r) for r in self.logins],
        }

    def dump(self, path: Path) -> None:
        """Write `to_json()` to `path` (atomically: a reader never sees half a file)."""
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=1, default=str), encoding="utf-8")
        tmp.replace(path)
