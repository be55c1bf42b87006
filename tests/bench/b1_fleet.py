"""B1 fleet over TCP: 50 devices x 200 registers (100 float32) @ 1 s, gatewayd vs the floor.

    python -m tests.bench.b1_fleet [--quick|--full] [--json out.json]

Three kinds of process, so each CPU figure belongs to one job:

- the device simulator (`sim_proc`, its own process, counts requests per unit);
- this orchestrator, hosting the EnOS emulator (it receives, parses and records every
  payload: completeness and freshness are counted from what it accepted);
- the measured pipeline: the floor (`floor.py`) or gatewayd (`daemon_proc`, the very
  `Daemon` of `gatewayd run`), started fresh for each repeat, repeats interleaved
  floor, gatewayd, floor, gatewayd, ... and medians reported (quick mode: one pair of
  12 s windows; full mode: five pairs of 60 s).

A measured window starts and ends half-way between two ticks, so no poll cycle straddles
its edges; figures (per window): completeness = distinct (device, point, time) accepted
÷ good samples the pipeline committed for ticks in the window; requests/cycle ÷ planner
optimum (simulator's count); cycle p50/p99 (the pipeline's own cycle durations);
freshness p99 = accepted-at − sample time; CPU % of one core (utime+stime of the process
tree over the window), peak RSS and threads.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gatewayd.config.loader import load_config
from gatewayd.config.models import Config
from gatewayd.modbus.planner import plan_reads
from gatewayd.sim.emulator import EmulatorConfig, EnosEmulator
from tests.bench.common import (
    ProcessMeter,
    ProcessSample,
    Report,
    cpu_seconds,
    median,
    percentile,
    python_module,
    ratio_ok,
    write_site,
)
from tests.support import async_wait_until, free_port

Key = tuple[str, str, int]


#: The pymodbus device simulator (faults, holes, moving values) and the minimal responder
#: (fixed values, a fraction of the CPU per request: for throughput benchmarks).
SIMULATOR = "tests.bench.sim_proc"
FAST_RESPONDER = "tests.bench.fast_responder"


class SimProcess:
    """`sim_proc` (or `fast_responder`) for one bus of a config: start, command, stop."""

    def __init__(
        self,
        config_path: Path,
        bus: str,
        serial_port: str | None = None,
        module: str = SIMULATOR,
    ) -> None:
        args = [str(config_path), bus] + (["--serial-port", serial_port] if serial_port else [])
        self.proc = python_module(module, *args)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("PORT"):
            raise RuntimeError(f"simulator did not start: {line!r}")

    def command(self, line: str) -> dict[str, Any]:
        """Send one command, return its JSON reply."""
        assert self.proc.stdin is not None
        assert self.proc.stdout is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        reply: dict[str, Any] = json.loads(self.proc.stdout.readline())
        return reply

    def total_requests(self) -> int:
        return sum(self.command("stats")["requests"].values())

    def close(self) -> None:
        assert self.proc.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self.proc.stdin.write("quit\n")
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()


class Cloud:
    """The EnOS emulator of a site, hosted in this process, tracking message sizes."""

    def __init__(self, config: Config) -> None:
        self.emulator = EnosEmulator(
            EmulatorConfig.from_gateway_config(config), port=config.gateway.broker.port
        )
        # Benchmarks start pipelines again and again: EnOS' connect throttle (4 per 120 s)
        # would block them; what is measured here is the pipeline, not the throttle.
        self.emulator.throttle.enabled = False
        self.max_message = 0
        original = self.emulator.message_received

        def received(client_id: str, topic: str, payload: bytes) -> None:
            self.max_message = max(self.max_message, len(payload))
            original(client_id, topic, payload)

        self.emulator.message_received = received  # type: ignore[method-assign]

    async def start(self) -> None:
        await self.emulator.start()

    async def stop(self) -> None:
        await self.emulator.stop()


@dataclass
class Site:
    """A written config, its simulator process and its cloud."""

    workdir: Path
    config_path: Path
    config: Config
    sim: SimProcess
    cloud: Cloud
    optimum_per_cycle: int


@contextlib.asynccontextmanager
async def fleet_site(
    devices: int,
    points: int = 100,
    interval: str = "1s",
    device_side: str = SIMULATOR,
    **site_args: Any,
) -> AsyncIterator[Site]:
    """A TCP site of `devices` bench devices: device process (`device_side`) + emulator here."""
    with tempfile.TemporaryDirectory(prefix="gwbench-") as tmp:
        workdir = Path(tmp)
        path = write_site(workdir, modbus_port=free_port(), mqtt_port=free_port(),
                          devices=devices, points=points, interval=interval,
                          **site_args)  # fmt: skip
        config = load_config(path)
        model = config.models["bench"]
        optimum = len(plan_reads(model.points, max_registers=125, max_bits=2000, gap_fill=0))
        sim = await asyncio.to_thread(SimProcess, path, config.buses[0].name, None, device_side)
        cloud = Cloud(config)
        await cloud.start()
        try:
            yield Site(workdir, path, config, sim, cloud, optimum * devices)
        finally:
            await cloud.stop()
            sim.close()


@dataclass
class Phase:
    """Figures of one measured window of one pipeline."""

    kind: str
    cycles: int
    offered: int
    nominal: int
    delivered: int
    duplicates: int
    requests_per_cycle: float
    cycle_p50_ms: float
    cycle_p99_ms: float
    fresh_p99_ms: float
    process: ProcessSample
    ready_s: float
    first_accept_s: float
    max_message: int
    missed_deadlines: int
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def completeness(self) -> float:
        return self.delivered / self.offered if self.offered else float("nan")


async def wait_ready(proc: subprocess.Popen[Any], stats_path: Path, timeout: float) -> int:
    """Wait for the pipeline's `<stats>.ready` file; its content is the ready time (ms)."""
    ready = Path(f"{stats_path}.ready")

    def ready_or_dead() -> bool:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited {proc.returncode} before it was ready")
        return ready.exists() and bool(ready.read_text())

    await async_wait_until(ready_or_dead, timeout, f"{proc.args!r} ready")
    return int(ready.read_text())  # noqa: ASYNC240 - a few bytes, once


def start_pipeline(kind: str, config_path: Path, stats_path: Path) -> subprocess.Popen[Any]:
    """Start the floor or gatewayd (`daemon_proc`), output to a log file next to the stats."""
    Path(f"{stats_path}.ready").unlink(missing_ok=True)
    module = "tests.bench.floor" if kind == "floor" else "tests.bench.daemon_proc"
    with open(f"{stats_path}.log", "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", module, str(config_path), str(stats_path)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )


#: Seconds without a new value of the window after which its tail is taken as delivered.
SETTLED = 2.0


class _Arrivals:
    """A growing count, and how long it has not grown (for the end-of-window wait)."""

    def __init__(self, count: Callable[[], int]) -> None:
        self._count = count
        self._last = -1
        self._changed = time.monotonic()

    def count(self) -> int:
        value = self._count()
        if value != self._last:
            self._last, self._changed = value, time.monotonic()
        return value

    def quiet_for(self) -> float:
        self.count()
        return time.monotonic() - self._changed


async def _sleep_until(wall: float) -> None:
    await asyncio.sleep(max(0.0, wall - time.time()))  # a measurement window: timing


async def run_phase(site: Site, kind: str, seconds: float, warmup: float = 3.0) -> Phase:
    """Start one pipeline fresh, measure `seconds` after `warmup`, stop it, count."""
    with contextlib.suppress(FileNotFoundError):
        for suffix in ("", "-wal", "-shm"):
            (site.workdir / f"spool.db{suffix}").unlink()
    emulator = site.cloud.emulator
    emulator.records.clear()
    site.cloud.max_message = 0
    stats_path = site.workdir / f"{kind}-stats.json"
    stats_path.unlink(missing_ok=True)
    spawned = time.time()
    proc = start_pipeline(kind, site.config_path, stats_path)
    meter = ProcessMeter(proc.pid)
    device_meter = ProcessMeter(site.sim.proc.pid)  # the device side's own share of the CPU
    try:
        ready_ms = await wait_ready(proc, stats_path, 30)
        # Warm-up: whole cycles after the first accepted value.
        with contextlib.suppress(AssertionError):
            await async_wait_until(lambda: emulator.records.points, 30, "first accepted value")
        first_accept = (emulator.records.points[0].received_at / 1000 - spawned
                        if emulator.records.points else float("nan"))  # fmt: skip
        interval = site.config.devices[0].poll_interval
        start = (int((time.time() + warmup) / interval) + 0.5) * interval
        end = start + int(seconds / interval) * interval
        await _sleep_until(start)
        site.sim.command("reset")
        meter.start()
        device_meter.start()
        # This process hosts the cloud (broker, parsing, records): its CPU alone, no children.
        cloud_cpu0, cloud_wall0 = cpu_seconds(os.getpid()), time.monotonic()
        while time.time() < end:
            meter.poll()
            await asyncio.sleep(min(1.0, max(0.0, end - time.time())))
        sample = meter.stop()
        device_sample = device_meter.stop()
        cloud_cpu = 100 * (cpu_seconds(os.getpid()) - cloud_cpu0) / (time.monotonic() - cloud_wall0)
        requests = site.sim.total_requests()
        ticks = {round((start + interval * (i + 0.5)) * 1000)
                 for i in range(round((end - start) / interval))}  # fmt: skip
        step = int(interval * 1000)  # a sample's time is its read time, within its cycle
        nominal = len(ticks) * len(site.config.devices) * len(site.config.models["bench"].points)
        # Let the tail of the window reach the cloud, then stop the pipeline: every value
        # of the window is in, or none has arrived for `SETTLED` s (an overrunning pipeline
        # never reaches the nominal count; waiting the whole 15 s for it cost B2 30 s).
        arrived = _Arrivals(lambda: sum(
            1 for r in emulator.records.points if r.time - r.time % step in ticks))  # fmt: skip
        with contextlib.suppress(AssertionError):
            await async_wait_until(
                lambda: arrived.count() >= nominal or arrived.quiet_for() >= SETTLED,
                15,
                "the window's values in the cloud",
            )
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 30)
    stats = json.loads(stats_path.read_text()) if stats_path.exists() else {}
    log = stats.get("cycles", [])
    # Cycles that started in the window (an overrunning poller may start off the grid).
    in_window = [c for c in log if start * 1000 <= c[0] < end * 1000]
    # Offered: good samples whose read time falls in the window (what the cloud can check).
    offered = sum(n for s, n in stats.get("per_second", {}).items() if int(s) * 1000 in ticks)
    window = [r for r in emulator.records.points if r.time - r.time % step in ticks]
    keys = [(r.device_key, r.point, r.time) for r in window]
    fresh = [r.received_at - r.time for r in window]
    durations = [c[1] * 1000 for c in in_window]
    return Phase(
        kind=kind,
        cycles=len(in_window),
        offered=offered,
        nominal=nominal,
        delivered=len(set(keys)),
        duplicates=len(keys) - len(set(keys)),
        requests_per_cycle=requests / max(1, len(ticks)),
        cycle_p50_ms=percentile(durations, 50),
        cycle_p99_ms=percentile(durations, 99),
        fresh_p99_ms=percentile(fresh, 99),
        process=sample,
        ready_s=ready_ms / 1000 - spawned,
        first_accept_s=first_accept,
        max_message=site.cloud.max_message,
        missed_deadlines=sum(1 for d in durations if d > interval * 1000),
        extra={"device_cpu_percent": device_sample.cpu_percent, "cloud_cpu_percent": cloud_cpu},
    )


async def interleaved(site: Site, repeats: int, seconds: float) -> dict[str, list[Phase]]:
    """floor, gatewayd, floor, gatewayd, ... `repeats` times each."""
    phases: dict[str, list[Phase]] = {"floor": [], "gatewayd": []}
    for _ in range(repeats):
        for kind in ("floor", "gatewayd"):
            phase = await run_phase(site, kind, seconds)
            print(f"    {kind:8s} cpu {phase.process.cpu_percent:5.1f} %  rss "
                  f"{phase.process.rss_kib / 1024:5.1f} MiB  cycle p99 {phase.cycle_p99_ms:6.1f} ms"
                  f"  fresh p99 {phase.fresh_p99_ms:6.0f} ms  "
                  f"{phase.delivered}/{phase.offered} delivered", flush=True)  # fmt: skip
            phases[kind].append(phase)
    return phases


def phase_json(phase: Phase) -> dict[str, Any]:
    """A Phase as JSON-ready data."""
    data = {k: v for k, v in phase.__dict__.items() if k != "process"}
    data["cpu_percent"] = phase.process.cpu_percent
    data["rss_kib"] = phase.process.rss_kib
    data["threads"] = phase.process.threads
    return data


async def bench(report: Report, quick: bool) -> None:
    """Run B1 and add its rows to `report`."""
    devices = 50
    # Quick mode: one interleaved pair of 12 s windows (12 cycles each); full: 5 x 60 s.
    repeats, seconds = (1, 12.0) if quick else (5, 60.0)
    print(f"B1 fleet: {devices} devices x 200 registers @ 1 s, {repeats} interleaved repeats "
          f"of {seconds:g} s", flush=True)  # fmt: skip
    async with fleet_site(devices) as site:
        phases = await interleaved(site, repeats, seconds)
    ours, floor = phases["gatewayd"], phases["floor"]
    report.details["B1"] = {k: [phase_json(p) for p in v] for k, v in phases.items()}
    completeness = median(p.completeness for p in ours)
    report.add("B1", "completeness", 100 * completeness, "%", target="100 %",
               ok=completeness >= 1.0,
               note=f"dups {sum(p.duplicates for p in ours)}, nominal "
                    f"{median(p.nominal for p in ours):.0f}/window")  # fmt: skip
    req_ratio = median(p.requests_per_cycle for p in ours) / site.optimum_per_cycle
    report.add(
        "B1",
        "requests/cycle ÷ optimum",
        req_ratio,
        "",
        target="1.00",
        ok=abs(req_ratio - 1.0) < 0.005,
    )
    p50 = median(p.cycle_p50_ms for p in ours)
    p99 = median(p.cycle_p99_ms for p in ours)
    floor_p99 = median(p.cycle_p99_ms for p in floor)
    floor_p50 = median(p.cycle_p50_ms for p in floor)
    report.add("B1", "cycle p50", p50, "ms", note=f"floor {floor_p50:.1f} ms")
    report.add(
        "B1",
        "cycle p99",
        p99,
        "ms",
        target="≤ 100 ms",
        ok=ratio_ok(p99, 100),
        note=f"floor {floor_p99:.1f} ms, ratio {p99 / floor_p99:.2f}",
    )
    fresh = median(p.fresh_p99_ms for p in ours)
    report.add(
        "B1",
        "freshness p99 (poll→accept)",
        fresh,
        "ms",
        note=f"floor {median(p.fresh_p99_ms for p in floor):.0f} ms",
    )
    cpu = median(p.process.cpu_percent for p in ours)
    floor_cpu = median(p.process.cpu_percent for p in floor)
    report.add("B1", "CPU", cpu, "% core", note=f"floor {floor_cpu:.2f} % core")
    report.add(
        "B1",
        "CPU ÷ floor",
        cpu / floor_cpu,
        "x",
        target="≤ 1.5x",
        ok=ratio_ok(cpu / floor_cpu, 1.5),
    )
    rss = median(p.process.rss_kib for p in ours) / 1024
    report.add(
        "B1",
        "RSS",
        rss,
        "MiB",
        target="≤ 40 MiB",
        ok=ratio_ok(rss, 40),
        note=f"floor {median(p.process.rss_kib for p in floor) / 1024:.1f} MiB",
    )
    report.add(
        "B1",
        "threads",
        median(p.process.threads for p in ours),
        "",
        note=f"floor {median(p.process.threads for p in floor):.0f}",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true")
    mode.add_argument("--full", action="store_true")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    report = Report("bench-b1", "full" if args.full else "quick")
    asyncio.run(bench(report, quick=not args.full))
    report.write(args.json)


if __name__ == "__main__":
    main()
