"""The bus poller against the real device simulator over Modbus TCP and RTU on a socat pty pair."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import pytest

from gatewayd.config.models import BusConfig, DeviceConfig, DeviceModel, Table
from gatewayd.modbus.health import DeviceState
from gatewayd.modbus.poller import BusPoller, CycleResult, DeviceHandle
from gatewayd.samples import Quality, Sample
from gatewayd.sim.device import DeviceSimulator
from tests.integration.modbus_fixtures import rtu_over_tcp_bus, serial_bus, still_units, tcp_bus
from tests.support import async_wait_until, free_port


def device(
    name: str, unit_id: int, bus: str, model: str = "test-all-types", **extra: Any
) -> DeviceConfig:
    """A device config polled every 200 ms unless told otherwise."""
    doc: dict[str, Any] = {
        "name": name,
        "bus": bus,
        "unit_id": unit_id,
        "model": model,
        "product_key": "pk",
        "device_key": name,
        "poll_interval": "200ms",
    }
    doc.update(extra)
    return DeviceConfig.model_validate(doc)


@contextlib.asynccontextmanager
async def running(
    bus: BusConfig, devices: Sequence[DeviceConfig], models: dict[str, DeviceModel]
) -> AsyncIterator[tuple[BusPoller, asyncio.Queue[CycleResult]]]:
    """A real-clock poller with a real pymodbus client, cancelled on exit."""
    results: asyncio.Queue[CycleResult] = asyncio.Queue(maxsize=1000)
    poller = BusPoller(bus, devices, models, results)
    task = asyncio.create_task(poller.run())
    try:
        yield poller, results
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def take(
    results: asyncio.Queue[CycleResult], n: int, timeout: float = 10.0
) -> list[CycleResult]:
    """The next `n` CycleResults (fails the test if they do not come within `timeout`)."""
    return [await asyncio.wait_for(results.get(), timeout) for _ in range(n)]


def by_point(samples: list[Sample]) -> dict[tuple[str, str], Sample]:
    """Samples keyed by (device, measurepoint)."""
    return {(s.device, s.measurepoint): s for s in samples}


def assert_matches_simulator(
    sim: DeviceSimulator, unit: int, name: str, model: DeviceModel, samples: list[Sample]
) -> None:
    """Every point of `model` arrived GOOD with the simulator's value."""
    got = by_point(samples)
    for point in model.points:
        sample = got[name, point.measurepoint]
        assert sample.quality is Quality.GOOD, point.measurepoint
        expected = sim.get_value(unit, point.measurepoint)
        if isinstance(expected, float):
            assert sample.value == pytest.approx(expected, rel=1e-6), point.measurepoint
        else:
            assert sample.value == expected, point.measurepoint


async def test_values_and_timestamps_arrive_as_cycle_results(
    modbus_sim: DeviceSimulator, modbus_model: DeviceModel
) -> None:
    """Every point of two units arrives GOOD with the simulator's value and a response timestamp."""
    bus = tcp_bus(modbus_sim.port, timeout="1s")
    devices = [device("u1", 1, bus.name), device("u2", 2, bus.name)]
    modbus_sim.set_value(2, "f32", -12.5)
    before_ms = int(time.time() * 1000)
    async with running(bus, devices, {modbus_model.name: modbus_model}) as (poller, results):
        cycles = await take(results, 3)
        states = poller.device_states()
    # Rounded like the poller's timestamps: a truncated bound can sit 1 ms below a reading
    # taken within the last millisecond (seen once the cycle got fast enough).
    after_ms = round(time.time() * 1000)
    for cycle in cycles:
        assert cycle.bus == bus.name
        assert cycle.devices == ("u1", "u2")
        assert cycle.tick_ms % 200 == 0  # aligned to the 200 ms grid
        assert_matches_simulator(modbus_sim, 1, "u1", modbus_model, cycle.samples)
        assert_matches_simulator(modbus_sim, 2, "u2", modbus_model, cycle.samples)
        assert all(cycle.tick_ms <= s.ts_ms <= after_ms for s in cycle.samples)
    assert by_point(cycles[0].samples)["u2", "f32"].value == -12.5
    assert before_ms <= cycles[0].tick_ms
    assert [c.tick_ms for c in cycles] == sorted({c.tick_ms for c in cycles})
    assert states["u1"].state is DeviceState.UP
    assert states["u1"].last_success_ms is not None


async def test_silent_unit_costs_one_timeout_then_backs_off(
    modbus_sim: DeviceSimulator, modbus_model: DeviceModel
) -> None:
    """A silent unit gets ≤ 1 + retries requests per attempt and backs off; the other stays GOOD."""
    modbus_sim.faults(1).silent = True
    bus = tcp_bus(modbus_sim.port, timeout="150ms", retries=1)
    devices = [device("dead", 1, bus.name), device("live", 2, bus.name)]
    async with running(bus, devices, {modbus_model.name: modbus_model}) as (poller, results):
        cycles = await take(results, 12)
        states = poller.device_states()
    # The first attempt is one request + one retry (a lost frame is not an outage); each
    # probe of the unit after that is a single request: one timeout. The first is cycle 1.
    attempts = [c for c in cycles if c.failed_requests]
    assert attempts[0] is cycles[0]
    assert attempts[0].failed_requests == 2
    assert all(c.failed_requests == 1 for c in attempts[1:])
    assert sum(c.failed_requests for c in cycles) == modbus_sim.stats(1).total_requests
    # Backoff (1 s, then 2 s, each at most 20 % shorter) spaces the attempts' ticks.
    ticks = [c.tick_ms for c in attempts]
    assert len(attempts) < len(cycles)
    for n, (a, b) in enumerate(itertools.pairwise(ticks)):
        assert b - a >= 800 * 2**n
    for cycle in cycles:
        live = [s for s in cycle.samples if s.device == "live"]
        assert len(live) == len(modbus_model.points)
        assert all(s.quality is Quality.GOOD for s in live)
        assert not [s for s in cycle.samples if s.device == "dead"]  # never read: nothing
    assert states["dead"].state is DeviceState.BACKOFF
    assert states["dead"].consecutive_failures >= 1
    assert states["live"].state is DeviceState.UP
    # It recovers on its own once it answers again.
    modbus_sim.faults(1).silent = False
    async with running(bus, devices, {modbus_model.name: modbus_model}) as (poller, results):
        await take(results, 2)
        assert poller.device_states()["dead"].state is DeviceState.UP


HOLEY_DOC: dict[str, Any] = {
    "name": "holey",
    "points": [
        {
            "measurepoint": f"p{a}",
            "table": "holding",
            "address": a,
            "type": "uint16",
            "quality": True,
        }
        for a in (0, 1, 2, 5, 6, 9, 10, 11)
    ],
}


async def test_holes_are_discovered_once_and_never_requested_again() -> None:
    """Exception 02 holes (a gap register and a point) are found in cycle 1, never hit again."""
    model = DeviceModel.model_validate(HOLEY_DOC)
    async with DeviceSimulator(still_units(model, 1)) as sim:
        sim.faults(1).add_holes(Table.HOLDING, [3, 10])  # 3: a gap register, 10: point p10
        bus = tcp_bus(sim.port, timeout="1s", gap_fill=4)
        async with running(bus, [device("d", 1, bus.name, "holey")], {"holey": model}) as (
            poller,
            results,
        ):
            first = (await take(results, 1))[0]
            exceptions_after_first = sim.stats(1).exception_02
            requests_after_first = sim.stats(1).total_requests
            later = await take(results, 5)
            status = poller.device_states()["d"]
        assert exceptions_after_first >= 2
        assert sim.stats(1).exception_02 == exceptions_after_first  # never again
        readable = {f"p{a}" for a in (0, 1, 2, 5, 6, 9, 11)}
        assert {s.measurepoint for s in first.samples} == readable
        for cycle in later:
            assert {s.measurepoint for s in cycle.samples} == readable
            assert all(s.quality is Quality.GOOD for s in cycle.samples)
            assert cycle.failed_requests == 0
        # Steady state: [0..2], [5..9] (the fill may not cross hole 3 or hole 10), [11].
        per_cycle = (sim.stats(1).total_requests - requests_after_first) / len(later)
        assert per_cycle == 3
        assert status.unreadable == ("p10",)


async def test_device_capped_at_28_registers_gets_its_maximum_lowered() -> None:
    """A device refusing reads over 28 registers (exception 03): the maximum drops to ≤ 28."""
    doc = {
        "name": "wide",
        "points": [
            {"measurepoint": f"f{i}", "table": "input", "address": 2 * i, "type": "float32"}
            for i in range(50)
        ],
    }
    model = DeviceModel.model_validate(doc)
    async with DeviceSimulator(still_units(model, 1)) as sim:
        sim.faults(1).max_registers = 28
        bus = tcp_bus(sim.port, timeout="1s")
        async with running(bus, [device("d", 1, bus.name, "wide")], {"wide": model}) as (
            poller,
            results,
        ):
            first = (await take(results, 1))[0]
            refusals = sim.stats(1).exceptions[3]
            before = sim.stats(1).total_requests
            later = await take(results, 3)
            status = poller.device_states()["d"]
        assert refusals >= 1
        assert sim.stats(1).exceptions[3] == refusals  # no refusal after the first cycle
        assert status.max_registers <= 28
        assert len(first.samples) == 50
        for cycle in later:
            assert len(cycle.samples) == 50
            assert all(s.quality is Quality.GOOD for s in cycle.samples)
        per_cycle = (sim.stats(1).total_requests - before) / len(later)
        assert per_cycle == math.ceil(50 / (status.max_registers // 2))  # 2-register points


async def test_priority_write_round_trips_through_the_simulator(
    modbus_sim: DeviceSimulator, modbus_model: DeviceModel
) -> None:
    """execute() writes a coil and reads it back between polls."""
    bus = tcp_bus(modbus_sim.port, timeout="1s")
    async with running(bus, [device("u1", 1, bus.name)], {modbus_model.name: modbus_model}) as (
        poller,
        results,
    ):
        await take(results, 1)

        async def op(handle: DeviceHandle) -> object:
            await handle.write_point("relay", True)
            return (await handle.read_points(["relay", "u16"]))["relay"]

        assert await asyncio.wait_for(poller.execute("u1", op), 10) is True
    assert modbus_sim.get_value(1, "relay") is True


async def test_rtu_over_socat_pty_pair_happy_path(
    socat_pty_pair: tuple[str, str], modbus_model: DeviceModel
) -> None:
    """RTU on a real serial pty pair: two units polled, every value GOOD and correct."""
    gateway_end, device_end = socat_pty_pair
    async with DeviceSimulator(
        still_units(modbus_model, 1, 2), mode="rtu", serial_port=device_end, baudrate=115200
    ) as sim:
        bus = serial_bus(gateway_end, timeout="1s")
        devices = [
            device("r1", 1, bus.name, poll_interval="500ms"),
            device("r2", 2, bus.name, poll_interval="500ms"),
        ]
        async with running(bus, devices, {modbus_model.name: modbus_model}) as (_, results):
            cycles = await take(results, 2)
        for cycle in cycles:
            assert_matches_simulator(sim, 1, "r1", modbus_model, cycle.samples)
            assert_matches_simulator(sim, 2, "r2", modbus_model, cycle.samples)


async def test_rtu_over_tcp_happy_path(modbus_model: DeviceModel) -> None:
    """RTU framing over TCP (a serial device server): every value GOOD and correct."""
    async with DeviceSimulator(still_units(modbus_model, 5), mode="rtu_over_tcp") as sim:
        bus = rtu_over_tcp_bus(sim.port, timeout="1s")
        async with running(bus, [device("s5", 5, bus.name)], {modbus_model.name: modbus_model}) as (
            _,
            results,
        ):
            cycles = await take(results, 2)
        for cycle in cycles:
            assert_matches_simulator(sim, 5, "s5", modbus_model, cycle.samples)


async def test_bus_lost_and_back_reconnects_on_its_own(modbus_model: DeviceModel) -> None:
    """The endpoint goes away (DOWN, STALE) and comes back on the same port: polling resumes."""
    model = modbus_model.model_copy(
        update={"points": [p.model_copy(update={"quality": True}) for p in modbus_model.points]}
    )
    port = free_port()
    bus = tcp_bus(port, timeout="300ms", reconnect_max="1s")
    sim = DeviceSimulator(still_units(model, 1), port=port)
    await sim.start()
    async with running(bus, [device("u1", 1, bus.name)], {model.name: model}) as (
        poller,
        results,
    ):
        try:
            await take(results, 1)
            await sim.stop()
            await async_wait_until(
                lambda: poller.device_states()["u1"].state is DeviceState.DOWN, 10, "DOWN"
            )
            # While it is gone, cycles go on and the last values turn STALE.
            degraded = await take(results, 5)
            assert any(s.quality is Quality.STALE for r in degraded for s in r.samples)
            sim = DeviceSimulator(still_units(model, 1), port=port)
            await sim.start()
            for _ in range(50):  # cycles until a fully GOOD one arrives
                cycle = (await take(results, 1))[0]
                if cycle.samples and all(s.quality is Quality.GOOD for s in cycle.samples):
                    break
            else:
                raise AssertionError("polling did not resume after the endpoint came back")
            assert_matches_simulator(sim, 1, "u1", model, cycle.samples)
            assert poller.device_states()["u1"].state is DeviceState.UP
        finally:
            await sim.stop()
