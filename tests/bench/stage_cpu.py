"""Poll → mapping stage CPU, in process: the reader, the stage's decoding and mapping.

Run: `python -m tests.bench stage_cpu [--cycles N] [--runs R]`. Prints figures, asserts
nothing. 50 devices x 100 float32 points (200 registers: two requests each) on the fake
bus (`gatewayd.modbus.fake`) in virtual time, so no socket, simulator or other process
shares the figure: it is the CPU one poll cycle costs the poller and the mapping stage
(planning, reading, decoding, samples, CycleResults), per cycle, median of R runs.

Two cases in the same run: every register changing every cycle (the stage decodes every
response) and steady registers (the stage's decoder cache answers), and their ratio. Use
it to compare two trees (run it in each, interleaved): the machine's noise is smaller than
in the multi-process benchmarks.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import random
import statistics
import struct
import time

from gatewayd.clock import VirtualClock
from gatewayd.config.models import DeviceConfig, DeviceModel, Table, TcpBus
from gatewayd.modbus.fake import FakeBus, FakeUnit
from gatewayd.modbus.poller import BusPoller, CycleResult

DEVICES = 50
POINTS = 100
WARMUP = 2

MODEL = DeviceModel.model_validate({
    "name": "m",
    "points": [{"measurepoint": f"p{i}", "table": "holding", "address": 2 * i,
                "type": "float32"} for i in range(POINTS)],
})  # fmt: skip
BUS = TcpBus.model_validate(
    {"name": "b", "type": "tcp", "host": "127.0.0.1", "timeout": "1s", "retries": 0}
)
DEVICE_CONFIGS = [
    DeviceConfig.model_validate({"name": f"d{unit}", "bus": "b", "unit_id": unit, "model": "m",
                                 "product_key": "pk", "device_key": f"d{unit}",
                                 "poll_interval": "1s"})
    for unit in range(1, DEVICES + 1)
]  # fmt: skip


def register_image(cycle: int) -> dict[tuple[Table, int], int]:
    """The registers of cycle `cycle`: each point a distinct float32 near 230."""
    registers: dict[tuple[Table, int], int] = {}
    for i in range(POINTS):
        value = 230.0 + 0.37 * math.sin(cycle + i)
        high, low = struct.unpack(">HH", struct.pack(">f", value))
        registers[Table.HOLDING, 2 * i] = high
        registers[Table.HOLDING, 2 * i + 1] = low
    return registers


async def cpu_per_cycle(cycles: int, *, changing: bool) -> float:
    """CPU seconds one poll cycle of the 50 devices costs (after the warm-up)."""
    clock = VirtualClock(monotonic=1000.0, wall=1_700_000_000.0)
    fake = FakeBus(clock)
    for unit in range(1, DEVICES + 1):
        fake.units[unit] = FakeUnit(latency=0.0)
    results: asyncio.Queue[CycleResult] = asyncio.Queue(maxsize=100_000)
    poller = BusPoller(
        BUS, DEVICE_CONFIGS, {"m": MODEL}, results, client=fake, clock=clock,
        rng=random.Random(1),
    )  # fmt: skip
    images = [register_image(cycle) for cycle in range(WARMUP + cycles)]
    task = asyncio.create_task(poller.run())
    try:
        start = 0.0
        for cycle in range(WARMUP + cycles):
            if cycle == WARMUP:
                start = time.process_time()
            image = images[cycle if changing else 0]
            for unit in fake.units.values():
                unit.registers = image
            await clock.advance(1.0)
            while not results.empty():
                results.get_nowait()
        return (time.process_time() - start) / cycles
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def main() -> None:
    """Measure both cases and print them with their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cycles", type=int, default=60)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    figures = {}
    for changing in (True, False):
        runs = [asyncio.run(cpu_per_cycle(args.cycles, changing=changing))
                for _ in range(args.runs)]  # fmt: skip
        figures[changing] = statistics.median(runs)
    points = DEVICES * POINTS
    print(f"poll → stage CPU, {DEVICES} x {POINTS} float32 @ 1 s, fake bus, in process")
    for changing, label in ((True, "registers changing"), (False, "registers steady")):
        per_cycle = figures[changing]
        print(f"  {label:20} {per_cycle * 1000:6.2f} ms/cycle  "
              f"{per_cycle / points * 1e6:5.2f} µs/point  "
              f"{per_cycle * 100:5.2f} % of one core")  # fmt: skip
    print(f"  ratio changing / steady: {figures[True] / figures[False]:.2f}x "
          "(what decoding costs over the decoder cache)")


if __name__ == "__main__":
    main()
