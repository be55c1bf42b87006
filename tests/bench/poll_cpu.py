"""Poll CPU: 50 devices x 200 registers (100 float32 points) @ 1 s over Modbus TCP.

Run: `python -m tests.bench.poll_cpu [--cycles N] [--devices D]`. Prints figures, asserts
nothing. Three processes, so each CPU figure belongs to one job only:

- the device simulator (not measured), serving D units of a 100-float32 model;
- the baseline: a bare pymodbus loop doing the same block reads on the same 1 s grid (no
  planning, decoding, mapping, events or health);
- the gatewayd `BusPoller` (planner, reader, codec, mapper, event engine, CycleResults on a
  queue drained by a consumer, as the daemon's spool writer would);
- a diagnostic run of the same poller with `BlockDecoder.decode` answering constants, which
  attributes the poller's CPU between value decoding and everything else.

CPU is utime+stime of the measuring process (`resource.getrusage`) over N cycles after two
warm-up cycles, as a percentage of one core over the same wall time; RSS is VmRSS at the
end. The target is <= 3 % of a core for the poller.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from gatewayd.config.models import DeviceConfig, DeviceModel, TcpBus
from gatewayd.modbus.planner import plan_reads

POINTS = 100  # float32 points = 200 registers per device
INTERVAL = 1.0
WARMUP = 2
#: What the points measure, cycled: the simulator moves each one in a sine across its
#: range (voltage, current, kW, kvar, power factor, Hz, °C, W/m², line voltage, W), so a
#: response holds distinct values of different magnitudes and signs, as a meter's does.
#: (With one range for all, every point of a response had the same value, and how long
#: their spelling took depended on where in its period the sine was: run-to-run noise.)
RANGES = (
    (220.0, 240.0), (0.0, 120.0), (0.0, 80.0), (-20.0, 20.0), (0.8, 1.0),
    (49.8, 50.2), (-10.0, 60.0), (0.0, 1200.0), (380.0, 420.0), (0.0, 5000.0),
)  # fmt: skip


def bench_model() -> DeviceModel:
    """100 contiguous float32 holding-register points (200 registers)."""
    return DeviceModel.model_validate({
        "name": "bench",
        "points": [
            {"measurepoint": f"p{i}", "table": "holding", "address": 2 * i, "type": "float32",
             "min": RANGES[i % len(RANGES)][0], "max": RANGES[i % len(RANGES)][1]}
            for i in range(POINTS)
        ],
    })


def bench_bus(port: int) -> TcpBus:
    """The TCP bus to the simulator."""
    return TcpBus.model_validate(
        {"name": "bench", "type": "tcp", "host": "127.0.0.1", "port": port, "timeout": "1s"}
    )


def rss_kib() -> int:
    """Resident set size of this process in KiB (VmRSS)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def cpu_seconds() -> float:
    """utime + stime of this process so far."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def report(cpu: float, wall: float, cycles: int, requests: int) -> None:
    """Print one JSON line of figures for the orchestrator."""
    print(json.dumps({"cpu_s": cpu, "wall_s": wall, "cycles": cycles, "requests": requests,
                      "rss_kib": rss_kib()}), flush=True)  # fmt: skip


# ---------------------------------------------------------------------------- phases


async def serve(devices: int) -> None:
    """The simulator process: serve `devices` units, print the port, run until stdin closes."""
    from gatewayd.sim.device import DeviceSimulator

    model = bench_model()
    async with DeviceSimulator(dict.fromkeys(range(1, devices + 1), model)) as sim:
        print(sim.port, flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)


async def baseline(port: int, devices: int, cycles: int) -> None:
    """A bare pymodbus loop: the same block reads on the same aligned 1 s grid."""
    from pymodbus.client import AsyncModbusTcpClient

    blocks = [(r.start, r.count) for r in plan_reads(
        bench_model().points, max_registers=125, max_bits=2000, gap_fill=124)]  # fmt: skip
    client = AsyncModbusTcpClient("127.0.0.1", port=port, timeout=1, retries=0)
    await client.connect()
    requests = 0
    start_cpu = start_wall = 0.0
    for cycle in range(WARMUP + cycles):
        await asyncio.sleep(INTERVAL - time.time() % INTERVAL)
        if cycle == WARMUP:
            start_cpu, start_wall = cpu_seconds(), time.monotonic()
        for unit in range(1, devices + 1):
            for address, count in blocks:
                response = await client.read_holding_registers(
                    address, count=count, device_id=unit
                )
                assert not response.isError()
                requests += cycle >= WARMUP
    await asyncio.sleep(INTERVAL - time.time() % INTERVAL)  # the last cycle's idle time
    report(cpu_seconds() - start_cpu, time.monotonic() - start_wall, cycles, requests)
    client.close()


async def poller(port: int, devices: int, cycles: int, *, decode: bool = True) -> None:
    """gatewayd's BusPoller, its CycleResults drained by a consumer like the spool writer."""
    from gatewayd.mapping.blockdecode import BlockDecoder, BlockValues
    from gatewayd.modbus.poller import BusPoller, CycleResult

    if not decode:  # diagnostic only: how much of the poller's CPU is value decoding

        def constant(self: BlockDecoder, _words: object) -> BlockValues:
            return BlockValues([1.0] * len(self.points), (), ())

        setattr(BlockDecoder, "decode", constant)  # noqa: B010 - a diagnostic patch

    model = bench_model()
    configs = [
        DeviceConfig.model_validate({
            "name": f"dev{u}", "bus": "bench", "unit_id": u, "model": "bench",
            "product_key": "pk", "device_key": f"dev{u}", "poll_interval": "1s",
        })
        for u in range(1, devices + 1)
    ]  # fmt: skip
    results: asyncio.Queue[CycleResult] = asyncio.Queue(maxsize=16)
    bus_poller = BusPoller(bench_bus(port), configs, {"bench": model}, results)
    task = asyncio.create_task(bus_poller.run())
    samples = requests = 0
    start_cpu = start_wall = 0.0
    try:
        for cycle in range(WARMUP + cycles + 1):
            result = await asyncio.wait_for(results.get(), 30)
            if cycle == WARMUP:  # measure from the end of the warm-up cycles
                start_cpu, start_wall = cpu_seconds(), time.monotonic()
            elif cycle > WARMUP:
                samples += result.points
                requests += result.requests
        expected = cycles * devices * POINTS
        if samples != expected:
            print(f"warning: {samples} samples, expected {expected}", file=sys.stderr)
        report(cpu_seconds() - start_cpu, time.monotonic() - start_wall, cycles, requests)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


# ---------------------------------------------------------------------------- orchestration


def run_phase(phase: str, port: int, devices: int, cycles: int) -> dict[str, Any]:
    """Run one measured phase in a fresh interpreter and return its figures."""
    out = subprocess.run(
        [sys.executable, "-m", "tests.bench.poll_cpu", "--phase", phase, "--port", str(port),
         "--devices", str(devices), "--cycles", str(cycles)],
        check=True, capture_output=True, text=True,
    )  # fmt: skip
    figures: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return figures


def main() -> None:
    """Start the simulator, measure baseline and poller, print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=50)
    parser.add_argument("--cycles", type=int, default=20)
    parser.add_argument("--phase", choices=["serve", "baseline", "poller", "poller-nodecode"])
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    if args.phase == "serve":
        asyncio.run(serve(args.devices))
        return
    if args.phase == "baseline":
        asyncio.run(baseline(args.port, args.devices, args.cycles))
        return
    if args.phase in ("poller", "poller-nodecode"):
        decode = args.phase == "poller"
        asyncio.run(poller(args.port, args.devices, args.cycles, decode=decode))
        return

    sim = subprocess.Popen(
        [sys.executable, "-m", "tests.bench.poll_cpu", "--phase", "serve",
         "--devices", str(args.devices)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert sim.stdout is not None
        port = int(sim.stdout.readline())
        print(f"poll CPU: {args.devices} devices x {2 * POINTS} registers ({POINTS} float32) "
              f"@ {INTERVAL:g} s over Modbus TCP, {args.cycles} measured cycles "
              f"(simulator in its own process, not counted)")  # fmt: skip
        base = run_phase("baseline", port, args.devices, args.cycles)
        ours = run_phase("poller", port, args.devices, args.cycles)
        nodecode = run_phase("poller-nodecode", port, args.devices, args.cycles)
    finally:
        if sim.stdin is not None:
            sim.stdin.close()
        sim.wait(timeout=30)

    runs = (
        ("baseline (bare pymodbus reads)", base),
        ("gatewayd BusPoller", ours),
        ("  same, decode stubbed (diag.)", nodecode),
    )
    for name, figures in runs:
        pct = 100 * figures["cpu_s"] / figures["wall_s"]
        print(f"  {name:32s} {pct:6.2f} % of one core   {figures['requests']:5d} requests   "
              f"RSS {figures['rss_kib'] / 1024:6.1f} MiB")  # fmt: skip
    base_pct = base["cpu_s"] / base["wall_s"]
    ours_pct = ours["cpu_s"] / ours["wall_s"]
    decode_share = 1 - (nodecode["cpu_s"] / nodecode["wall_s"]) / ours_pct
    print(f"  ratio poller / baseline CPU: {ours_pct / base_pct:.2f}x "
          f"(value decoding is {decode_share:.0%} of the poller's CPU)")  # fmt: skip
    print(f"  target: <= 3 % of one core -> {'met' if 100 * ours_pct <= 3 else 'NOT met'}")


if __name__ == "__main__":
    main()
