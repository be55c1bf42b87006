"""Per-device health as the status command and the watchdog summary see it."""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from enum import StrEnum

#: Window over which `points_per_second` is averaged.
RATE_WINDOW = 60.0


class DeviceState(StrEnum):
    """Where a device stands, from the poller's point of view."""

    STARTING = "starting"  # not polled yet
    UP = "up"  # its last poll was answered
    BACKOFF = "backoff"  # stopped answering: retried later with a growing delay
    DOWN = "down"  # its bus is unavailable (endpoint refuses, serial port missing)
    DISABLED = "disabled"  # polling switched off (combine.disable, or `enabled: false`)


@dataclass(frozen=True, slots=True)
class DeviceStatus:
    """A snapshot of one device's health (returned by `BusPoller.device_states`)."""

    device: str
    bus: str
    unit_id: int
    state: DeviceState
    last_error: str | None
    consecutive_failures: int
    last_success_ms: int | None  # wall time of the last answered request, Unix ms
    points_per_second: float  # good points read per second over the last minute
    publishing: bool
    retry_in: float | None  # seconds until the next attempt while in backoff
    max_registers: int  # the largest register read the device accepts (lowered if refused)
    unreadable: tuple[str, ...]  # measurepoints whose registers answer exception 02


@dataclass(slots=True)
class DeviceHealth:
    """Mutable health of one device, owned by its bus task."""

    device: str
    bus: str
    unit_id: int
    state: DeviceState = DeviceState.STARTING
    last_error: str | None = None
    consecutive_failures: int = 0
    last_success_ms: int | None = None
    retry_at: float | None = None  # monotonic; set while in backoff
    _reads: deque[tuple[float, int]] = field(default_factory=deque)

    def count_points(self, now: float, points: int) -> None:
        """Record `points` readings the device answered at monotonic `now` (the rate figure)."""
        self._reads.append((now, points))
        while self._reads and self._reads[0][0] < now - RATE_WINDOW:
            self._reads.popleft()

    def points_per_second(self, now: float) -> float:
        """Good points per second over the last `RATE_WINDOW` seconds."""
        recent = sum(n for t, n in self._reads if t >= now - RATE_WINDOW)
        return recent / RATE_WINDOW

    def snapshot(
        self,
        now: float,
        *,
        max_registers: int,
        unreadable: tuple[str, ...],
        publishing: bool = True,
    ) -> DeviceStatus:
        """An immutable copy for callers outside the bus task (plus what the reader learnt
        and whether the mapping stage passes the device's output on)."""
        return DeviceStatus(
            device=self.device,
            bus=self.bus,
            unit_id=self.unit_id,
            state=self.state,
            last_error=self.last_error,
            consecutive_failures=self.consecutive_failures,
            last_success_ms=self.last_success_ms,
            points_per_second=self.points_per_second(now),
            publishing=publishing,
            retry_in=None if self.retry_at is None else max(0.0, self.retry_at - now),
            max_registers=max_registers,
            unreadable=unreadable,
        )
