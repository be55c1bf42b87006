"""Shared plumbing of the benchmark suite: /proc figures, statistics, sites, tables and JSON.

Everything the suite reports is measured from outside the measured process, through /proc:

- `tree_cpu_seconds(pid)`: utime + stime of a process and all its descendants (every
  thread is included in a process's own counters);
- `rss_kib(pid)`, `thread_count(pid)`: VmRSS and Threads of one process;
- `StealMeter`: the share of CPU time the hypervisor stole over an interval (/proc/stat),
  so a noisy run is visible next to its figures.

`Report` collects rows (name, value, unit, target, verdict, note), prints them as a table
and writes them, with free-form details, as JSON. `median` and `percentile` are the only
statistics used: medians of interleaved repeats, p50/p99 of per-cycle figures.

`write_site` writes a gatewayd config (TCP or RTU bus, N devices of a float32 bench model)
that the daemon, the floor pipeline, the simulator process and the emulator all read.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

RESULTS_DIR = Path("bench-results")
CLK_TCK = os.sysconf("SC_CLK_TCK")
MIB = 1024 * 1024

# ---------------------------------------------------------------------------- /proc


def _stat_fields(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/stat").read_text()
    # The command name may contain spaces and parentheses: split after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def children_of(pid: int) -> list[int]:
    """Every live descendant of `pid` (by walking /proc's ppid links)."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            ppid = int(_stat_fields(int(entry))[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process (all its threads), seconds; 0 once it is gone."""
    try:
        fields = _stat_fields(pid)
    except OSError:
        return 0.0
    # Fields after the name: state(0) ppid(1) ... utime(11) stime(12).
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of `pid` and every live descendant."""
    return sum(cpu_seconds(p) for p in (pid, *children_of(pid)))


def _status(pid: int, key: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def rss_kib(pid: int) -> int:
    """VmRSS of `pid` in KiB (0 when gone)."""
    return _status(pid, "VmRSS")


def thread_count(pid: int) -> int:
    """Threads of `pid`."""
    return _status(pid, "Threads")


def _cpu_jiffies() -> tuple[int, int]:
    """(total, steal) jiffies of all CPUs since boot, from /proc/stat."""
    first = Path("/proc/stat").read_text().splitlines()[0].split()
    values = [int(v) for v in first[1:]]
    # user nice system idle iowait irq softirq steal guest guest_nice; guests are in user.
    total = sum(values[:8])
    return total, values[7] if len(values) > 7 else 0


class StealMeter:
    """CPU steal over an interval: `start()`, then `percent()` as often as wanted."""

    def __init__(self) -> None:
        self._total, self._steal = _cpu_jiffies()

    def start(self) -> StealMeter:
        self._total, self._steal = _cpu_jiffies()
        return self

    def percent(self) -> float:
        """Stolen share of all CPU time since `start`, in %."""
        total, steal = _cpu_jiffies()
        return 100.0 * (steal - self._steal) / max(1, total - self._total)


@dataclass
class ProcessSample:
    """CPU, RSS and threads of one process tree over a measured window."""

    cpu_s: float
    wall_s: float
    rss_kib: int
    threads: int

    @property
    def cpu_percent(self) -> float:
        """% of one core over the window."""
        return 100.0 * self.cpu_s / self.wall_s if self.wall_s else math.nan


class ProcessMeter:
    """Measures a process tree between `start()` and `stop()` (CPU) plus peak RSS/threads."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._cpu0 = 0.0
        self._wall0 = 0.0
        self.peak_rss = 0
        self.peak_threads = 0

    def start(self) -> None:
        self._cpu0 = tree_cpu_seconds(self.pid)
        self._wall0 = time.monotonic()
        self.peak_rss = self.peak_threads = 0

    def poll(self) -> None:
        """Update the peaks; call now and then during the window."""
        self.peak_rss = max(self.peak_rss, rss_kib(self.pid))
        self.peak_threads = max(self.peak_threads, thread_count(self.pid))

    def stop(self) -> ProcessSample:
        self.poll()
        return ProcessSample(
            cpu_s=tree_cpu_seconds(self.pid) - self._cpu0,
            wall_s=time.monotonic() - self._wall0,
            rss_kib=self.peak_rss,
            threads=self.peak_threads,
        )


# ---------------------------------------------------------------------------- statistics


def median(values: Iterable[float]) -> float:
    """Median, NaN for no values."""
    data = list(values)
    return statistics.median(data) if data else math.nan


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100, nearest rank), NaN for no values."""
    if not values:
        return math.nan
    data = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(data)))
    return data[min(rank, len(data)) - 1]


# ---------------------------------------------------------------------------- report


@dataclass
class Row:
    """One figure next to its target."""

    bench: str
    name: str
    value: float | str
    unit: str = ""
    target: str = ""
    ok: bool | None = None  # None: no target, informative
    note: str = ""


@dataclass
class Report:
    """Rows and details of a suite run, printed as a table and written as JSON."""

    suite: str
    mode: str
    rows: list[Row] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    steal: StealMeter = field(default_factory=StealMeter)

    def add(
        self,
        bench: str,
        name: str,
        value: float | str,
        unit: str = "",
        *,
        target: str = "",
        ok: bool | None = None,
        note: str = "",
    ) -> Row:
        """Add one figure; `ok` says whether it meets `target` (None: informative)."""
        if isinstance(value, float) and not math.isnan(value):
            value = round(value, 4)
        row = Row(bench, name, value, unit, target, ok, note)
        self.rows.append(row)
        verdict = "" if ok is None else ("  ok" if ok else "  MISSED")
        print(f"  [{bench}] {name}: {value} {unit}  {target}{verdict}", flush=True)
        return row

    def table(self) -> str:
        """The rows as a fixed-width text table."""
        header = ("bench", "figure", "value", "target", "verdict", "note")
        lines = [header]
        for r in self.rows:
            verdict = "-" if r.ok is None else ("ok" if r.ok else "MISSED")
            value = f"{r.value} {r.unit}".strip()
            lines.append((r.bench, r.name, value, r.target, verdict, r.note))
        widths = [max(len(str(line[i])) for line in lines) for i in range(len(header) - 1)]
        out = []
        for line in lines:
            cells = [str(c).ljust(w) for c, w in zip(line[:-1], widths, strict=False)]
            out.append("  ".join([*cells, str(line[-1])]).rstrip())
        return "\n".join(out)

    def environment(self) -> dict[str, Any]:
        """Machine facts that make figures comparable: cores, load, steal, versions."""
        return {
            "python": sys.version.split()[0],
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "loadavg": Path("/proc/loadavg").read_text().split()[:3],
            "cpu_steal_percent": round(self.steal.percent(), 2),
            "wall_s": round(time.time() - self.started, 1),
        }

    def write(self, path: Path | None) -> Path:
        """Print the table and write the JSON file (default under bench-results/)."""
        env = self.environment()
        print()
        print(f"{self.suite} ({self.mode}): CPU steal {env['cpu_steal_percent']} % over "
              f"{env['wall_s']} s, load {' '.join(env['loadavg'])}")  # fmt: skip
        print(self.table())
        if path is None:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            path = RESULTS_DIR / f"{self.suite}-{self.mode}-{stamp}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        body = {
            "suite": self.suite,
            "mode": self.mode,
            "environment": env,
            "rows": [asdict(r) for r in self.rows],
            "details": self.details,
        }
        path.write_text(json.dumps(body, indent=1, default=str))
        print(f"\nJSON written to {path}")
        return path


def ratio_ok(value: float, limit: float) -> bool:
    """value ≤ limit, NaN never passes."""
    return not math.isnan(value) and value <= limit


# ---------------------------------------------------------------------------- sites

#: float32 points per bench device (200 registers).
POINTS = 100


def bench_model(points: int = POINTS, table: str = "holding") -> dict[str, Any]:
    """`points` contiguous float32 points: the B1 device model as YAML data."""
    return {
        "name": "bench",
        "points": [
            {"measurepoint": f"p{i}", "table": table, "address": 2 * i, "type": "float32"}
            for i in range(points)
        ],
    }


def write_site(
    workdir: Path,
    *,
    modbus_port: int,
    mqtt_port: int,
    devices: int,
    points: int = POINTS,
    interval: str = "1s",
    bus: dict[str, Any] | None = None,
    spool: dict[str, Any] | None = None,
    uplink: dict[str, Any] | None = None,
    model: dict[str, Any] | None = None,
    logging_level: str = "warning",
) -> Path:
    """Write gatewayd.yaml + models/bench.yaml for `devices` bench devices; return the path."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "models").mkdir(exist_ok=True)
    (workdir / "models" / "bench.yaml").write_text(yaml.safe_dump(model or bench_model(points)))
    site = {
        "gateway": {
            "product_key": "gwPK", "device_key": "gwDK", "device_secret": "gwSecret",
            "broker": {"host": "127.0.0.1", "port": mqtt_port},
        },
        "spool": {"path": str(workdir / "spool.db"), **(spool or {})},
        "uplink": {"reply_timeout": "10s", **(uplink or {})},
        "logging": {"level": logging_level},
        "buses": [bus or {"name": "plant", "type": "tcp", "host": "127.0.0.1",
                          "port": modbus_port, "timeout": "1s"}],
        "devices": [
            {"name": f"dev{u}", "bus": (bus or {}).get("name", "plant"), "unit_id": u,
             "model": "bench", "product_key": "subPK", "device_key": f"dev{u}",
             "device_secret": f"secret{u}", "poll_interval": interval}
            for u in range(1, devices + 1)
        ],
    }  # fmt: skip
    path = workdir / "gatewayd.yaml"
    path.write_text(yaml.safe_dump(site, sort_keys=False))
    return path


def python_module(module: str, *args: str, **kwargs: Any) -> subprocess.Popen[str]:
    """Start `python -m module args...` with this interpreter, text pipes on stdin/stdout."""
    return subprocess.Popen(
        [sys.executable, "-m", module, *args],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        **kwargs,
    )


def gatewayd_exe() -> str:
    """The `gatewayd` console script next to this interpreter."""
    candidate = Path(sys.executable).with_name("gatewayd")
    return str(candidate) if candidate.exists() else "gatewayd"
