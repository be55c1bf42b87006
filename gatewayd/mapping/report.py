"""Report by exception: which samples go on to the spool (pure: no clock, no I/O).

A point reports `always` (every reading, the default) or on `change`: a sample is sent when
its value moved beyond the deadband from the *last value sent*, when its quality differs
from the last sent quality, when `heartbeat` passed since the last sent sample, or when
the point has nothing sent yet (after start, a reload, a failed or skipped read, a
reconnect, `combine.enable`, or a value the spool dropped or dead-lettered: the stage is
told to `forget`). Float values compare with the deadband (absolute, or percent of the last
sent value); integers, booleans, strings and enums compare exactly.

"Sent" means handed to the spool: the spool delivers every frame it commits (live or by
resume, in the same order), so the cloud's series is what passes this filter; the only
ways a committed value fails to reach the cloud (dropped at the spool's cap, dead-lettered,
not written at all) make the caller `forget` the point, so the next value is sent.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from gatewayd.samples import Quality, Value

__all__ = ["ALWAYS", "LastSent", "ReportFilter", "ReportSpec", "Resend", "should_send"]

#: A `change` point's heartbeat when the config gives none (seconds).
DEFAULT_HEARTBEAT_S = 900.0


@dataclass(frozen=True, slots=True)
class ReportSpec:
    """One point's report rule, compiled from the config at load time."""

    on_change: bool = False  # False: every reading is sent (`on: always`)
    deadband: float = 0.0  # absolute, for float values
    percent: float | None = None  # deadband as percent of the last sent value instead
    heartbeat_ms: int = int(DEFAULT_HEARTBEAT_S * 1000)

    def describe(self) -> str:
        """The rule as `gatewayd plan` shows it."""
        if not self.on_change:
            return "always"
        band = f"{self.percent:g}%" if self.percent is not None else f"{self.deadband:g}"
        return f"change ±{band} hb {self.heartbeat_ms / 1000:g}s"


ALWAYS = ReportSpec()


@dataclass(frozen=True, slots=True)
class LastSent:
    """What was last sent for a point."""

    value: Value
    quality: Quality
    ts_ms: int


def beyond_deadband(spec: ReportSpec, value: Value, last: Value) -> bool:
    """Whether `value` differs from `last` by more than the rule's deadband."""
    # bool is an int and int == float compares by value: a change of type is a change.
    if type(value) is not type(last):
        return True
    if isinstance(value, float) and isinstance(last, float):
        band = spec.deadband if spec.percent is None else abs(last) * spec.percent / 100.0
        return abs(value - last) > band
    return value != last


def should_send(
    spec: ReportSpec, value: Value, quality: Quality, ts_ms: int, last: LastSent | None
) -> bool:
    """Whether a reading goes to the spool, given what was last sent for its point."""
    if not spec.on_change or last is None:
        return True
    if quality is not last.quality:
        return True
    # A clock stepped back counts as a heartbeat: never hold a value on a time we distrust.
    elapsed = ts_ms - last.ts_ms
    if elapsed >= spec.heartbeat_ms or elapsed < 0:
        return True
    return beyond_deadband(spec, value, last.value)


class ReportFilter:
    """One device's filter state: the last sample sent per measurepoint."""

    def __init__(self, specs: dict[str, ReportSpec]) -> None:
        """`specs`: measurepoint → rule; points not listed report `always`."""
        self.specs = {m: s for m, s in specs.items() if s.on_change}
        self._last: dict[str, LastSent] = {}

    @property
    def active(self) -> bool:
        """Whether any point reports on change (else the filter keeps everything)."""
        return bool(self.specs)

    def keep(self, measurepoint: str, value: Value, quality: Quality, ts_ms: int) -> bool:
        """Whether to send this reading; a kept one becomes the point's last sent."""
        spec = self.specs.get(measurepoint)
        if spec is None:
            return True
        if not should_send(spec, value, quality, ts_ms, self._last.get(measurepoint)):
            return False
        self._last[measurepoint] = LastSent(value, quality, ts_ms)
        return True

    def keep_good(
        self, measurepoints: Sequence[str], values: Sequence[Value], ts_ms: int
    ) -> list[bool]:
        """`keep` for GOOD readings taken together (one response): a mask of `values`.

        The same decisions as `keep` point by point, with `should_send` inlined: the poll
        hot path, where most points are compared and held back.
        """
        specs, sent, good = self.specs, self._last, Quality.GOOD
        mask: list[bool] = []
        append = mask.append
        for measurepoint, value in zip(measurepoints, values, strict=True):
            spec = specs.get(measurepoint)
            last = sent.get(measurepoint) if spec is not None else None
            if spec is not None and last is not None:
                elapsed = ts_ms - last.ts_ms
                previous = last.value
                if last.quality is good and 0 <= elapsed < spec.heartbeat_ms:
                    if type(value) is float and type(previous) is float:
                        percent = spec.percent
                        band = spec.deadband if percent is None else abs(previous) * percent / 100.0
                        if abs(value - previous) <= band:
                            append(False)
                            continue
                    elif type(value) is type(previous) and value == previous:
                        append(False)
                        continue
            if spec is not None:
                sent[measurepoint] = LastSent(value, good, ts_ms)
            append(True)
        return mask

    def forget(self, measurepoints: Iterable[str]) -> None:
        """These points' next reading is sent whatever its value."""
        for measurepoint in measurepoints:
            self._last.pop(measurepoint, None)

    def forget_all(self) -> None:
        """Every point's next reading is sent."""
        self._last.clear()


class Resend:
    """"Send the next reading" signals for the mapping stages, from outside the poll loop.

    The daemon owns one (a reload's new stages share it): the uplink's new session and a
    value the spool lost flag every device, `combine.enable` one. A stage `take`s its flag
    before each read.
    """

    def __init__(self) -> None:
        self._generation = 0  # bumped by `all`
        self._devices: set[str] = set()

    def all(self) -> None:
        """Every device sends its next reading of every point."""
        self._generation += 1

    def device(self, device: str) -> None:
        """`device` sends its next reading of every point."""
        self._devices.add(device)

    @property
    def generation(self) -> int:
        """Bumped by every `all`: a stage compares it with the one it saw last."""
        return self._generation

    def take(self, device: str) -> bool:
        """Whether `device` was flagged since it last asked (clears the flag)."""
        if device in self._devices:
            self._devices.discard(device)
            return True
        return False
