"""What the emulated cloud accepted: measurepoint values, events, attributes and logins.

Live (`post`) and backfill (`resume`) values are kept apart, as EnOS does (resume data is
stored but never reaches alerting/stream processing). Tests read `Records` directly; the
CLI writes it as JSON with `dump`.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

Channel = Literal["post", "resume"]


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
    """One accepted event."""

    product_key: str
    device_key: str
    event_id: str
    params: dict[str, Any]
    time: int
    received_at: int
    message_id: str | None = None


@dataclass(frozen=True, slots=True)
class AttributeRecord:
    """One accepted attribute update."""

    product_key: str
    device_key: str
    attributes: dict[str, Any]
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
    logins: list[LoginRecord] = field(default_factory=list)

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
        return {
            "post": per_channel["post"],
            "resume": per_channel["resume"],
            "events": len(self.events),
            "attributes": len(self.attributes),
            "logins": sum(1 for r in self.logins if r.action == "login" and r.code == 200),
            "logouts": sum(1 for r in self.logins if r.action == "logout" and r.code == 200),
        }

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
