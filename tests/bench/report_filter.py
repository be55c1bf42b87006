"""Report by exception: a PV plant's day through the filter, and the filter's CPU at B1 load.

    python -m tests.bench report_filter [--hours 24] [--json out.json]

Pure and in virtual time (no sockets, no clock): prints figures, asserts nothing.

1. **A 2 MW PV plant for 24 simulated hours**, polled every 5 s: 10 inverters (AC/DC
   power, currents, voltages, frequency, temperature following the sun with sensor noise;
   operating state, setpoints; an energy counter that climbs by day and stands still at
   night), 2 grid meters (SDM630-like: voltages, currents, powers, power factors,
   frequency, energy) and a weather station (irradiance, module and air temperature). Each
   device-cycle's readings pass the mapping stage's `ReportFilter` with the example rules
   (`EXAMPLE_RULES`) or with `always`; what passes is encoded as EnOS `post.batch`
   records (`{"measurepoints": {...}, "time": ...}` per device and cycle, the identity
   fields included) to count records, points and JSON bytes per day. The same for the
   example site (`config/gatewayd.yaml`) moving as the device simulator moves it (fast
   synthetic sines and flips: a harsh case), every point on change within 1 %.
2. **CPU at B1 load** (50 devices x 100 float32 points @ 1 s): the mapping stage
   (`DeviceMapping.read` on one block per device, as the poller hands it over) with every
   point `always`, then on `change` with a 1 % deadband, over 300 virtual cycles of
   values that move a little every cycle (the filter's worst case: every point compared,
   most held back); the difference per second of plant time as % of one core.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gatewayd.config.models import PointConfig
from gatewayd.mapping.muting import Muting
from gatewayd.mapping.report import ALWAYS, ReportFilter, ReportSpec
from gatewayd.mapping.stage import DeviceMapping
from gatewayd.samples import Quality, Value

POLL_S = 5
ROOT = Path(__file__).resolve().parents[2]
HOUR_MS = 3_600_000

#: The example rules (README): analog values within 1 % (voltages 0.5 V, frequency
#: 0.02 Hz, power factor 0.01), states/setpoints/counters on any change, 15 min heartbeat.
HEARTBEAT_MS = 15 * 60_000
EXAMPLE_RULES = {
    "percent1": ReportSpec(on_change=True, percent=1.0, heartbeat_ms=HEARTBEAT_MS),
    "volts": ReportSpec(on_change=True, deadband=0.5, heartbeat_ms=HEARTBEAT_MS),
    "hz": ReportSpec(on_change=True, deadband=0.02, heartbeat_ms=HEARTBEAT_MS),
    "pf": ReportSpec(on_change=True, deadband=0.01, heartbeat_ms=HEARTBEAT_MS),
    "celsius": ReportSpec(on_change=True, deadband=0.5, heartbeat_ms=HEARTBEAT_MS),
    "exact": ReportSpec(on_change=True, heartbeat_ms=HEARTBEAT_MS),
}


def sun(t_ms: int) -> float:
    """Clear-sky fraction of peak at time of day `t_ms`: 0 at night, 1 at solar noon."""
    hour = (t_ms % (24 * HOUR_MS)) / HOUR_MS
    return max(0.0, math.sin(math.pi * (hour - 6) / 12)) if 6 <= hour <= 18 else 0.0


@dataclass
class Point:
    """One simulated measurepoint: how it moves and which example rule it takes."""

    name: str
    rule: str
    kind: str  # "sun" (scaled by irradiance), "grid" (noise around a mean), "state",
    # "setpoint", "counter"
    scale: float
    noise: float


def inverter_points() -> list[Point]:
    sunny = [("ac_power", 200_000.0), ("dc_power", 206_000.0), ("ac_current", 290.0),
             ("ac_current_a", 97.0), ("ac_current_b", 97.0), ("ac_current_c", 97.0),
             ("dc_current", 330.0), ("apparent_power", 202_000.0)]  # fmt: skip
    points = [Point(n, "percent1", "sun", s, 0.003) for n, s in sunny]
    points += [Point(f"ac_voltage_{p}", "volts", "grid", 400.0, 0.6) for p in ("ab", "bc", "ca")]
    points += [Point("dc_voltage", "volts", "grid", 620.0, 0.8)]
    points += [Point("frequency", "hz", "grid", 50.0, 0.01)]
    points += [Point("heatsink_temp", "celsius", "sun", 35.0, 0.1)]
    points += [Point("reactive_power", "percent1", "grid", 0.0, 150.0)]
    points += [Point("power_factor", "pf", "grid", 0.99, 0.002)]
    points += [Point("operating_state", "exact", "state", 4, 0)]
    points += [Point("active_power_limit", "exact", "setpoint", 100, 0)]
    points += [Point("power_factor_setpoint", "exact", "setpoint", 1, 0)]
    points += [Point("lifetime_energy", "exact", "counter", 1_000_000, 0)]
    return points


def meter_points() -> list[Point]:
    points = [Point(f"voltage_l{i}", "volts", "grid", 230.0, 0.6) for i in (1, 2, 3)]
    points += [Point(f"current_l{i}", "percent1", "sun", 2900.0, 0.003) for i in (1, 2, 3)]
    points += [Point(f"power_l{i}", "percent1", "sun", 666_000.0, 0.003) for i in (1, 2, 3)]
    points += [Point(f"power_factor_l{i}", "pf", "grid", 0.99, 0.002) for i in (1, 2, 3)]
    points += [Point("power_total", "percent1", "sun", 2_000_000.0, 0.003),
               Point("frequency", "hz", "grid", 50.0, 0.01),
               Point("import_energy", "exact", "counter", 50_000, 0),
               Point("export_energy", "exact", "counter", 3_000_000, 0)]  # fmt: skip
    return points


def weather_points() -> list[Point]:
    return [Point("irradiance", "percent1", "sun", 1000.0, 0.01),
            Point("module_temp", "celsius", "sun", 55.0, 0.05),
            Point("air_temp", "celsius", "grid", 22.0, 0.05)]  # fmt: skip


def plant() -> dict[str, list[Point]]:
    """Device name → points of the 2 MW plant."""
    devices = {f"inverter-{i:02d}": inverter_points() for i in range(1, 11)}
    devices |= {f"meter-{i}": meter_points() for i in (1, 2)}
    devices["weather"] = weather_points()
    return devices


class Motion:
    """The values of one device's points at successive poll instants (seeded, repeatable)."""

    def __init__(self, points: list[Point], rng: random.Random) -> None:
        self.points = points
        self.rng = rng
        self.energy = [float(p.scale) for p in points]

    def values(self, t_ms: int) -> list[Value]:
        s = sun(t_ms)
        gauss = self.rng.gauss
        out: list[Value] = []
        for i, p in enumerate(self.points):
            if p.kind == "sun":
                out.append(round(p.scale * s * (1 + gauss(0, p.noise)) if s else 0.0, 3))
            elif p.kind == "grid":
                out.append(round(p.scale + gauss(0, p.noise), 3))
            elif p.kind == "state":
                out.append(4 if s > 0.02 else 2)  # producing / sleeping
            elif p.kind == "setpoint":
                out.append(int(p.scale))
            else:  # counter: Wh, integer, climbs with the sun
                self.energy[i] += 200_000 * s * POLL_S / 3600
                out.append(int(self.energy[i]))
        return out


def record_bytes(device: str, names: list[str], values: list[Value], ts_ms: int) -> int:
    """JSON bytes of one EnOS post.batch record carrying these points."""
    record = {"productKey": "pvProductKey", "deviceKey": device,
              "measurepoints": dict(zip(names, values, strict=True)), "time": ts_ms}  # fmt: skip
    return len(json.dumps(record, separators=(",", ":")))


def plant_day(hours: float, *, change: bool) -> dict[str, float]:
    """Records, points and bytes the plant sends in `hours` with the example rules or
    `always`; CPU seconds spent in the filter."""
    devices = plant()
    rng = random.Random(20)
    motions = {name: Motion(points, rng) for name, points in devices.items()}
    filters = {
        name: ReportFilter({p.name: EXAMPLE_RULES[p.rule] if change else ALWAYS for p in points})
        for name, points in devices.items()
    }
    records = points_sent = polled = 0
    total_bytes = 0
    filter_cpu = 0.0
    good = Quality.GOOD
    for cycle in range(int(hours * 3600 / POLL_S)):
        ts = cycle * POLL_S * 1000
        for name, points in devices.items():
            values = motions[name].values(ts)
            polled += len(values)
            keep = filters[name].keep
            started = time.process_time()
            mask = [keep(p.name, v, good, ts) for p, v in zip(points, values, strict=True)]
            filter_cpu += time.process_time() - started
            names = [p.name for p, k in zip(points, mask, strict=True) if k]
            if names:
                kept = [v for v, k in zip(values, mask, strict=True) if k]
                records += 1
                points_sent += len(names)
                total_bytes += record_bytes(name, names, kept, ts)
    per_day = 24 / hours
    return {
        "records_per_day": records * per_day,
        "points_per_day": points_sent * per_day,
        "bytes_per_day": total_bytes * per_day,
        "points_polled_per_day": polled * per_day,
        "filter_cpu_s": filter_cpu,
    }


# ---------------------------------------------------------------------------- example site

#: The example site's rule for the benchmark: every point on change within 1 %, 15 min.
EXAMPLE_SITE_RULE = ReportSpec(on_change=True, percent=1.0, heartbeat_ms=HEARTBEAT_MS)


def example_site_day(hours: float, *, change: bool) -> dict[str, float]:
    """config/gatewayd.yaml's devices (their poll intervals, per-point ones included)
    moving as the device simulator moves them (`gatewayd.sim.device_motion`: sines,
    ramps, counters, flipping bools), through the filter with `EXAMPLE_SITE_RULE`."""
    from gatewayd.config.loader import load_config
    from gatewayd.sim.device_motion import default_motion, value_at

    config = load_config(ROOT / "config" / "gatewayd.yaml", environ={})
    records = points_sent = polled = total_bytes = 0
    for device in config.devices:
        model = config.models[device.model]
        rule = EXAMPLE_SITE_RULE if change else ALWAYS
        filt = ReportFilter({p.measurepoint: rule for p in model.points})
        step_ms = round(device.poll_interval * 1000)
        for cycle in range(int(hours * 3_600_000 / step_ms)):
            ts = cycle * step_ms
            names: list[str] = []
            values: list[Value] = []
            for point in model.points:
                every = round((point.poll_interval or device.poll_interval) * 1000)
                if ts // every == (ts - step_ms) // every and cycle:
                    continue  # not due this cycle
                value = value_at(point, default_motion(point), ts / 1000)
                polled += 1
                if filt.keep(point.measurepoint, value, Quality.GOOD, ts):
                    names.append(point.measurepoint)
                    values.append(value)
            if names:
                records += 1
                points_sent += len(names)
                total_bytes += record_bytes(device.device_key, names, values, ts)
    per_day = 24 / hours
    return {
        "records_per_day": records * per_day,
        "points_per_day": points_sent * per_day,
        "bytes_per_day": total_bytes * per_day,
        "points_polled_per_day": polled * per_day,
    }


# ---------------------------------------------------------------------------- B1 load

B1_DEVICES, B1_POINTS = 50, 100


@dataclass
class B1Block:
    """One device's response as the stage's decoder makes it (a `DecodedBlock`'s shape)."""

    indices: tuple[int, ...]
    measurepoints: tuple[str, ...]
    values: list[Value]
    nonfinite: tuple[int, ...]
    ts_ms: int
    ascending: bool = True


def b1_stage_cpu(cycles: int, *, change: bool) -> float:
    """CPU seconds of the mapping stage for `cycles` B1 cycles (all devices)."""
    points = [
        PointConfig.model_validate(
            {"measurepoint": f"p{i}", "table": "holding", "address": 2 * i, "type": "float32"}
        )
        for i in range(B1_POINTS)
    ]
    spec = ReportSpec(on_change=True, percent=1.0, heartbeat_ms=HEARTBEAT_MS) if change else ALWAYS
    reports = {p.measurepoint: spec for p in points}
    stages = [
        DeviceMapping(f"d{d}", points, [], Muting(), default_interval=1.0, reports=reports)
        for d in range(B1_DEVICES)
    ]
    indices = tuple(range(B1_POINTS))
    names = tuple(p.measurepoint for p in points)
    rng = random.Random(1)
    base = [rng.uniform(10, 1000) for _ in range(B1_POINTS)]
    # Values move ~0.2 % a cycle: a point crosses its 1 % band now and then.
    series = [[b * (1 + 0.002 * math.sin(c / 7 + i)) for i, b in enumerate(base)]
              for c in range(cycles)]  # fmt: skip
    started = time.process_time()
    for cycle in range(cycles):
        ts = cycle * 1000
        for stage in stages:
            stage.read([B1Block(indices, names, series[cycle], (), ts)], [])
    return time.process_time() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hours", type=float, default=24.0)
    parser.add_argument("--b1-cycles", type=int, default=300)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    figures: dict[str, Any] = {}
    always = plant_day(args.hours, change=False)
    change = plant_day(args.hours, change=True)
    figures["plant_always"], figures["plant_change"] = always, change
    count = sum(len(points) for points in plant().values())
    print(f"PV plant (13 devices, {count} points, {POLL_S} s polls), per day:")
    for key in ("records_per_day", "points_per_day", "bytes_per_day"):
        ratio = change[key] / always[key]
        print(f"  {key:<16} always {always[key]:>14,.0f}   change {change[key]:>12,.0f}"
              f"   change/always {ratio:.3f}")
    print(f"  filter CPU for the day: {change['filter_cpu_s']:.2f} s")
    site_always = example_site_day(args.hours, change=False)
    site_change = example_site_day(args.hours, change=True)
    figures["example_always"], figures["example_change"] = site_always, site_change
    print("Example site (config/gatewayd.yaml, simulator motions, 1 % everywhere), per day:")
    for key in ("records_per_day", "points_per_day", "bytes_per_day"):
        ratio = site_change[key] / site_always[key]
        print(f"  {key:<16} always {site_always[key]:>14,.0f}   change "
              f"{site_change[key]:>12,.0f}   change/always {ratio:.3f}")
    runs = {"always": [], "change": []}  # type: dict[str, list[float]]
    for _ in range(3):  # interleaved, medians: the machine is shared
        for mode in ("always", "change"):
            runs[mode].append(b1_stage_cpu(args.b1_cycles, change=mode == "change"))
    base = sorted(runs["always"])[1] / args.b1_cycles
    filtered = sorted(runs["change"])[1] / args.b1_cycles
    figures["b1_stage_cpu_s_per_cycle"] = {"always": base, "change": filtered}
    print(f"B1 load ({B1_DEVICES} x {B1_POINTS} float32 @ 1 s), mapping stage CPU per second:")
    print(f"  always {base * 1000:.2f} ms   change (1 %) {filtered * 1000:.2f} ms   "
          f"filter cost {(filtered - base) * 100:.2f} % of one core")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as out:
            json.dump(figures, out, indent=2)


if __name__ == "__main__":
    main()
