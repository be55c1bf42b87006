"""Reading one device: plan the due points, send the requests, learn holes and limits.

`DeviceReader` is the I/O shell around the pure planner for one device. It owns what the
device taught us (unreadable registers, the largest read it accepts) and a cache of plans
per set of due points, so a steady schedule costs one comparison per cycle. It judges each
read (answered, refused, timed out, garbled) and hands the good answers on undecoded: one
`RawResponse` (request, words, timestamp) per answer, which the mapping stage decodes
(`gatewayd.mapping.decoding`). Writes encode here, with the same register codec. It is
used by the bus poller (every cycle), by priority operations (`DeviceHandle`) and by
`gatewayd read`. It never sleeps and never reads a clock except for timestamps.

Timestamps (`timestamps:` of the device, else of its model): with `cycle` (the default)
every reading of one poll carries one time, the instant its first request was sent, so a
device's cycle reaches EnOS as one record; with `request` each response carries the time
it arrived (several records a few ms apart when a cycle needs several requests).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple

import structlog

from gatewayd.clock import Clock
from gatewayd.config.models import (
    BusConfig,
    DeviceConfig,
    DeviceModel,
    Table,
    Timestamps,
)
from gatewayd.modbus import codec
from gatewayd.modbus.errors import (
    ILLEGAL_DATA_ADDRESS,
    BusUnavailable,
    DeviceProtocolError,
    DeviceRejected,
    DeviceTimeout,
    ModbusError,
)
from gatewayd.modbus.layout import ModelLayout
from gatewayd.modbus.planner import DeviceReadPlanner, ReadRequest
from gatewayd.modbus.points import Point
from gatewayd.samples import Value

if TYPE_CHECKING:  # the protocol only: importing the pymodbus seam is not needed here
    from gatewayd.modbus.client import ModbusClient

log = structlog.get_logger()

#: Bound on probe rounds per poll: each round verifies or rules out every open gap, so the
#: planner converges in a round or two, plus one round per step of a register-limit search
#: (log2 of the refused length); the bound only guards against a planner bug.
MAX_PROBE_ROUNDS = 12

#: Error text of a point whose registers the device refuses (exception 02).
UNREADABLE = "unreadable: the device answers illegal data address"


class UnknownMeasurepoint(KeyError):
    """A measurepoint the device's model does not have."""


class PointNotWritable(ValueError):
    """A write to a point the model does not mark writable (the last guard before the wire)."""


@dataclass(frozen=True, slots=True)
class FailedPoint:
    """A point whose read failed in one poll (timeout, exception, bus lost, unreadable)."""

    index: int  # position of the point in the model's `points`
    ts_ms: int  # the poll's time (`cycle`), or the failed attempt's, Unix ms
    error: str


class RawResponse(NamedTuple):
    """One good answer, as read: the request it answers, its words (or bits) and its time.

    Built per response on the poll hot path: a tuple is made in C. The mapping stage
    decodes it (`gatewayd.mapping.decoding`).
    """

    request: ReadRequest  # which points, which range: the stage's decoder cache key
    words: list[int]  # registers, or 0/1 per bit
    ts_ms: int  # the poll's time (`cycle`) or the response's (`request`), Unix ms


@dataclass(slots=True)
class ReadOutcome:
    """Everything one poll of one device produced."""

    responses: list[RawResponse] = field(default_factory=list)  # the good answers
    failed: list[FailedPoint] = field(default_factory=list)
    requests: int = 0  # requests put on the wire (retries included)
    failed_requests: int = 0
    #: The device stopped answering (a timeout after retries): the rest of the poll was skipped.
    timed_out: bool = False
    #: The bus went away during the poll (`BusUnavailable`).
    bus_lost: bool = False
    last_error: str | None = None
    answered: bool = False  # at least one request got an answer (data or exception)

    @property
    def answered_count(self) -> int:
        """How many points the device answered for (their values are decoded later)."""
        return sum(len(response.request.points) for response in self.responses)


class DeviceReader:
    """Plans and reads one device's points; remembers its holes and read limit."""

    def __init__(
        self,
        bus: BusConfig,
        device: DeviceConfig,
        model: DeviceModel,
        *,
        gap_fill: int,
        layout: ModelLayout | None = None,
    ) -> None:
        """`layout`: the model's tables shared with the other devices of the model
        (`Layouts.of`); without it the reader compiles its own."""
        self.bus = bus
        self.device = device
        self.model = model
        if layout is None:
            layout = ModelLayout.compile(model, device, gap_fill=gap_fill)
        self.layout = layout
        self.points: tuple[Point, ...] = layout.points
        self.timeout = device.timeout if device.timeout is not None else bus.timeout
        timestamps = device.timestamps if device.timestamps is not None else model.timestamps
        self.stamp_per_request = timestamps is Timestamps.REQUEST
        self.retries = bus.retries
        #: Each point's (byte, word) order: for writes here, for decoding in the mapping stage
        #: (the model's, shared by its devices: `ModelLayout.orders`).
        self.orders = layout.orders
        self._index_by_measurepoint = layout.index_by_measurepoint
        self.planner = DeviceReadPlanner(
            self.points,
            max_registers=min(device.max_registers or bus.max_registers, bus.max_registers),
            max_bits=bus.max_bits,
            gap_fill=gap_fill,
            plans=layout.plans,
        )
        # Unreadable points, recomputed only when the planner learns a new hole.
        self._holes_seen = self.planner.holes
        self._unreadable: frozenset[int] = frozenset()
        self._logged_rejections: set[tuple[Table, int, int, int]] = set()
        self._log = log.bind(bus=bus.name, device=device.name, unit_id=device.unit_id)

    # ------------------------------------------------------------------ lookup

    def index_of(self, measurepoint: str) -> int:
        """The index of `measurepoint` in the model, or `UnknownMeasurepoint`."""
        try:
            return self._index_by_measurepoint[measurepoint]
        except KeyError:
            raise UnknownMeasurepoint(
                f"device {self.device.name!r} has no measurepoint {measurepoint!r}"
            ) from None

    @property
    def unreadable_measurepoints(self) -> tuple[str, ...]:
        """Measurepoints found unreadable (exception 02 on their own registers)."""
        return tuple(self.points[i].measurepoint for i in sorted(self._unreadable))

    def interval_of(self, index: int) -> float:
        """Poll interval of point `index`: its own, else the device's."""
        own = self.points[index].poll_interval
        return own if own is not None else self.device.poll_interval

    # ------------------------------------------------------------------ reading

    async def read(
        self,
        client: ModbusClient,
        due: Sequence[int],
        clock: Clock,
        *,
        before_request: Callable[[], Awaitable[None]] | None = None,
        retries: int | None = None,
        probe: bool = True,
    ) -> ReadOutcome:
        """Read the points `due` (model indices) with the fewest requests the device allows.

        `retries` overrides the bus's retries for this poll (the poller probes a device
        that stopped answering with a single attempt, so a dead device costs one timeout).
        `probe=False` reads only what `due` needs: no discovery reads (gap and limit probes)
        after the plan, as a command's read must cost no more than its own requests.

        A timeout (after retries) or an unsound answer (`DeviceProtocolError`) ends the
        poll: the remaining points fail without being tried, so a dead device costs one
        timeout per poll. Neither lowers the device's read limit: only its refusals do.
        An exception 02 on a merged range is split and the unreadable registers are
        remembered; other exception responses fail only the points of that request.
        `before_request` runs before each request (the poller runs priority operations
        there).
        """
        outcome = ReadOutcome()
        stamps = _Stamps(clock, per_request=self.stamp_per_request)
        unreadable = [i for i in due if i in self._unreadable] if self._unreadable else []
        await self._read_planned(
            client,
            due,
            stamps,
            outcome,
            before_request=before_request,
            retries=retries,
            probe=probe,
        )
        if unreadable:  # known holes: failed without a request, stamped like the rest
            ts_ms = stamps.start_ms if self.stamp_per_request else stamps.now()
            outcome.failed[:0] = [
                FailedPoint(index, ts_ms, UNREADABLE) for index in unreadable
            ]
        return outcome

    async def _read_planned(
        self,
        client: ModbusClient,
        due: Sequence[int],
        stamps: _Stamps,
        outcome: ReadOutcome,
        *,
        before_request: Callable[[], Awaitable[None]] | None,
        retries: int | None,
        probe: bool,
    ) -> None:
        """The requests of one poll (plan, then probes) into `outcome`; see `read`."""
        pending = self.planner.plan(due)
        probe_rounds = 0 if probe else MAX_PROBE_ROUNDS
        while True:
            if not pending and probe_rounds < MAX_PROBE_ROUNDS:
                # Gaps a later plan may read through but no answer has covered yet: read
                # them now, so the device never answers exception 02 after this cycle.
                # After the first cycle this is a cached no-op.
                probe_rounds += 1
                pending = self.planner.probes()
            if not pending:
                break
            request = pending.pop(0)
            if before_request is not None:
                await before_request()
            stamps.sending()
            try:
                words = await self._read_with_retries(
                    client, request, outcome, self.retries if retries is None else retries
                )
            except DeviceTimeout as exc:  # DeviceProtocolError too: an unsound answer
                # No evidence of a read limit either way (a lost or garbled answer says
                # nothing about length): a limit probe's data is discarded anyway, and any
                # other request ends the poll like a dead device's.
                if self.planner.is_limit_probe(request):
                    continue
                outcome.timed_out = True
                what = "bad answer" if isinstance(exc, DeviceProtocolError) else "timeout"
                self._fail_all([request, *pending], outcome, stamps.now(), f"{what}: {exc}")
                return
            except BusUnavailable as exc:
                outcome.bus_lost = True
                self._fail_all(
                    [request, *pending], outcome, stamps.now(), f"bus unavailable: {exc}"
                )
                return
            except DeviceRejected as exc:
                pending[:0] = self._handle_rejection(request, exc, outcome, stamps, due)
                continue
            outcome.answered = True
            if request.points:
                self.planner.on_success(request)
                outcome.responses.append(RawResponse(request, words, stamps.now()))
            else:  # a probe (rare): it may restore a lowered limit
                self._probe_answered(request)
        if probe:  # a poll cycle (not a command's read): lowered limits count healthy cycles
            self.planner.end_cycle(healthy=outcome.answered)

    def _handle_rejection(
        self,
        request: ReadRequest,
        exc: DeviceRejected,
        outcome: ReadOutcome,
        stamps: _Stamps,
        due: Sequence[int],
    ) -> list[ReadRequest]:
        """React to an exception response; returns the requests to read next.

        Points found unreadable fail in this outcome only if they are `due`: a probe may
        reach points this read did not ask for (they fail when next due, from
        `_unreadable`), and a command reading two points must not fail on a third.
        """
        outcome.answered = True
        limits = (self.planner.max_registers, self.planner.max_bits)
        retry = self.planner.on_rejected(request, exc.code)
        if limits != (self.planner.max_registers, self.planner.max_bits):
            self._log_lowered_limit(request)
        newly_unreadable = self._learn_holes()
        if retry or exc.code == ILLEGAL_DATA_ADDRESS or self.planner.is_limit_probe(request):
            # Split (or shortened): the parts are read right away; points found
            # unreadable fail now and are left out of every later plan.
            asked = set(due)
            for index in newly_unreadable:
                if index in asked:
                    outcome.failed.append(FailedPoint(index, stamps.now(), UNREADABLE))
            return retry
        outcome.failed_requests += 1
        self._log_rejection_once(request, exc.code)
        self._fail_all(
            [request], outcome, stamps.now(), f"exception {exc.code} reading {_describe(request)}"
        )
        return []

    def _learn_holes(self) -> list[int]:
        """Points that became unreadable since the last call (each logged once)."""
        if self.planner.holes == self._holes_seen:
            return []
        self._holes_seen = self.planner.holes
        unreadable = frozenset(self.planner.unreadable)
        new = sorted(unreadable - self._unreadable)
        self._unreadable = unreadable
        for index in new:
            point = self.points[index]
            self._log.warning(
                "point unreadable: device answers illegal data address; no longer polled",
                measurepoint=point.measurepoint,
                table=str(point.table),
                address=point.address,
            )
        return new

    def _probe_answered(self, request: ReadRequest) -> None:
        """Report an answered probe; log the one line closing a lowered-limit episode."""
        planner = self.planner
        before = (planner.max_registers, planner.max_bits)
        planner.on_success(request)
        after = (planner.max_registers, planner.max_bits)
        if after != before and after == planner.configured_limits:
            self._log.info(
                "device takes long reads again; maximum restored",
                request=_describe(request),
                max_registers=after[0],
                max_bits=after[1],
            )

    def _log_lowered_limit(self, request: ReadRequest) -> None:
        self._log.warning(
            "device refused a long read; lowering its maximum",
            request=_describe(request),
            max_registers=self.planner.max_registers,
            max_bits=self.planner.max_bits,
        )

    async def _read_with_retries(
        self, client: ModbusClient, request: ReadRequest, outcome: ReadOutcome, retries: int
    ) -> list[int]:
        for attempt in range(retries + 1):
            outcome.requests += 1
            try:
                return await client.read(
                    self.device.unit_id,
                    request.table,
                    request.start,
                    request.count,
                    timeout=self.timeout,
                )
            except DeviceTimeout as exc:
                outcome.failed_requests += 1
                what = "bad answer" if isinstance(exc, DeviceProtocolError) else "no answer"
                outcome.last_error = f"{what} to {_describe(request)}: {exc}"
                if attempt == retries:
                    raise
        raise AssertionError("unreachable: the loop returns or raises")

    def _fail_all(
        self, requests: Sequence[ReadRequest], outcome: ReadOutcome, ts_ms: int, error: str
    ) -> None:
        for request in requests:
            for index in request.points:
                outcome.failed.append(FailedPoint(index, ts_ms, error))
        outcome.last_error = error

    def _log_rejection_once(self, request: ReadRequest, code: int) -> None:
        key = (request.table, request.start, request.count, code)
        if key not in self._logged_rejections:
            self._logged_rejections.add(key)
            self._log.warning("device rejected read", request=_describe(request), code=code)

    # ------------------------------------------------------------------ handle helpers

    async def read_indices(
        self, client: ModbusClient, indices: Sequence[int], clock: Clock
    ) -> list[RawResponse]:
        """Read the given points now: their responses, or the first failure raised.

        No discovery probes: a command's read costs only its own requests. The caller
        decodes the responses (`gatewayd.mapping.decoding.ResponseDecoder`).
        """
        outcome = await self.read(client, sorted(set(indices)), clock, probe=False)
        if outcome.failed:
            first = outcome.failed[0]
            if outcome.timed_out:
                raise DeviceTimeout(first.error)
            if outcome.bus_lost:
                raise BusUnavailable(first.error)
            raise ModbusError(f"{self.points[first.index].measurepoint}: {first.error}")
        return outcome.responses

    async def write(self, client: ModbusClient, measurepoint: str, value: Value) -> None:
        """Encode and write one point (read-modify-write for a bit inside a register)."""
        index = self.index_of(measurepoint)
        point = self.points[index]
        if not point.writable or point.table in (Table.DISCRETE, Table.INPUT):
            raise PointNotWritable(f"{self.device.name}.{measurepoint} is not writable")
        byte_order, word_order = self.orders[index]
        current: int | None = None
        if point.table is Table.HOLDING and point.bit is not None:
            (current,) = await self._retrying(
                lambda: client.read(
                    self.device.unit_id, Table.HOLDING, point.address, 1, timeout=self.timeout
                )
            )
        words = codec.encode(
            point, value, byte_order=byte_order, word_order=word_order, current=current
        )
        multiple = self.device.write_multiple_only or len(words) > 1
        await self._retrying(
            lambda: _write(
                client,
                unit=self.device.unit_id,
                point=point,
                words=words,
                timeout=self.timeout,
                multiple=multiple,
            )
        )

    async def _retrying(self, call: Callable[[], Awaitable[list[int]]]) -> list[int]:
        for attempt in range(self.retries + 1):
            try:
                return await call()
            except DeviceTimeout:
                if attempt == self.retries:
                    raise
        raise AssertionError("unreachable: the loop returns or raises")


async def _write(
    client: ModbusClient,
    *,
    unit: int,
    point: Point,
    words: list[int],
    timeout: float,
    multiple: bool,
) -> list[int]:
    await client.write(unit, point.table, point.address, words, timeout=timeout, multiple=multiple)
    return words


def _describe(request: ReadRequest) -> str:
    return f"{request.table} {request.start}+{request.count}"


def _now_ms(clock: Clock) -> int:
    return round(clock.time() * 1000)


class _Stamps:
    """The timestamps of one poll: one for the whole poll, or the clock's at each call."""

    __slots__ = ("_clock", "_per_request", "cycle_ms", "start_ms")

    def __init__(self, clock: Clock, *, per_request: bool) -> None:
        self._clock = clock
        self._per_request = per_request
        self.start_ms = _now_ms(clock)
        self.cycle_ms: int | None = None  # when the poll's first request was sent

    def sending(self) -> None:
        """A request is about to go on the wire: the first one fixes the poll's time."""
        if self.cycle_ms is None:
            self.cycle_ms = _now_ms(self._clock)

    def now(self) -> int:
        """The stamp for what just happened: the poll's time, or the clock's (`request`)."""
        if self._per_request or self.cycle_ms is None:
            return _now_ms(self._clock)
        return self.cycle_ms
