"""Virtual-time unit tests of the bus poller: alignment, isolation, backoff, quality, ops."""

from __future__ import annotations

import asyncio
import itertools
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import pytest
from structlog.testing import capture_logs

from gatewayd.clock import VirtualClock
from gatewayd.config.models import (
    BusConfig,
    DeviceConfig,
    DeviceModel,
    PointConfig,
    Table,
    TcpBus,
)
from gatewayd.modbus.fake import FakeBus, FakeUnit
from gatewayd.modbus.health import DeviceState
from gatewayd.modbus.poller import BusPoller, CycleResult, DeviceHandle
from gatewayd.modbus.reader import PointNotWritable
from gatewayd.samples import Quality, Sample
from gatewayd.spool.frames import FrameEncoder

HR = Table.HOLDING
START = 1000.0  # virtual monotonic time at start
WALL = 1_700_000_000.0  # wall time at start: a multiple of every interval used here


def make_bus(**overrides: object) -> TcpBus:
    """A TCP bus config (the fake client stands in for the wire)."""
    fields: dict[str, object] = {"name": "bus1", "type": "tcp", "host": "127.0.0.1",
                                 "timeout": "200ms", "retries": 1, "gap_fill": 4}
    fields.update(overrides)
    return TcpBus.model_validate(fields)


def pt(name: str, address: int, type_: str = "uint16", **extra: object) -> PointConfig:
    """A holding-register point."""
    fields: dict[str, object] = {"measurepoint": name, "table": "holding", "address": address,
                                 "type": type_}
    fields.update(extra)
    return PointConfig.model_validate(fields)


def make_model(name: str, points: list[PointConfig], **extra: object) -> DeviceModel:
    """A device model."""
    return DeviceModel.model_validate({"name": name, "points": points, **extra})


def dev(name: str, unit_id: int, model_name: str = "m", **extra: object) -> DeviceConfig:
    """A device on bus1, polled every second unless told otherwise."""
    fields: dict[str, object] = {"name": name, "bus": "bus1", "unit_id": unit_id,
                                 "model": model_name, "product_key": "pk",
                                 "device_key": name, "poll_interval": "1s"}
    fields.update(extra)
    return DeviceConfig.model_validate(fields)


SIMPLE = make_model(
    "m", [pt("a", 0, quality=True), pt("b", 1, quality=True), pt("c", 10, quality=True)]
)


@dataclass
class Rig:
    """A running poller on a fake bus in virtual time."""

    clock: VirtualClock
    fake: FakeBus
    poller: BusPoller
    results: asyncio.Queue[CycleResult]

    def drain(self) -> list[CycleResult]:
        """Every CycleResult produced so far."""
        out = []
        while not self.results.empty():
            out.append(self.results.get_nowait())
        return out


@pytest.fixture
def rig_factory() -> Callable[..., AsyncIterator[Rig]]:
    """Build and run a poller; cancelled at the end of the `async with`."""
    import contextlib

    @contextlib.asynccontextmanager
    async def factory(
        devices: list[DeviceConfig],
        models: dict[str, DeviceModel] | None = None,
        units: dict[int, FakeUnit] | None = None,
        bus: BusConfig | None = None,
        heartbeat: Callable[[], None] | None = None,
    ) -> AsyncIterator[Rig]:
        clock = VirtualClock(monotonic=START, wall=WALL)
        fake = FakeBus(clock)
        fake.units.update(units or {})
        results: asyncio.Queue[CycleResult] = asyncio.Queue(maxsize=100_000)
        poller = BusPoller(
            bus or make_bus(), devices, models or {"m": SIMPLE}, results,
            client=fake, clock=clock, rng=random.Random(1), heartbeat=heartbeat,
        )
        task = asyncio.create_task(poller.run())
        try:
            yield Rig(clock, fake, poller, results)
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    return factory  # type: ignore[return-value]


def regs(*pairs: tuple[int, int]) -> dict[tuple[Table, int], int]:
    """Holding registers from (address, value) pairs."""
    return {(HR, a): v for a, v in pairs}


def by_point(samples: list[Sample]) -> dict[tuple[str, str], Sample]:
    """Samples keyed by (device, measurepoint)."""
    return {(s.device, s.measurepoint): s for s in samples}


async def test_cycles_align_to_the_interval_without_drift(rig_factory) -> None:
    """300 cycles at 1 s: one CycleResult per tick, started exactly on wall multiples."""
    unit = FakeUnit(registers=regs((0, 7), (1, 8), (10, 9)), latency=0.013)
    async with rig_factory([dev("d1", 1)], units={1: unit}) as rig:
        await rig.clock.advance(299.5)
        results = rig.drain()
    assert len(results) == 300
    assert [r.tick_ms for r in results] == [
        int(WALL * 1000) + 1000 * n for n in range(300)
    ]
    last = by_point(results[-1].samples)
    # One stamp per device and cycle (`timestamps: cycle`): when its first request went out.
    assert last["d1", "a"] == Sample("d1", "a", 7, int(WALL * 1000) + 299_000)
    assert last["d1", "c"] == Sample("d1", "c", 9, int(WALL * 1000) + 299_000)
    assert {s.measurepoint for s in results[-1].samples} == {"a", "b", "c"}
    # a and b merged into one request, c (gap 8 > gap_fill 4) in another: 2 per cycle.
    assert all(r.requests == 2 for r in results)


@pytest.mark.parametrize(
    ("where", "stamps"),
    [
        ("default", {"a": 0, "b": 0, "c": 0}),  # cycle: when the first request went out
        ("device", {"a": 13, "b": 13, "c": 26}),  # request: when each answer arrived
        ("model", {"a": 13, "b": 13, "c": 26}),
    ],
)
async def test_timestamps_one_per_cycle_or_one_per_request(
    rig_factory, where: str, stamps: dict[str, int]
) -> None:
    """`timestamps: request` (device or model key) stamps each answer (13 ms per request
    here); by default every point of a device's cycle carries the cycle's one stamp."""
    unit = FakeUnit(registers=regs((0, 7), (1, 8), (10, 9)), latency=0.013)
    model = make_model(
        "m",
        [pt("a", 0), pt("b", 1), pt("c", 10)],
        **({"timestamps": "request"} if where == "model" else {}),
    )
    device = dev("d1", 1, **({"timestamps": "request"} if where == "device" else {}))
    async with rig_factory([device], models={"m": model}, units={1: unit}) as rig:
        await rig.clock.advance(0.5)
        results = rig.drain()
    assert len(results) == 1
    assert results[0].requests == 2
    first = by_point(results[0].samples)
    assert {name: s.ts_ms - int(WALL * 1000) for (_, name), s in first.items()} == stamps


async def test_request_timestamps_keep_a_device_in_time_order_in_the_spool(rig_factory) -> None:
    """`timestamps: request` with a NaN in the middle response (that response goes point by
    point): the device's frames still come out in time order, one per response."""
    model = make_model(
        "m",
        [pt("a", 0), pt("f", 10, "float32", quality=True), pt("g", 12), pt("h", 30)],
        timestamps="request",
    )
    unit = FakeUnit(registers=regs((0, 1), (10, 0x7FC0), (11, 0), (12, 2), (30, 3)))
    async with rig_factory([dev("d1", 1)], models={"m": model}, units={1: unit}) as rig:
        await rig.clock.advance(0.5)
        results = rig.drain()
    assert results[0].requests == 3
    frames, _ = FrameEncoder().encode(results[0].point_samples, results[0].blocks)
    assert [(f.ts_ms - int(WALL * 1000), f.body) for f in frames] == [
        (10, '{"a":1}'),
        (20, '{"g":2}'),  # f is NaN and has no last good value: nothing to send for it
        (30, '{"h":3}'),
    ]


async def test_per_point_interval_reads_only_due_points_merged(rig_factory) -> None:
    """A 5 s point is read every fifth cycle, merged with the 1 s points in one request."""
    model = make_model("m", [pt("fast", 0), pt("slow", 1, poll_interval="5s"), pt("f2", 2)])
    unit = FakeUnit(registers=regs((0, 1), (1, 2), (2, 3)))
    async with rig_factory([dev("d1", 1)], models={"m": model}, units={1: unit}) as rig:
        await rig.clock.advance(9.5)
        results = rig.drain()
    seen = [sorted(s.measurepoint for s in r.samples) for r in results]
    assert seen == [["f2", "fast", "slow"]] + [["f2", "fast"]] * 4 + [["f2", "fast", "slow"]] + [
        ["f2", "fast"]
    ] * 4
    reads = rig.fake.reads_of(1)
    assert [(r.address, r.count) for r in reads[:2]] == [(0, 3), (0, 3)]
    # On a tick without the slow point: 0 and 2 are still one request (reads 1 as fill).
    assert len(reads) == 10


async def test_faster_point_than_device_is_read_at_its_own_rate(rig_factory) -> None:
    """A 1 s point on a 5 s device is read every second, the device's points every 5 s."""
    model = make_model("m", [pt("fast", 0, poll_interval="1s"), pt("slow", 50)])
    unit = FakeUnit(registers=regs((0, 1), (50, 2)))
    async with rig_factory(
        [dev("d1", 1, poll_interval="5s")], models={"m": model}, units={1: unit}
    ) as rig:
        await rig.clock.advance(9.5)
        results = rig.drain()
    counts = {"fast": 0, "slow": 0}
    for r in results:
        for s in r.samples:
            counts[s.measurepoint] += 1
    assert counts == {"fast": 10, "slow": 2}


async def test_dead_device_costs_at_most_one_timeout_and_others_keep_schedule(
    rig_factory,
) -> None:
    """A silent unit costs timeout x (1 + retries) once, then is skipped while in backoff."""
    units = {1: FakeUnit(silent=True), 2: FakeUnit(registers=regs((0, 5)), latency=0.01)}
    async with rig_factory([dev("dead", 1), dev("live", 2)], units=units) as rig:
        await rig.clock.advance(0.9)
        first = rig.drain()
        assert len(first) == 1
        # Two requests (first read + 1 retry), each 0.2 s, then none in this cycle.
        dead_reads = rig.fake.reads_of(1)
        assert len(dead_reads) == 2
        live_reads = rig.fake.reads_of(2)
        assert live_reads[0].t - START == pytest.approx(0.4)  # after one timeout + retry
        await rig.clock.advance(20)
        results = rig.drain()
    # The live device keeps its 1 s schedule: every tick, on time (dead one is skipped).
    live_times = [r.t - START for r in rig.fake.reads_of(2) if r.address == 0]
    assert live_times[1:] == pytest.approx([float(n) for n in range(1, 21)])
    assert all(by_point(r.samples)["live", "a"].quality is Quality.GOOD for r in results)


async def test_dead_devices_take_a_bounded_share_of_a_bus_with_live_ones(rig_factory) -> None:
    """Next to a live unit, two dead units' timeouts stay within 5 % of the bus + one timeout."""
    units = {
        1: FakeUnit(silent=True),
        2: FakeUnit(silent=True),
        3: FakeUnit(registers=regs((0, 5)), latency=0.01),
    }
    # A 1 s timeout: backoff alone (1, 2, 4, ... s) would let the two dead units probe
    # 2 x 7 times in 120 s, 14 s of timeouts (12 % of the bus).
    devices = [dev("dead1", 1, timeout="1s"), dev("dead2", 2, timeout="1s"), dev("live", 3)]
    async with rig_factory(devices, units=units) as rig:
        await rig.clock.advance(5.0)  # the first cycle: both dead units time out (+ retry)
        first_dead_reads = len(rig.fake.reads_of(1)) + len(rig.fake.reads_of(2))
        await rig.clock.advance(120.0)
        probes = len(rig.fake.reads_of(1)) + len(rig.fake.reads_of(2)) - first_dead_reads
        units[1].silent = False
        await rig.clock.advance(60.0)
        recovered = rig.poller.device_states()["dead1"]
    assert first_dead_reads == 4  # read + retry each; then the budget is spent
    # Probes are single 1 s reads: 5 % of 120 s + one timeout of credit = at most 7.
    assert 3 <= probes <= 7, probes
    assert recovered.state is DeviceState.UP  # still noticed within a minute (≤ 64 s backoff)


async def test_dead_device_backs_off_from_1s_to_5min_and_recovers(rig_factory) -> None:
    """Retries of a dead unit are spaced ~1, 2, 4, ... s up to 5 min; it recovers alone."""
    units = {1: FakeUnit(silent=True)}
    with capture_logs() as logs:
        async with rig_factory([dev("dead", 1)], units=units) as rig:
            await rig.clock.advance(3600)
            reads = [r.t for r in rig.fake.reads_of(1)]
            # The first attempt is a read + its retry; probes of the dead unit are one read.
            attempts = [reads[0], *reads[2:]]
            gaps = [b - a for a, b in itertools.pairwise(attempts)]
            assert rig.poller.device_states()["dead"].state is DeviceState.BACKOFF
            units[1].silent = False
            await rig.clock.advance(301)
            status = rig.poller.device_states()["dead"]
    # Each gap is the cost of the attempt (0.2-0.4 s) + the backoff (2^n s, jitter -20 %),
    # rounded up to the next 1 s tick.
    for n, gap in enumerate(gaps[:8]):
        assert 0.8 * 2**n <= gap <= 2**n + 1.4, (n, gaps)
    assert max(gaps) <= 300.0 + 1.4
    assert min(gaps[-3:]) >= 240.0
    assert status.state is DeviceState.UP
    assert status.consecutive_failures == 0
    warnings = [e for e in logs if e["log_level"] == "warning"]
    infos = [e for e in logs if e.get("event") == "device recovered"]
    assert len(warnings) == 1
    assert warnings[0]["device"] == "dead"
    assert warnings[0]["bus"] == "bus1"
    assert warnings[0]["unit_id"] == 1
    assert len(infos) == 1


async def test_failed_read_marks_bad_then_stale_and_nothing_without_a_value(rig_factory) -> None:
    """Timeout → BAD with the last good value, then STALE while skipped in backoff."""
    unit = FakeUnit(registers=regs((0, 11), (1, 12), (10, 13)))
    async with rig_factory([dev("d1", 1)], units={1: unit}) as rig:
        await rig.clock.advance(2.5)  # 3 good cycles
        good = rig.drain()
        assert len(good) == 3
        unit.silent = True
        await rig.clock.advance(1.0)  # tick 3: fails
        failed = rig.drain()
        await rig.clock.advance(1.0)  # tick 4: in backoff, skipped
        skipped = rig.drain()
    bad = by_point(failed[0].samples)
    assert {s.quality for s in bad.values()} == {Quality.BAD}
    assert bad["d1", "a"].value == 11
    assert bad["d1", "c"].value == 13
    stale = by_point(skipped[0].samples)
    assert {s.quality for s in stale.values()} == {Quality.STALE}
    assert stale["d1", "b"].value == 12


async def test_points_without_quality_field_go_silent_instead_of_bad(rig_factory) -> None:
    """Without `quality: true` a failed point emits nothing (a repeated value would lie)."""
    model = make_model("m", [pt("q", 0, quality=True), pt("plain", 1)])
    unit = FakeUnit(registers=regs((0, 1), (1, 2)))
    async with rig_factory([dev("d1", 1)], models={"m": model}, units={1: unit}) as rig:
        await rig.clock.advance(0.5)
        unit.silent = True
        await rig.clock.advance(1.0)
        results = rig.drain()
    assert sorted(s.measurepoint for s in results[0].samples) == ["plain", "q"]
    assert [(s.measurepoint, s.quality) for s in results[1].samples] == [("q", Quality.BAD)]


async def test_point_that_never_read_emits_nothing_when_failing(rig_factory) -> None:
    """A device dead from the start produces empty CycleResults, never invented values."""
    async with rig_factory([dev("d1", 1)], units={1: FakeUnit(silent=True)}) as rig:
        await rig.clock.advance(10)
        results = rig.drain()
    assert results
    assert all(r.samples == [] for r in results)


async def test_failed_request_marks_only_its_own_points_bad(rig_factory) -> None:
    """An exception answer to one request leaves the device's other request GOOD."""
    unit = FakeUnit(registers=regs((0, 1), (1, 2), (10, 3)))
    async with rig_factory([dev("d1", 1)], units={1: unit}) as rig:
        await rig.clock.advance(0.5)
        unit.max_registers = 1  # the 0+2 request now gets exception 03 ... and is shortened
        unit.holes.add((HR, 10))
        await rig.clock.advance(1.0)
        results = rig.drain()
    second = by_point(results[1].samples)
    assert second["d1", "a"].quality is Quality.GOOD  # re-planned shorter, still read
    assert second["d1", "c"].quality is Quality.BAD  # unreadable now; had a good value
    assert second["d1", "c"].value == 3


async def test_good_responses_come_as_blocks_and_failures_as_samples(rig_factory) -> None:
    """One SampleBlock per answered request; BAD samples stay point samples; `samples`
    and `points` count both."""
    unit = FakeUnit(registers=regs((0, 1), (1, 2), (10, 3)))
    async with rig_factory([dev("d1", 1)], units={1: unit}) as rig:
        await rig.clock.advance(0.5)
        unit.holes.add((HR, 10))
        await rig.clock.advance(1.0)
        first, second = rig.drain()
    assert [(b.device, tuple(b.measurepoints), list(b.values)) for b in first.blocks] == [
        ("d1", ("a", "b"), [1, 2]),
        ("d1", ("c",), [3]),
    ]
    assert first.point_samples == []
    assert first.samples == [s for b in first.blocks for s in b.samples()]
    assert [tuple(b.measurepoints) for b in second.blocks] == [("a", "b")]
    assert [(s.measurepoint, s.value, s.quality) for s in second.point_samples] == [
        ("c", 3, Quality.BAD)
    ]
    assert second.points == len(second.samples) == 3


async def test_one_cycle_result_per_tick_for_all_due_devices(rig_factory) -> None:
    """Three devices on the same interval share one CycleResult per tick."""
    units = {u: FakeUnit(registers=regs((0, u))) for u in (1, 2, 3)}
    devices = [dev(f"d{u}", u) for u in (1, 2, 3)]
    async with rig_factory(devices, units=units) as rig:
        await rig.clock.advance(4.5)
        results = rig.drain()
    assert len(results) == 5
    for r in results:
        assert r.bus == "bus1"
        assert r.devices == ("d1", "d2", "d3")
        assert {s.device for s in r.samples} == {"d1", "d2", "d3"}


async def test_priority_operation_jumps_the_poll_queue(rig_factory) -> None:
    """An op submitted mid-cycle runs after the request in flight, before the queued ones."""
    model = make_model("m", [pt(f"p{i}", i * 20) for i in range(5)] + [
        pt("sp", 200, writable=True)
    ])
    unit = FakeUnit(registers=regs(*[(i * 20, i) for i in range(5)], (200, 0)), latency=0.1)
    async with rig_factory([dev("d1", 1)], models={"m": model}, units={1: unit}) as rig:
        await rig.clock.advance(0.05)  # first request (p0) in flight

        async def op(handle: DeviceHandle) -> dict[str, object]:
            await handle.write_point("sp", 42)
            return dict(await handle.read_points(["sp", "p3"]))

        call = asyncio.create_task(rig.poller.execute("d1", op))
        await rig.clock.advance(1.0)
        assert await call == {"sp": 42, "p3": 3}
    kinds = [(r.kind, r.address) for r in rig.fake.requests]
    assert kinds[:5] == [("read", 0), ("write", 200), ("read", 60), ("read", 200), ("read", 20)]
    assert rig.fake.requests[1].multiple is False  # FC6 for a single register


async def test_write_point_encodings_and_guard(rig_factory) -> None:
    """float32 → FC16, bit → read-modify-write, write_multiple_only → FC16, read-only refused."""
    model = make_model("m", [
        pt("sp", 0, "float32", writable=True),
        pt("flag", 2, "bool", bit=3, writable=True),
        pt("word", 3, writable=True),
        pt("ro", 4),
    ])
    unit = FakeUnit(registers=regs((2, 0b1000_0001)))
    async with rig_factory(
        [dev("d1", 1, write_multiple_only=True)], models={"m": model}, units={1: unit}
    ) as rig:
        await rig.clock.advance(0.5)

        async def op(handle: DeviceHandle) -> None:
            await handle.write_point("sp", 1.0)
            await handle.write_point("flag", True)
            await handle.write_point("word", 7)
            with pytest.raises(PointNotWritable):
                await handle.write_point("ro", 1)

        call = asyncio.create_task(rig.poller.execute("d1", op))
        await rig.clock.advance(1.0)
        await call
    writes = [r for r in rig.fake.requests if r.kind == "write"]
    assert [(w.address, w.values, w.multiple) for w in writes] == [
        (0, (0x3F80, 0x0000), True),
        (2, (0b1000_1001,), True),
        (3, (7,), True),
    ]


async def test_priority_operation_errors_reach_the_caller(rig_factory) -> None:
    """A timeout inside an op is raised to `execute`'s caller; the poller keeps running."""
    from gatewayd.modbus.errors import DeviceTimeout

    async with rig_factory([dev("d1", 1)], units={1: FakeUnit(silent=True)}) as rig:

        async def op(handle: DeviceHandle) -> object:
            return await handle.read_points(["a"])

        call = asyncio.create_task(rig.poller.execute("d1", op))
        await rig.clock.advance(5)
        with pytest.raises(DeviceTimeout):
            await call
        assert rig.drain()  # still cycling


async def test_bus_unavailable_reconnects_with_capped_backoff(rig_factory) -> None:
    """Connection refused: attempts spaced by growing delays capped at reconnect_max."""
    async with rig_factory(
        [dev("d1", 1)], units={1: FakeUnit(registers=regs((0, 1)))},
        bus=make_bus(reconnect_max="8s"),
    ) as rig:
        rig.fake.refuse_connect = True
        await rig.clock.advance(120)
        attempts = rig.fake.connect_attempts
        gaps = [b - a for a, b in itertools.pairwise(attempts)]
        assert rig.poller.device_states()["d1"].state is DeviceState.DOWN
        rig.fake.refuse_connect = False
        await rig.clock.advance(10)
        assert rig.poller.device_states()["d1"].state is DeviceState.UP
    assert gaps[0] <= 0.5
    assert max(gaps) <= 8.0
    assert min(gaps[-5:]) >= 8.0 * 0.8


async def test_bus_brought_back_by_a_command_ends_the_episode(rig_factory) -> None:
    """A command connecting a down bus logs the one "recovered" line; the next outage
    warns again (one warning per episode, not one for the process's life)."""
    async with rig_factory(
        [dev("d1", 1)], units={1: FakeUnit(registers=regs((0, 1)))},
        bus=make_bus(reconnect_max="60s"),
    ) as rig:
        with capture_logs() as logs:
            rig.fake.refuse_connect = True
            await rig.clock.advance(5)  # down, next attempt far away (backoff grows)
            rig.fake.refuse_connect = False

            async def op(handle: DeviceHandle) -> object:
                return await handle.read_points(["a"])

            call = asyncio.create_task(rig.poller.execute("d1", op))
            await rig.clock.advance(0.1)
            assert await call == {"a": 1}
            rig.fake.drop()
            rig.fake.refuse_connect = True
            await rig.clock.advance(120)
    events = [(e["log_level"], e["event"]) for e in logs if e["event"].startswith("bus ")]
    assert events == [
        ("warning", "bus unavailable; reconnecting with backoff"),
        ("info", "bus recovered"),
        ("warning", "bus unavailable; reconnecting with backoff"),
    ]


async def test_disabled_device_switches(rig_factory) -> None:
    """set_polling(False) stops requests; set_publishing(False) drops output but keeps polling."""
    units = {1: FakeUnit(registers=regs((0, 1))), 2: FakeUnit(registers=regs((0, 2)))}
    async with rig_factory([dev("d1", 1), dev("d2", 2)], units=units) as rig:
        rig.poller.set_polling("d1", False)
        rig.poller.set_publishing("d2", False)
        await rig.clock.advance(3.5)
        results = rig.drain()
        states = rig.poller.device_states()
    assert rig.fake.reads_of(1) == []
    assert len(rig.fake.reads_of(2)) == 8  # 4 cycles x 2 requests
    assert all(r.samples == [] for r in results)
    assert states["d1"].state is DeviceState.DISABLED
    assert states["d2"].state is DeviceState.UP
    assert states["d2"].publishing is False


async def test_overloaded_bus_warns_once_at_startup(rig_factory) -> None:
    """60 registers x 8 devices at 1200 baud cannot be read every second: one warning."""
    from gatewayd.config.models import SerialBus

    slow = SerialBus.model_validate({"name": "bus1", "type": "rtu", "device": "/dev/null",
                                     "baudrate": 1200, "timeout": "200ms"})
    model = make_model("m", [pt(f"p{i}", i) for i in range(60)])
    with capture_logs() as logs:
        async with rig_factory(
            [dev(f"d{u}", u) for u in range(1, 9)], models={"m": model}, bus=slow,
            units={u: FakeUnit() for u in range(1, 9)},
        ) as rig:
            await rig.clock.advance(3)
            capacity = rig.poller.capacity
    assert capacity.overloaded
    assert capacity.requests == 8
    assert capacity.wire_time > capacity.shortest_period == 1.0
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert len(warnings) == 1
    assert warnings[0]["event"].startswith("bus cannot meet its poll period")
    assert warnings[0]["bus"] == "bus1"


async def test_heartbeat_runs_even_with_long_intervals(rig_factory) -> None:
    """A 5-minute device still beats the heartbeat at least once a second."""
    beats: list[float] = []
    clock_holder: list[VirtualClock] = []

    def beat() -> None:
        beats.append(clock_holder[0].monotonic() if clock_holder else START)

    async with rig_factory(
        [dev("d1", 1, poll_interval="5min")], units={1: FakeUnit()}, heartbeat=beat
    ) as rig:
        clock_holder.append(rig.clock)
        await rig.clock.advance(30)
    gaps = [b - a for a, b in itertools.pairwise(beats)]
    assert len(beats) >= 30
    assert max(gaps) <= 1.0 + 1e-9


async def test_events_fire_once_per_transition_in_the_cycle_result(rig_factory) -> None:
    """A threshold rule fires in the cycle its point crosses, once, with the device name."""
    model = make_model(
        "m", [pt("temp", 0)],
        events=[{"event": "hot", "rule": "threshold", "point": "temp", "above": 50}],
    )  # fmt: skip
    unit = FakeUnit(registers=regs((0, 20)))
    async with rig_factory([dev("d1", 1)], models={"m": model}, units={1: unit}) as rig:
        await rig.clock.advance(1.5)
        unit.registers[(HR, 0)] = 60
        await rig.clock.advance(3.0)
        results = rig.drain()
        status = rig.poller.device_states()["d1"]
    fired = [(n, e) for n, r in enumerate(results) for e in r.events]
    assert len(fired) == 1
    n, event = fired[0]
    assert n == 2
    assert event.device == "d1"
    assert event.event_id == "hot"
    assert event.ts_ms == results[2].samples[0].ts_ms
    assert status.points_per_second == pytest.approx(5 / 60)  # 5 good readings in the window
