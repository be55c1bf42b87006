"""One asyncio task per bus: aligned poll cycles, dead-device isolation, priority operations.

`BusPoller.run()` owns one bus client. Each loop iteration it runs queued priority
operations (cloud commands), reconnects the bus if needed (jittered backoff up to the bus'
`reconnect_max`), sleeps until the next aligned tick of any device (`DeviceSchedule`), and
then runs one *cycle*: every device with points due at that tick is read through its
`DeviceReader`, and everything the cycle produced goes out as ONE `CycleResult` on the
bounded output queue (the spool writer commits it in one transaction). A full queue blocks
the poller: back-pressure rather than unbounded memory; missed ticks are skipped.

Isolation: a device whose request times out (after the bus' retries) gets no further
requests in that cycle, goes to BACKOFF (1 s → 5 min, jittered) and is retried at its first
tick after the backoff; the other devices keep their schedule. It logs one warning when it
goes down and one info line when it recovers.

The poller reads and judges the reads; each device's outcome (the raw words of its good
responses, its failed points) goes to the mapping stage (`mapping.stage.DeviceMapping`:
decoding and scaling, samples, quality, event rules, muting), whose output is what the
cycle carries. Quality of what is emitted per due point:
- read fine → `GOOD` with the value, stamped with the device's cycle time (when its first
  request went out; the response's wall time with `timestamps: request`, see the reader);
- read attempted and failed (timeout, exception, undecodable) → `BAD` carrying the last
  good value;
- not attempted (device in backoff, bus down) and its last good value is older than the
  point's interval → `STALE` carrying that value.
BAD/STALE samples are emitted only for points with `quality: true` (without the quality
field EnOS would take a repeated value for a fresh one) and only when the point has a last
good value: a point that never read emits nothing.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, TypeVar, cast

import structlog

from gatewayd.backoff import Backoff
from gatewayd.clock import Clock, SystemClock
from gatewayd.config.models import BusConfig, DeviceConfig, DeviceModel, SerialBus
from gatewayd.episodes import Episodes
from gatewayd.mapping.decoding import ResponseDecoder, SharedDecoders
from gatewayd.mapping.muting import Muting
from gatewayd.mapping.report import Resend
from gatewayd.mapping.stage import CaptureHook, DeviceMapping, report_specs
from gatewayd.modbus.backoff import DEVICE_BACKOFF, bus_backoff
from gatewayd.modbus.capacity import BusCapacity, bus_capacity
from gatewayd.modbus.errors import BusUnavailable, ModbusError
from gatewayd.modbus.health import DeviceHealth, DeviceState, DeviceStatus
from gatewayd.modbus.layout import Layouts
from gatewayd.modbus.probebudget import ProbeBudget
from gatewayd.modbus.reader import DeviceReader, ReadOutcome
from gatewayd.modbus.scheduler import TICK_TOLERANCE, DeviceSchedule
from gatewayd.modbus.timing import resolve_gap_fill
from gatewayd.samples import Event, Sample, SampleBlock, Value

if TYPE_CHECKING:
    from gatewayd.modbus.client import ModbusClient

log = structlog.get_logger()

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class CycleResult:
    """Everything one poll cycle of one bus produced: commit it in one transaction.

    Good responses come as `blocks` (one `SampleBlock` per response: no object per point,
    the poll hot path); `point_samples` holds what was made point by point (BAD and STALE
    samples, responses with NaN/±inf or out of point order). `samples` is all of it.
    """

    bus: str
    point_samples: list[Sample]
    events: list[Event]
    tick_ms: int  # the scheduled tick this cycle ran for, wall Unix ms (aligned)
    duration: float  # seconds the cycle took (monotonic)
    devices: tuple[str, ...]  # devices that had points due in this cycle
    requests: int  # requests put on the wire (retries included)
    failed_requests: int
    blocks: list[SampleBlock] = field(default_factory=list)

    @property
    def samples(self) -> list[Sample]:
        """Every sample of the cycle: the blocks' (expanded), then `point_samples`."""
        expanded = [sample for block in self.blocks for sample in block.samples()]
        return expanded + self.point_samples

    @property
    def points(self) -> int:
        """How many samples the cycle holds (without expanding the blocks)."""
        return len(self.point_samples) + sum(block.points for block in self.blocks)


class DeviceHandle:
    """What a priority operation may do with one device, on the bus task, between polls."""

    def __init__(
        self,
        reader: DeviceReader,
        client: ModbusClient,
        clock: Clock,
        decoder: ResponseDecoder | None = None,
    ) -> None:
        """`decoder`: the device's (its mapping stage's); by default one of its own."""
        self._reader = reader
        self._client = client
        self._clock = clock
        self._decoder = (
            decoder if decoder is not None else ResponseDecoder(reader.points, reader.orders)
        )

    @property
    def device(self) -> DeviceConfig:
        """The device's configuration."""
        return self._reader.device

    @property
    def model(self) -> DeviceModel:
        """The device's model."""
        return self._reader.model

    async def read_points(self, measurepoints: Sequence[str]) -> dict[str, Value]:
        """Read `measurepoints` now (merged into the fewest requests) and return their values.

        Raises `UnknownMeasurepoint`, or the read's failure (`DeviceTimeout`,
        `DeviceRejected`, `BusUnavailable`, `ModbusError` for an undecodable value).
        """
        indices = [self._reader.index_of(name) for name in measurepoints]
        responses = await self._reader.read_indices(self._client, indices, self._clock)
        decoded = self._decoder.decode(responses)
        if decoded.failed:
            first = decoded.failed[0]
            raise ModbusError(f"{self._reader.points[first.index].measurepoint}: {first.error}")
        values = {reading.index: reading.value for reading in decoded.good}
        return {self._reader.points[i].measurepoint: _value(values[i]) for i in indices}

    async def read_attributes(self) -> tuple[dict[str, Value], dict[str, str]]:
        """Read the model's register attributes now: (values, reason by attribute that failed).

        Each attribute stands alone: one that cannot be read costs only itself.
        """
        points = [a.as_point() for a in self.model.attributes]
        if not points:
            return {}, {}
        reader = DeviceReader(
            self._reader.bus,
            self.device,
            self.model.model_copy(update={"points": points}),
            gap_fill=resolve_gap_fill(self._reader.bus),
        )
        outcome = await reader.read(self._client, range(len(points)), self._clock, probe=False)
        decoded = ResponseDecoder(reader.points, reader.orders).decode(outcome.responses)
        values = {points[r.index].measurepoint: _value(r.value) for r in decoded.good}
        errors = {points[r.index].measurepoint: r.error for r in outcome.failed}
        errors.update(
            (points[r.index].measurepoint, r.error or "undecodable") for r in decoded.failed
        )
        for point in points:
            if point.measurepoint not in values and point.measurepoint not in errors:
                errors[point.measurepoint] = outcome.last_error or "not read"
        return values, errors

    async def write_point(self, measurepoint: str, value: Value) -> None:
        """Encode and write one point: FC5/FC6, or FC15/FC16 for multi-register values and
        devices with `write_multiple_only`; a bit inside a register is read-modify-write.

        Refuses points the model does not mark writable (`PointNotWritable`); range checks
        are the command layer's job. Raises `CodecError` or the write's Modbus failure.
        """
        await self._reader.write(self._client, measurepoint, value)


def _value(value: Value | None) -> Value:
    if value is None:  # good readings always hold a value
        raise AssertionError("a good reading without a value")
    return value


@dataclass(slots=True)
class _Device:
    """Everything the bus task keeps about one device."""

    reader: DeviceReader
    schedule: DeviceSchedule
    health: DeviceHealth
    mapping: DeviceMapping  # the mapping stage's part for this device
    polling: bool


@dataclass(slots=True)
class _Operation:
    device: _Device
    op: Callable[[DeviceHandle], Awaitable[object]]
    future: asyncio.Future[object]


class BusPoller:
    """Polls every device of one bus from one asyncio task (`run`)."""

    def __init__(
        self,
        bus: BusConfig,
        devices: Sequence[DeviceConfig],
        models: Mapping[str, DeviceModel],
        results: asyncio.Queue[CycleResult],
        *,
        client: ModbusClient | None = None,
        clock: Clock | None = None,
        heartbeat: Callable[[], None] | None = None,
        heartbeat_interval: float = 1.0,
        rng: random.Random | None = None,
        device_backoff: Backoff = DEVICE_BACKOFF,
        on_cycle: Callable[[], None] | None = None,
        muting: Muting | None = None,
        resend: Resend | None = None,
        captures: Callable[[str], CaptureHook | None] | None = None,
        layouts: Layouts | None = None,
        decoders: SharedDecoders | None = None,
    ) -> None:
        """Poll `devices` (those whose `bus` is this bus; others are ignored) on `bus`.

        `client` defaults to `make_client(bus)`. `heartbeat` is called at least every
        `heartbeat_interval` seconds while the loop is healthy (wire it to the watchdog);
        `on_cycle` after each poll cycle was handed over (a supervisor sees recoveries).
        `muting` is the daemon's table of muted devices (it outlives this poller);
        `resend` its "send the next reading" signals for the report filter; `captures`
        gives a device's capture rules (the daemon's `Captures.hook`); `layouts` the
        compiled model tables its devices share and `decoders` their compiled decoders
        (the daemon's, shared by every bus).
        """
        self.bus = bus
        self._results = results
        if client is None:
            # The pymodbus seam is imported only when a real client is needed.
            from gatewayd.modbus.client import make_client  # noqa: PLC0415

            client = make_client(bus)
        self._client = client
        self._clock = clock if clock is not None else SystemClock()
        self._heartbeat = heartbeat
        self._heartbeat_interval = heartbeat_interval
        self.on_cycle = on_cycle
        self._rng = rng if rng is not None else random.Random()
        self._muting = muting if muting is not None else Muting()
        self._resend = resend if resend is not None else Resend()
        self._device_backoff = device_backoff
        self._bus_backoff = bus_backoff(bus.reconnect_max)
        self._log = log.bind(bus=bus.name)
        self._ops: deque[_Operation] = deque()
        self._op_arrived = asyncio.Event()
        self._bus_episode = Episodes(self._log)  # one key: "bus"
        self._reconnect_at = -math.inf
        # Timeouts of devices that stopped answering may take only a small share of the bus.
        self._probe_budget = ProbeBudget(capacity=bus.timeout, now=self._clock.monotonic())
        self._bus_error: str | None = None
        self._capacity_logged = False
        # A serial port that cannot be opened is a "port" to the people reading status.
        self._unavailable = "port unavailable" if isinstance(bus, SerialBus) else "bus unavailable"

        own = [d for d in devices if d.bus == bus.name]
        layouts = layouts if layouts is not None else Layouts()
        decoders = decoders if decoders is not None else SharedDecoders()
        self.capacity: BusCapacity = bus_capacity(bus, own, models, layouts)
        gap_fill = resolve_gap_fill(bus)
        now = self._clock.monotonic()
        wall_offset = self._clock.time() - now
        self._devices: dict[str, _Device] = {}
        for config in own:
            model = models[config.model]
            layout = layouts.of(model, config, gap_fill=gap_fill)
            reader = DeviceReader(bus, config, model, gap_fill=gap_fill, layout=layout)
            self._devices[config.name] = _Device(
                reader=reader,
                schedule=DeviceSchedule(
                    [reader.interval_of(i) for i in range(len(reader.points))],
                    now=now,
                    wall_offset=wall_offset,
                ),
                health=DeviceHealth(config.name, bus.name, config.unit_id),
                mapping=DeviceMapping(
                    config.name,
                    layout.points,
                    model.events,
                    self._muting,
                    default_interval=config.poll_interval,
                    stamp_per_request=reader.stamp_per_request,
                    reports=report_specs(config, model),
                    resend=self._resend,
                    orders=layout.orders,
                    capture=captures(config.name) if captures is not None else None,
                    unqualified=layout.unqualified,
                    decoders=decoders.of(layout.points, layout.orders),
                ),
                polling=config.enabled,
            )
            if not config.enabled:
                self._devices[config.name].health.state = DeviceState.DISABLED

    # ------------------------------------------------------------------ public API

    @property
    def devices(self) -> tuple[str, ...]:
        """Names of the devices on this bus."""
        return tuple(self._devices)

    @property
    def bus_failures(self) -> int:
        """Failed connects (or lost connections) in a row; 0 while the bus is up."""
        return self._bus_episode.count("bus")

    def device_states(self) -> dict[str, DeviceStatus]:
        """A snapshot of every device's health, by device name."""
        now = self._clock.monotonic()
        return {
            name: d.health.snapshot(
                now,
                max_registers=d.reader.planner.max_registers,
                unreadable=d.reader.unreadable_measurepoints,
                publishing=d.mapping.publishing,
            )
            for name, d in self._devices.items()
        }

    def report_rates(self) -> dict[str, tuple[int, int]]:
        """Per device, the points polled and sent (past the report filter) in the last
        minute."""
        now_ms = round(self._clock.time() * 1000)
        return {
            name: d.mapping.throughput.per_minute(now_ms) for name, d in self._devices.items()
        }

    def mark_crashed(self, error: str) -> None:
        """The bus task died (`BusSupervisor` restarts it): its devices are DOWN meanwhile,
        with the reason, rather than frozen in their last state (or "starting")."""
        for entry in self._devices.values():
            if entry.polling:
                entry.health.state = DeviceState.DOWN
                entry.health.last_error = f"bus task crashed, restarting: {error}"

    def set_polling(self, device: str, enabled: bool) -> None:
        """Start or stop polling `device` (its schedule keeps ticking; nothing is read)."""
        entry = self._device(device)
        entry.polling = enabled
        if not enabled:
            entry.health.state = DeviceState.DISABLED
        elif entry.health.state is DeviceState.DISABLED:
            entry.health.state = DeviceState.STARTING

    def set_publishing(self, device: str, enabled: bool) -> None:
        """Keep (True) or drop (False) `device`'s samples and events from the CycleResults
        (a cloud disable/enable; the mapping stage's `Muting` decides).

        The device is still polled while polling is on, so its health and event state
        stay current; only the output is withheld.
        """
        self._device(device)  # unknown devices raise KeyError
        if enabled:
            self._muting.enable(device)
        else:
            self._muting.disable(device)

    async def execute(self, device: str, op: Callable[[DeviceHandle], Awaitable[T]]) -> T:
        """Run `op(handle)` on the bus task, ahead of any queued poll request; return its result.

        The operation runs between two poll requests (never interleaved with one), uses
        the device's timeout and retries, and should only do device I/O through the handle:
        the bus is blocked while it runs. Its exceptions propagate to the caller. Requires
        `run()` to be running. Raises `KeyError` for an unknown device.
        """
        entry = self._device(device)
        future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
        self._ops.append(_Operation(entry, op, future))
        self._op_arrived.set()
        # The future carries exactly what `op` returned, so it is a T.
        return cast(T, await future)

    async def run(self) -> None:
        """Poll until cancelled; the client is closed on the way out.

        May be called again after it raised (`BusSupervisor`): the devices keep their
        state and the bus reconnects.
        """
        if not self._capacity_logged:
            self.capacity.log_if_overloaded(self._log)
            self._capacity_logged = True
        try:
            while True:
                self._beat()
                await self._run_operations()
                now = self._clock.monotonic()
                if not self._client.connected and now >= self._reconnect_at:
                    await self._connect()
                    continue
                tick = self._next_tick()
                due = self._take_due(now)
                if due:
                    await self._cycle(due, now, tick)
                    continue
                await self._wait_until(self._next_wakeup(now))
        finally:
            await self._client.close()

    # ------------------------------------------------------------------ loop parts

    def _device(self, name: str) -> _Device:
        try:
            return self._devices[name]
        except KeyError:
            raise KeyError(f"no device {name!r} on bus {self.bus.name!r}") from None

    def _beat(self) -> None:
        if self._heartbeat is not None:
            self._heartbeat()

    def _next_wakeup(self, now: float) -> float:
        wake = now + self._heartbeat_interval
        for entry in self._devices.values():
            wake = min(wake, entry.schedule.next_due())
        if not self._client.connected:
            wake = min(wake, self._reconnect_at)
        return wake

    async def _wait_until(self, deadline: float) -> None:
        """Sleep until `deadline` (monotonic) or until a priority operation arrives."""
        if self._ops:
            return
        self._op_arrived.clear()
        sleeper = asyncio.ensure_future(self._clock.sleep(deadline - self._clock.monotonic()))
        waker = asyncio.ensure_future(self._op_arrived.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (sleeper, waker):
                task.cancel()
            # asyncio.wait never raises, so a cancellation of the bus task itself is not
            # swallowed here while the helpers wind down.
            await asyncio.wait({sleeper, waker})

    def _take_due(self, now: float) -> list[tuple[_Device, tuple[int, ...]]]:
        due: list[tuple[_Device, tuple[int, ...]]] = []
        for entry in self._devices.values():
            if entry.schedule.next_due() > now + TICK_TOLERANCE:
                continue
            points = entry.schedule.take_due(now)
            if entry.polling and points:
                due.append((entry, points))
        # Devices being retried after a failure go last, so a still-dead device's timeout
        # never delays the healthy ones in the same cycle (stable sort keeps config order).
        due.sort(key=lambda item: item[0].health.state is DeviceState.BACKOFF)
        return due

    async def _connect(self) -> None:
        try:
            await self._client.connect()
        except BusUnavailable as exc:
            self._bus_down(str(exc))
            return
        self._bus_up()

    def _bus_up(self) -> None:
        """The bus is connected again: the episode's one "recovered" line, counters reset."""
        self._bus_episode.end("bus", "bus recovered", count_as="after_failures")
        self._bus_error = None

    def _bus_down(self, error: str) -> None:
        delay = self._bus_backoff.delay(self.bus_failures + 1, self._rng)
        self._reconnect_at = self._clock.monotonic() + delay
        self._bus_episode.failed("bus", "bus unavailable; reconnecting with backoff", error=error)
        self._bus_error = error
        for entry in self._devices.values():
            if entry.polling:
                entry.health.state = DeviceState.DOWN
                entry.health.last_error = f"{self._unavailable}: {error}"

    async def _between_requests(self) -> None:
        # A long cycle (many devices, slow line) still beats the watchdog and lets
        # priority operations in before every request.
        self._beat()
        if self._ops:
            await self._run_operations()

    async def _run_operations(self) -> None:
        while self._ops:
            operation = self._ops.popleft()
            if operation.future.done():  # the caller gave up before we got to it
                continue
            device = operation.device
            handle = DeviceHandle(device.reader, self._client, self._clock, device.mapping.decoder)
            try:
                if not self._client.connected:
                    await self._client.connect()
                    # A command may bring the bus back: that ends the episode too, or the
                    # next outage would go unlogged (its failure count would not be 1).
                    self._bus_up()
                result = await operation.op(handle)
            except Exception as exc:
                if not operation.future.done():
                    operation.future.set_exception(exc)
            else:
                if not operation.future.done():
                    operation.future.set_result(result)

    def _next_tick(self) -> float:
        return min((d.schedule.next_due() for d in self._devices.values()), default=math.inf)

    async def _cycle(
        self, due: list[tuple[_Device, tuple[int, ...]]], now: float, tick: float
    ) -> None:
        # The tick in wall time as of now (robust to a wall-clock step since startup).
        tick_ms = round((self._clock.time() - (now - tick)) * 1000)
        samples: list[Sample] = []
        blocks: list[SampleBlock] = []
        events: list[Event] = []
        requests = failed_requests = 0
        for entry, points in due:
            health = entry.health
            backing_off = health.retry_at is not None and now < health.retry_at - TICK_TOLERANCE
            probing = health.consecutive_failures > 0
            if probing and not backing_off and self._has_healthy_device():
                # Due for a probe, but dead devices may not eat the healthy ones' bus time
                # beyond their share (see `ProbeBudget`).
                backing_off = not self._probe_budget.allows_probe(
                    entry.reader.timeout, self._clock.monotonic()
                )
            if backing_off or not self._client.connected:
                outcome = None
            else:
                started = self._clock.monotonic()
                outcome = await entry.reader.read(
                    self._client,
                    points,
                    self._clock,
                    before_request=self._between_requests,
                    # Probing a device that stopped answering: one attempt, one timeout.
                    retries=0 if probing else None,
                )
                if outcome.timed_out:
                    finished = self._clock.monotonic()
                    self._probe_budget.charge(finished - started, finished)
                requests += outcome.requests
                failed_requests += outcome.failed_requests
                if outcome.bus_lost:
                    # Close so `connected` is False and the loop reconnects with backoff,
                    # whatever state the transport was left in.
                    await self._client.close()
                    self._bus_down(outcome.last_error or "connection lost")
            if outcome is None:  # not attempted: the mapping stage says what went stale
                output = entry.mapping.not_read(points, round(self._clock.time() * 1000))
            else:
                self._update_health(entry, outcome, now)
                output = entry.mapping.read_responses(outcome.responses, outcome.failed)
            samples.extend(output.samples)
            blocks.extend(output.blocks)
            events.extend(output.events)
        await self._results.put(
            CycleResult(
                bus=self.bus.name,
                point_samples=samples,
                blocks=blocks,
                events=events,
                tick_ms=tick_ms,
                duration=self._clock.monotonic() - now,
                devices=tuple(entry.reader.device.name for entry, _ in due),
                requests=requests,
                failed_requests=failed_requests,
            )
        )
        if self.on_cycle is not None:
            self.on_cycle()

    def _has_healthy_device(self) -> bool:
        """Does any device of this bus answer? (Only then do probes need a budget.)"""
        return any(d.health.consecutive_failures == 0 for d in self._devices.values())

    def _device_log(self, entry: _Device) -> structlog.typing.FilteringBoundLogger:
        # Bound only when there is something to say: binding costs more than the rest of
        # a healthy device's bookkeeping.
        device = entry.reader.device
        return cast(
            "structlog.typing.FilteringBoundLogger",
            self._log.bind(device=device.name, unit_id=device.unit_id),
        )

    def _update_health(self, entry: _Device, outcome: ReadOutcome, now: float) -> None:
        health = entry.health
        if outcome.timed_out:
            health.consecutive_failures += 1
            health.last_error = outcome.last_error
            # Backoff counts from the failure, not from the cycle's start.
            health.retry_at = self._clock.monotonic() + self._device_backoff.delay(
                health.consecutive_failures, self._rng
            )
            if health.state is not DeviceState.BACKOFF:
                self._device_log(entry).warning(
                    "device not answering; retrying with backoff", error=outcome.last_error
                )
            health.state = DeviceState.BACKOFF
            return
        if outcome.bus_lost:
            return  # `_bus_down` marked every device
        if outcome.answered:
            if health.state is DeviceState.BACKOFF:
                self._device_log(entry).info(
                    "device recovered", after_failures=health.consecutive_failures
                )
            health.state = DeviceState.UP
            health.consecutive_failures = 0
            health.retry_at = None
            health.last_success_ms = round(self._clock.time() * 1000)
            if outcome.failed:
                health.last_error = outcome.last_error
        health.count_points(now, outcome.answered_count)
