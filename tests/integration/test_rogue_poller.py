"""The bus poller with a rogue unit behind a Modbus TCP gateway: its bad answers cost only
its own points, are never values, and log one warning per episode and one 'recovered'."""

from __future__ import annotations

import asyncio
import contextlib

from structlog.testing import capture_logs

from gatewayd.backoff import Backoff
from gatewayd.config.models import DeviceConfig, DeviceModel
from gatewayd.modbus.poller import BusPoller, CycleResult
from gatewayd.samples import Quality
from tests.integration.modbus_fixtures import tcp_bus
from tests.peers.rogue_modbus import Answer, Fault, Request, RogueTcpDevice, register_value

MODEL = DeviceModel.model_validate({
    "name": "five",
    "points": [
        {"measurepoint": f"p{a}", "table": "holding", "address": a, "type": "uint16",
         "quality": True}
        for a in range(5)
    ],
})  # fmt: skip
#: Bad answers unit 2 gives before it is sound again.
BAD_ANSWERS = 4


def device(name: str, unit_id: int) -> DeviceConfig:
    """A device of MODEL polled every 200 ms."""
    return DeviceConfig.model_validate({
        "name": name, "bus": "tcp-test", "unit_id": unit_id, "model": "five",
        "product_key": "pk", "device_key": name, "poll_interval": "200ms",
    })  # fmt: skip


class SpoilsUnit2:
    """Unit 1 always sound; unit 2 answers with a byte count that disagrees with its
    payload (pymodbus used to raise in `data_received`, which closed the shared
    connection) `BAD_ANSWERS` times, then soundly."""

    def __init__(self) -> None:
        self.spoilt = 0

    def __call__(self, request: Request, answer: Answer) -> object:
        if request.unit == 2 and self.spoilt < BAD_ANSWERS:
            self.spoilt += 1
            return Fault.COUNT_MISMATCH.apply(answer)
        return answer.adu


async def test_a_rogue_unit_costs_only_its_own_points() -> None:
    """Unit 1 reads GOOD with exact values in every cycle; unit 2 is BAD (never a wrong
    value) until it answers soundly, then GOOD; the connection is never dropped; unit 2
    logs one 'not answering' warning and one 'recovered' line, unit 1 nothing."""
    policy = SpoilsUnit2()
    results: asyncio.Queue[CycleResult] = asyncio.Queue()
    cycles: list[CycleResult] = []
    with capture_logs() as logs:
        async with RogueTcpDevice(policy) as rogue:
            bus = tcp_bus(rogue.port, timeout="0.3s", retries=0)
            poller = BusPoller(
                bus,
                [device("d1", 1), device("d2", 2)],
                {"five": MODEL},
                results,
                device_backoff=Backoff(initial=0.05, maximum=0.1),
            )
            task = asyncio.create_task(poller.run())
            try:
                async with asyncio.timeout(60):
                    while not any(
                        s.device == "d2" and s.quality is Quality.GOOD
                        for s in (cycles[-1].samples if cycles else [])
                    ) or len(cycles) < 3:
                        cycles.append(await results.get())
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            connections = rogue.connections
    assert policy.spoilt == BAD_ANSWERS
    assert connections == 1
    d1_cycles = 0
    for result in cycles:
        d1 = [s for s in result.samples if s.device == "d1"]
        if d1:
            d1_cycles += 1
            assert [(s.measurepoint, s.value, s.quality) for s in d1] == [
                (f"p{a}", register_value(a), Quality.GOOD) for a in range(5)
            ]
        for sample in result.samples:  # a GOOD value is always the device's own
            if sample.device == "d2" and sample.quality is Quality.GOOD:
                assert sample.value == register_value(int(sample.measurepoint[1:]))
    assert d1_cycles == len(cycles)
    warnings = [(e["event"], e.get("device")) for e in logs if e["log_level"] == "warning"]
    assert warnings == [("device not answering; retrying with backoff", "d2")]
    recovered = [e.get("device") for e in logs if e["event"] == "device recovered"]
    assert recovered == ["d2"]
    bad_answers = [e for e in logs if "bad answer" in str(e.get("error", ""))]
    assert len(bad_answers) == 1  # the warning names the cause
