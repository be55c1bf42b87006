"""The mapping stage: one device's reads → quality-tagged samples, blocks and events.

The poller reads (and judges whether a read worked); this stage owns everything after:
the raw registers and bits of each good response are decoded, scaled and enum-mapped
(`ResponseDecoder`, one compiled block decoder per request layout), the values become
`Sample`s / `SampleBlock`s with their quality (`DeviceMapper`: NaN/±inf and points that do
not decode are BAD), the device's event rules see the good values (`EventEngine`), and
muting (`Muting`) decides whether any of it goes on to the spool. The poller hands over
what it read (`read_responses`), the stage returns what the spool stores; nothing flows
back.

The stage takes the reads structurally (`RawResponse`, `FailedRead`): it imports the
Modbus layer's pure cores (register codec, point specs) but not the reader.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from itertools import pairwise
from typing import NamedTuple, Protocol

from gatewayd.config.enums import Order
from gatewayd.config.models import (
    DeviceConfig,
    DeviceModel,
    EventRule,
    InSetRule,
    ReportConfig,
    ThresholdRule,
)
from gatewayd.mapping.decoding import Decoded, ModelDecoders, RawResponse, ResponseDecoder
from gatewayd.mapping.events import EventEngine, RuleSpec
from gatewayd.mapping.mapper import DeviceMapper, MappedPoint
from gatewayd.mapping.muting import Muting
from gatewayd.mapping.report import ALWAYS, ReportFilter, ReportSpec, Resend
from gatewayd.modbus.specs import PointSpec
from gatewayd.samples import Event, Quality, Sample, SampleBlock, Value

__all__ = [
    "CaptureHook",
    "DeviceMapping",
    "DeviceOutput",
    "FailedRead",
    "GoodBlock",
    "StagePoint",
    "compile_rules",
    "report_specs",
]


class StagePoint(PointSpec, MappedPoint, Protocol):
    """What the stage reads of a point: the decoder's spec and the mapper's fields (the
    compiled `modbus.points.Point` and the config's `PointConfig` both fit)."""


class GoodBlock(Protocol):
    """The decoded values of one response (`decoding.DecodedBlock` fits)."""

    @property
    def indices(self) -> tuple[int, ...]: ...  # model indices, in request order
    @property
    def measurepoints(self) -> tuple[str, ...]: ...
    @property
    def values(self) -> Sequence[Value]: ...
    @property
    def nonfinite(self) -> tuple[int, ...]: ...  # positions in `values` of NaN / ±inf
    @property
    def ts_ms(self) -> int: ...
    @property
    def ascending(self) -> bool: ...  # `indices` strictly ascending


class FailedRead(Protocol):
    """One point whose read failed, with the time of the attempt."""

    @property
    def index(self) -> int: ...
    @property
    def ts_ms(self) -> int: ...


class CaptureHook(Protocol):
    """A device's capture rules (`gatewayd.mapping.captures`): they see each poll's output
    and keep the events they capture (those go with their file, not by event.post)."""

    def take(
        self,
        samples: Sequence[Sample],
        blocks: Sequence[SampleBlock],
        events: list[Event],
        *,
        publishing: bool,
    ) -> list[Event]: ...


class DeviceOutput(NamedTuple):
    """What one device's poll gives the spool: point samples, good blocks, events."""

    samples: list[Sample]
    blocks: list[SampleBlock]
    events: list[Event]


def compile_rules(rules: Iterable[EventRule]) -> tuple[RuleSpec, ...]:
    """The validated rules as the event engine's plain, frozen specs (at load time)."""
    return tuple(_rule_spec(rule) for rule in rules)


def report_specs(device: DeviceConfig, model: DeviceModel) -> dict[str, ReportSpec]:
    """Each point's report rule (at load time). The most specific given wins: the site's
    `point_reports` entry, the site device's `report`, the model point's `report`, the
    model's `report`; else `always`."""
    return {
        point.measurepoint: _report_spec(
            device.point_reports.get(point.measurepoint)
            or device.report
            or point.report
            or model.report
        )
        for point in model.points
    }


def _report_spec(report: ReportConfig | None) -> ReportSpec:
    if report is None or report.on == "always":
        return ALWAYS
    percent = report.percent
    return ReportSpec(
        on_change=True,
        deadband=0.0 if percent is not None else float(report.deadband),
        percent=percent,
        heartbeat_ms=round(report.heartbeat * 1000),
    )


def _rule_spec(rule: EventRule) -> RuleSpec:
    params = tuple(rule.params.items())
    if isinstance(rule, ThresholdRule):
        return RuleSpec(
            rule.event,
            rule.rule,
            rule.point,
            params,
            above=rule.above,
            below=rule.below,
            hysteresis=rule.hysteresis,
        )
    if isinstance(rule, InSetRule):
        return RuleSpec(rule.event, rule.rule, rule.point, params, values=tuple(rule.values))
    return RuleSpec(rule.event, rule.rule, rule.point, params)


def _in_point_order(blocks: Sequence[GoodBlock]) -> bool:
    """Whether the blocks' points, one block after the other, are in strictly ascending order."""
    if not all(block.ascending for block in blocks):
        return False
    return all(a.indices[-1] < b.indices[0] for a, b in pairwise(blocks))


class Throughput:
    """Points polled and sent (past the report filter) over the last minute of sample time."""

    WINDOW_MS = 60_000

    def __init__(self) -> None:
        self._cycles: deque[tuple[int, int, int]] = deque()  # (ts_ms, polled, sent)

    def add(self, ts_ms: int, polled: int, sent: int) -> None:
        """One poll's counts."""
        self._cycles.append((ts_ms, polled, sent))
        while self._cycles and self._cycles[0][0] <= ts_ms - self.WINDOW_MS:
            self._cycles.popleft()

    def per_minute(self, now_ms: int) -> tuple[int, int]:
        """(polled, sent) points in the minute before `now_ms`."""
        recent = [c for c in self._cycles if c[0] > now_ms - self.WINDOW_MS]
        return sum(c[1] for c in recent), sum(c[2] for c in recent)


def _sample_time(sample: Sample) -> int:
    return sample.ts_ms


class DeviceMapping:
    """One device's mapping state: last good values, event rules, and its muting."""

    def __init__(
        self,
        device: str,
        points: Sequence[StagePoint],
        rules: Iterable[EventRule],
        muting: Muting,
        *,
        default_interval: float,
        stamp_per_request: bool = False,
        reports: dict[str, ReportSpec] | None = None,
        resend: Resend | None = None,
        orders: Sequence[tuple[Order, Order]] | None = None,
        capture: CaptureHook | None = None,
        unqualified: Mapping[int, str] | None = None,
        decoders: ModelDecoders | None = None,
    ) -> None:
        """`stamp_per_request`: the device stamps each response (`timestamps: request`);
        `reports`: measurepoint → report rule (`report_specs`; none: all `always`);
        `resend`: the daemon's "send the next reading" signals; `orders`: each point's
        (byte, word) order for decoding (`codec.point_orders`; none: the point's own,
        else big-endian, the Modbus default); `capture`: the device's capture rules, if
        it has any; `unqualified`: index → measurepoint of the points without the quality
        field, when the caller has it already (shared by the devices of a model:
        `ModelLayout.unqualified`); `decoders`: the model's compiled decoders, shared by
        its devices (`SharedDecoders.of`; none: this device compiles its own)."""
        self._capture = capture
        self.device = device
        points = tuple(points)  # one tuple, shared by the mapper and the decoder
        if orders is None:
            orders = (
                decoders.orders
                if decoders is not None
                else [(p.byte_order or Order.BIG, p.word_order or Order.BIG) for p in points]
            )
        self.mapper = DeviceMapper(device, points, default_interval=default_interval)
        #: Raw responses → values, with a decoder compiled once per request layout.
        self.decoder = ResponseDecoder(points, orders, shared=decoders)
        self.events = EventEngine(compile_rules(rules), device=device)
        self._muting = muting
        self._stamp_per_request = stamp_per_request
        self.report = ReportFilter(reports or {})
        self._resend = resend if resend is not None else Resend()
        self._resend_seen = self._resend.generation
        # Points without the quality field send nothing when a read fails: their next
        # good reading must go whatever its value (the cloud cannot tell they were away).
        self._silent_on_failure: Mapping[int, str] = (
            unqualified
            if unqualified is not None
            else {i: p.measurepoint for i, p in enumerate(self.mapper.points) if not p.quality}
        )
        self.throughput = Throughput()

    @property
    def publishing(self) -> bool:
        """Whether this device's output goes to the spool (see `Muting`)."""
        return self._muting.publishing(self.device)

    def not_read(self, due: Iterable[int], now_ms: int) -> DeviceOutput:
        """Points due but not attempted (backoff, bus down): STALE where the last good
        value outlived its interval."""
        due = list(due)
        samples = self.mapper.stale(due, now_ms)
        if not self.publishing:
            return DeviceOutput([], [], [])
        return self._report(DeviceOutput(samples, [], []), due, now_ms)

    def read_responses(
        self, responses: Iterable[RawResponse], failed: Iterable[FailedRead]
    ) -> DeviceOutput:
        """One poll's good responses, raw, and failed points → samples, blocks and events.

        The responses are decoded here; points whose registers do not decode (a BCD digit
        over 9, say) are BAD like the points whose read failed.
        """
        decoded = Decoded([], [])
        decode_into = self.decoder.decode_into
        for response in responses:
            decode_into(response, decoded)
        if decoded.failed:
            failed = [*failed, *decoded.failed]
        return self.read(decoded.blocks, failed)

    def read(self, blocks: Sequence[GoodBlock], failed: Iterable[FailedRead]) -> DeviceOutput:
        """One poll's decoded blocks and failed points → samples, blocks and events.

        The mapping state (last good values, rule states) follows every read, muted or not,
        so a device unmuted later neither misses nor repeats a transition.
        """
        mapper = self.mapper
        samples: list[Sample] = []
        good_blocks: list[SampleBlock] = []
        # Good readings sharing a timestamp (all of the cycle's by default, a response's
        # with `timestamps: request`) come out in point order; responses already in point
        # order and finite become one SampleBlock each (no per-point work).
        by_ts: dict[int, list[GoodBlock]] = {}
        for block in blocks:
            by_ts.setdefault(block.ts_ms, []).append(block)
        for ts_ms, same_time in by_ts.items():
            if _in_point_order(same_time):
                for b in same_time:
                    if b.nonfinite:
                        samples.extend(
                            mapper.good_block(
                                b.indices, b.measurepoints, b.values, ts_ms, b.nonfinite
                            )
                        )
                    else:
                        good_blocks.append(
                            mapper.block(b.indices, b.measurepoints, b.values, ts_ms)
                        )
            else:
                values: dict[int, Value] = {}
                for block in same_time:
                    values.update(zip(block.indices, block.values, strict=True))
                samples.extend(mapper.good(values, ts_ms))
        failed_by_ts: dict[int, list[int]] = {}
        for reading in failed:
            failed_by_ts.setdefault(reading.ts_ms, []).append(reading.index)
        for ts_ms, indices in failed_by_ts.items():
            samples.extend(mapper.failed(indices, ts_ms))
        if samples and self._stamp_per_request:
            # Several stamps in one cycle (`timestamps: request`): the spool writes a cycle's
            # blocks before its point samples, which would put this device's records out of
            # time order. The rare mixed case goes point by point, in time order.
            expanded = [sample for block in good_blocks for sample in block.samples()]
            samples = sorted([*expanded, *samples], key=_sample_time)
            good_blocks = []
        events = self._fire(samples, good_blocks)
        if self._capture is not None:  # before the report filter: captures see every reading
            events = self._capture.take(samples, good_blocks, events, publishing=self.publishing)
        if not self.publishing:
            return DeviceOutput([], [], [])
        failed_indices = [i for indices in failed_by_ts.values() for i in indices]
        now_ms = max([*failed_by_ts, *by_ts], default=0)
        return self._report(DeviceOutput(samples, good_blocks, events), failed_indices, now_ms)

    def _report(self, output: DeviceOutput, missed: Sequence[int], now_ms: int) -> DeviceOutput:
        """The output that passes the report filter (events always pass); `missed`: the
        points not read this time, whose next good reading must be sent."""
        polled = len(output.samples) + sum(b.points for b in output.blocks)
        report = self.report
        if report.active:
            self._take_resend()
            keep = report.keep
            samples = [
                s for s in output.samples if keep(s.measurepoint, s.value, s.quality, s.ts_ms)
            ]
            blocks = [kept for b in output.blocks if (kept := self._filter_block(b)) is not None]
            silent = self._silent_on_failure
            report.forget(silent[i] for i in missed if i in silent)
            output = DeviceOutput(samples, blocks, output.events)
        sent = len(output.samples) + sum(b.points for b in output.blocks)
        if polled:
            self.throughput.add(now_ms, polled, sent)
        return output

    def _take_resend(self) -> None:
        resend = self._resend
        if resend.generation != self._resend_seen or resend.take(self.device):
            self._resend_seen = resend.generation
            self.report.forget_all()

    def _filter_block(self, block: SampleBlock) -> SampleBlock | None:
        """The block's readings that pass the filter: the block itself if all do."""
        ts_ms = block.ts_ms
        mask = self.report.keep_good(block.measurepoints, block.values, ts_ms)
        if all(mask):
            return block
        if not any(mask):
            return None
        return SampleBlock(
            block.device,
            [m for m, k in zip(block.measurepoints, mask, strict=True) if k],
            [v for v, k in zip(block.values, mask, strict=True) if k],
            ts_ms,
        )

    def _fire(self, samples: list[Sample], good_blocks: list[SampleBlock]) -> list[Event]:
        """Feed the cycle's good values to the event rules; the events that fire."""
        watched = self.events.points
        if not watched:  # no event rules: nothing to feed
            return []
        good_values: dict[str, Value] = {
            measurepoint: value
            for sample_block in good_blocks
            for measurepoint, value in zip(
                sample_block.measurepoints, sample_block.values, strict=True
            )
            if measurepoint in watched
        }
        good = Quality.GOOD
        good_samples = [s for s in samples if s.quality is good]
        good_values.update(
            (s.measurepoint, s.value) for s in good_samples if s.measurepoint in watched
        )
        if not good_values:
            return []
        # Events carry the time of the cycle's latest good reading.
        event_ts = max([b.ts_ms for b in good_blocks] + [s.ts_ms for s in good_samples])
        return self.events.update(good_values, event_ts)
