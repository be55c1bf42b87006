"""Read limits against a rogue device over Modbus TCP: transient faults cost a cycle, not the
life of the process; real refusals are still learnt; retries of a lowered limit are rare."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
from structlog.testing import capture_logs

from gatewayd.clock import SystemClock
from gatewayd.config.models import DeviceConfig, DeviceModel, Order, Table
from gatewayd.mapping.decoding import PointReading, ResponseDecoder
from gatewayd.modbus.client import ModbusClient, make_client
from gatewayd.modbus.planner import LIMIT_RETRY_CYCLES
from gatewayd.modbus.reader import DeviceReader, ReadOutcome
from tests.integration.modbus_fixtures import tcp_bus
from tests.peers.rogue_modbus import (
    Answer,
    Fault,
    Policy,
    Request,
    RogueTcpDevice,
    refusal,
    register_value,
)

#: 10 holding registers (one short read) and 40 input registers (one long read): the
#: optimum is 2 requests a cycle, the long one after the device has answered the short one.
MODEL = DeviceModel.model_validate({
    "name": "two-tables",
    "points": [
        *({"measurepoint": f"h{a}", "table": "holding", "address": a, "type": "uint16"}
          for a in range(10)),
        *({"measurepoint": f"i{a}", "table": "input", "address": a, "type": "uint16"}
          for a in range(40)),
    ],
})  # fmt: skip
DEVICE = DeviceConfig.model_validate(
    {"name": "d", "bus": "tcp-test", "unit_id": 1, "model": "two-tables",
     "product_key": "pk", "device_key": "d"}
)  # fmt: skip
OPTIMUM = 2


class Faulty:
    """A policy: sound answers, except `fault` on request number `at` (0-based) and
    exception `refuse_code` to register reads longer than `refuse_over`."""

    def __init__(
        self, fault: Fault = Fault.GOOD, at: int = -1, refuse_over: int = 125, refuse_code: int = 3
    ) -> None:
        self.fault, self.at = fault, at
        self.refuse_over, self.refuse_code = refuse_over, refuse_code
        self.seen = 0

    def __call__(self, request: Request, answer: Answer) -> bytes | object:
        number, self.seen = self.seen, self.seen + 1
        if number == self.at:
            return self.fault.apply(answer)
        if request.function in (3, 4) and request.count > self.refuse_over:
            return refusal(answer, self.refuse_code)
        return answer.adu


@contextlib.asynccontextmanager
async def rogue_reader(
    policy: Policy,
) -> AsyncIterator[tuple[RogueTcpDevice, ModbusClient, DeviceReader]]:
    """A rogue device, a client to it, and a fresh reader; no retries (one fault is one
    failed request)."""
    async with RogueTcpDevice(policy) as device:
        bus = tcp_bus(device.port, timeout="0.5s", retries=0)
        client = make_client(bus)
        await client.connect()
        try:
            yield device, client, DeviceReader(bus, DEVICE, MODEL, gap_fill=0)
        finally:
            await client.close()


async def cycle(reader: DeviceReader, client: ModbusClient) -> ReadOutcome:
    """One poll cycle of every point, the way the poller runs it."""
    return await reader.read(client, tuple(range(len(MODEL.points))), SystemClock())


def good(outcome: ReadOutcome) -> list[PointReading]:
    """The outcome's good readings, decoded as the mapping stage decodes them."""
    decoder = ResponseDecoder(MODEL.points, [(Order.BIG, Order.BIG)] * len(MODEL.points))
    decoded = decoder.decode(outcome.responses)
    assert decoded.failed == []
    return decoded.good


def assert_all_exact(outcome: ReadOutcome) -> None:
    """Every point read GOOD with the register value the rogue device holds."""
    assert outcome.failed == []
    got = {MODEL.points[r.index].address + (100 if r.index >= 10 else 0): r.value
           for r in good(outcome)}  # fmt: skip
    assert got == {**{a: register_value(a) for a in range(10)},
                   **{100 + a: register_value(a) for a in range(40)}}  # fmt: skip


@pytest.mark.parametrize("fault", [Fault.SILENCE, Fault.ODD_COUNT, Fault.EXTRA_BYTES])
async def test_one_fault_on_a_long_read_keeps_the_read_limit(fault: Fault) -> None:
    """The long read of cycle 1 times out (or is unsound) after the short one was answered:
    from cycle 2 on every cycle is the optimum (2 requests), the limit still 125 (it used
    to drop to 39 for good: 3 requests a cycle for the life of the process). In cycle 1
    the long read's points fail and nothing of the faulty answer is stored."""
    async with rogue_reader(Faulty(fault, at=1)) as (_device, client, reader):
        first = await cycle(reader, client)
        later = [await cycle(reader, client) for _ in range(5)]
    assert [outcome.requests for outcome in later] == [OPTIMUM] * 5
    for outcome in later:
        assert_all_exact(outcome)
    assert reader.planner.max_registers == 125
    assert first.timed_out
    assert {MODEL.points[r.index].table for r in first.failed} == {Table.INPUT}
    assert {r.index for r in good(first)} == set(range(10))  # the short read only


async def test_a_device_that_refuses_long_reads_still_teaches_its_limit() -> None:
    """Exception 03 on reads over 16 registers: cycle 1 learns 16 exactly (no point lost);
    later cycles need the optimum at 16 (1 + ceil(40 / 16) = 4) with no refusal, until
    the re-try after LIMIT_RETRY_CYCLES healthy cycles costs one refused probe, once."""
    refused_in: list[int] = []
    async with rogue_reader(Faulty(refuse_over=16)) as (device, client, reader):
        first = await cycle(reader, client)
        assert_all_exact(first)
        assert reader.planner.max_registers == 16
        for number in range(2, LIMIT_RETRY_CYCLES + 4):
            before = len(device.requests)
            outcome = await cycle(reader, client)
            assert_all_exact(outcome)
            assert reader.planner.max_registers == 16
            refused = [r.count for r in device.requests[before:] if r.count > 16]
            if refused:
                refused_in.append(number)
                assert refused == [40]  # the plan's longest read at the configured 125
                assert outcome.requests == 4 + 1
            else:
                assert outcome.requests == 4
    assert refused_in == [LIMIT_RETRY_CYCLES + 1]


async def test_a_transient_refusal_costs_a_few_cycles() -> None:
    """Exception 04 (device busy) to reads over 39 registers in cycle 1 only: the limit
    search settles at 39, and one probe after LIMIT_RETRY_CYCLES healthy cycles brings
    back the optimum of 2 requests a cycle (before: 3 a cycle for good). The episode logs
    one warning and one line when the maximum is restored."""
    policy = Faulty(refuse_over=39, refuse_code=4)
    counts = []
    with capture_logs() as logs:
        async with rogue_reader(policy) as (_device, client, reader):
            first = await cycle(reader, client)
            assert_all_exact(first)  # re-planned shorter: no point lost
            assert reader.planner.max_registers == 39
            policy.refuse_over = 125  # the device is fine again
            for _ in range(LIMIT_RETRY_CYCLES + 3):
                outcome = await cycle(reader, client)
                assert_all_exact(outcome)
                counts.append(outcome.requests)
    # 3 requests a cycle at 39, one more for the re-try probe, then the optimum for good.
    assert counts == [3] * (LIMIT_RETRY_CYCLES - 1) + [3 + 1] + [OPTIMUM] * 3
    assert reader.planner.max_registers == 125
    assert [(e["log_level"], e["event"], e["max_registers"]) for e in logs] == [
        ("warning", "device refused a long read; lowering its maximum", 20),
        ("info", "device takes long reads again; maximum restored", 125),
    ]
