"""B4 RTU at the physical limit and B5 dead devices, through a timing-faithful line.

    python -m tests.bench b4_rtu [--full]

8 devices x 200 registers (100 float32) on one RS-485 line: gatewayd (`daemon_proc`, its
own process) ── socat pty ── `LineEmulator` (11 bits per char at the baud rate, 3.5-char
gap between frames, in this process) ── socat pty ── simulator (`sim_proc`, own process).

The wire bound of one cycle is what the line itself needs: for every request of the plan,
(request + response bytes) x 11 / baud + 2 frame gaps (the line emulator's model, no
device turnaround). Each cycle's duration is the daemon's own `CycleResult.duration`;
figures are medians over the measured cycles. B4 runs 9600, 19200, 38400 and 115200
baud: cycle ÷ bound, targets ≤ 1.03 up to 38400 and ≤ 1.07 at 115200. B5 repeats 19200
with units 7 and 8 silent (bus timeout 300 ms at 19200, 1 retry): the healthy devices' efficiency
(their bound ÷ cycle) must stay ≥ 0.9 of B4's at 19200 once the dead ones are isolated.
The floor (bare pymodbus RTU reads, same line, same plan) runs before gatewayd at each
rate (quick mode: 38400 and 115200 only), so the harness's own overhead is visible.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

from gatewayd.config.loader import load_config
from gatewayd.modbus.planner import plan_reads
from tests.bench.b1_fleet import Cloud, SimProcess, start_pipeline, wait_ready
from tests.bench.common import Report, median, write_site
from tests.bench.line_emulator import BITS_PER_CHAR, LineEmulator, frame_gap
from tests.integration.modbus_fixtures import SocatPair
from tests.support import free_port

DEVICES = 8
#: Poll interval per baud rate: longer than one cycle, so cycles never queue up.
INTERVALS = {9600: "5s", 19200: "3s", 38400: "2s", 115200: "1s"}


def wire_bound(baudrate: int, devices: int, requests: list[tuple[int, int]]) -> float:
    """Seconds the line needs for one cycle: `requests` = (request, response) bytes each."""
    char = BITS_PER_CHAR / baudrate
    per_device = sum((q + r) * char + 2 * frame_gap(baudrate) for q, r in requests)
    return devices * per_device


async def run_line(
    baudrate: int, cycles: int, silent: tuple[int, ...] = (), kind: str = "gatewayd"
) -> dict[str, Any]:
    """Poll 8 devices over an emulated line at `baudrate`; figures of `cycles` cycles."""
    with tempfile.TemporaryDirectory(prefix="gwrtu-") as tmp:
        workdir = Path(tmp)
        gateway_pair, device_pair = SocatPair(workdir / "gw"), SocatPair(workdir / "dev")
        line = LineEmulator(gateway_pair.b, device_pair.a, baudrate=baudrate)
        await line.start()
        sim: SimProcess | None = None
        try:
            # A commissioning engineer's timeout: the longest reply's wire time plus margin
            # (the client does not add wire time to it), at least 300 ms.
            timeout = max(0.3, 2.5 * (5 + 250) * BITS_PER_CHAR / baudrate)
            bus = {"name": "line", "type": "rtu", "device": gateway_pair.a,
                   "baudrate": baudrate, "timeout": f"{timeout * 1000:.0f}ms"}  # fmt: skip
            path = write_site(workdir, modbus_port=1, mqtt_port=free_port(), devices=DEVICES,
                              bus=bus, interval=INTERVALS[baudrate])  # fmt: skip
            config = load_config(path)
            sim = await asyncio.to_thread(SimProcess, path, "line", device_pair.b)
            for unit in silent:
                sim.command(f"fault {unit} silent true")
            cloud = Cloud(config)
            await cloud.start()
            stats_path = workdir / "stats.json"
            proc = start_pipeline(kind, path, stats_path)
            try:
                await wait_ready(proc, stats_path, 30)
                interval = config.devices[0].poll_interval
                # Warm-up cycles (hole/limit learning, dead-device isolation), then measure.
                await asyncio.sleep(interval * (cycles + 4) + 0.5)  # a measurement window
            finally:
                proc.send_signal(signal.SIGTERM)
                await asyncio.to_thread(proc.wait, 60)
                await cloud.stop()
            log = json.loads(stats_path.read_text())["cycles"]
        finally:
            if sim is not None:
                sim.close()
            await line.stop()
            gateway_pair.stop()
            device_pair.stop()
    model = config.models["bench"]
    plan = plan_reads(model.points, max_registers=125, max_bits=2000, gap_fill=0)
    frames = [(8, 5 + 2 * r.count) for r in plan]
    healthy = DEVICES - len(silent)
    measured = log[3 : 3 + cycles]
    durations = [c[1] for c in measured]
    bound = wire_bound(baudrate, healthy, frames)
    cycle = median(durations)
    return {
        "baudrate": baudrate,
        "silent": list(silent),
        "cycles": len(measured),
        "cycle_s": cycle,
        "cycle_max_s": max(durations) if durations else float("nan"),
        "wire_bound_s": bound,
        "ratio": cycle / bound,
        "efficiency": bound / cycle,
        "requests": [c[2] for c in measured],
        "good_samples": [c[4] for c in measured],
    }


async def bench(report: Report, quick: bool) -> None:
    """Run B4 (four baud rates) and B5 (19200 with two silent devices)."""
    cycles = 4 if quick else 12
    results: dict[int, dict[str, Any]] = {}
    floors: dict[int, dict[str, Any]] = {}
    for baudrate in (9600, 19200, 38400, 115200):
        started = time.monotonic()
        if not quick or baudrate >= 38400:
            floors[baudrate] = await run_line(baudrate, cycles, kind="floor")
        results[baudrate] = figures = await run_line(baudrate, cycles)
        limit = 1.03 if baudrate <= 38400 else 1.07
        floor = floors.get(baudrate)
        versus = (f"; floor (bare pymodbus, same line) {floor['ratio']:.3f}x"
                  if floor else "")  # fmt: skip
        report.add("B4", f"cycle ÷ wire bound @ {baudrate}", figures["ratio"], "x",
                   target=f"≤ {limit}", ok=figures["ratio"] <= limit,
                   note=f"cycle {figures['cycle_s'] * 1000:.0f} ms, bound "
                        f"{figures['wire_bound_s'] * 1000:.0f} ms, {figures['cycles']} cycles "
                        f"({time.monotonic() - started:.0f} s){versus}")  # fmt: skip
    dead = await run_line(19200, cycles, silent=(7, 8))
    keep = dead["efficiency"] / results[19200]["efficiency"]
    report.add("B5", "healthy efficiency ÷ B4 @ 19200 (2 of 8 silent)", keep, "",
               target="≥ 0.9", ok=keep >= 0.9,
               note=f"cycle {dead['cycle_s'] * 1000:.0f} ms for 6 healthy, bound "
                    f"{dead['wire_bound_s'] * 1000:.0f} ms")  # fmt: skip
    report.details["B4"] = {str(k): v for k, v in results.items()}
    report.details["B4_floor"] = {str(k): v for k, v in floors.items()}
    report.details["B5"] = dead


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true")
    args = parser.parse_args()
    report = Report("bench-b4", "full" if args.full else "quick")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(bench(report, quick=not args.full))
    report.write(None)


if __name__ == "__main__":
    main()
