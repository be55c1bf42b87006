"""`gatewayd plan CONFIG` and `gatewayd read CONFIG --device NAME`: commissioning tools.

`plan` is offline: per bus and device it prints the read requests a full cycle sends
(table, start, count, measurepoints covered), and per bus the wire-time estimate of one
full cycle against the shortest poll period, with a warning when the bus cannot keep up.

`read` polls one device for real through the same reader the daemon uses (planning, hole
discovery) and the mapping stage's decoder, and prints every measurepoint with value, unit,
quality and raw registers. Nothing is spooled or published.

Exit status: 0 success; 64 unknown device or bad option; 78 invalid config; for `read`,
1 when some points failed in the last poll and 69 (EX_UNAVAILABLE) when the bus could not
be opened or the device did not answer at all.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gatewayd.clock import SystemClock
from gatewayd.config.cli import load_or_report
from gatewayd.config.models import BusConfig, Config, DeviceConfig, DeviceModel, SerialBus
from gatewayd.config.units import format_duration, parse_duration
from gatewayd.mapping.decoding import Decoded, PointReading, ResponseDecoder
from gatewayd.mapping.stage import report_specs
from gatewayd.modbus.capacity import BusCapacity, DevicePlan, bus_capacity
from gatewayd.modbus.errors import BusUnavailable
from gatewayd.modbus.reader import DeviceReader, ReadOutcome
from gatewayd.modbus.timing import resolve_gap_fill

#: Some points failed: sysexits has no "partly" status, so the generic failure code.
EX_PARTIAL = 1


def register(subparsers: Any) -> None:
    """Add the `plan` and `read` subcommands."""
    plan = subparsers.add_parser(
        "plan",
        help="print the Modbus read plan and the bus wire-time estimate",
        description=(
            "Print, per device, the read requests of one full poll cycle (table, start, "
            "count, measurepoints covered) and, per bus, the estimated wire time of a full "
            "cycle against the shortest poll period. Warns when a bus cannot keep up."
        ),
    )
    plan.add_argument("config", type=Path, metavar="CONFIG", help="path to gatewayd.yaml")
    plan.add_argument("--device", metavar="NAME", help="only this device (and its bus)")
    plan.add_argument("--json", action="store_true", help="machine-readable output")
    plan.set_defaults(func=run_plan)

    read = subparsers.add_parser(
        "read",
        help="poll one device now and print its measurepoints (nothing is published)",
        description=(
            "Connect to DEVICE's bus, poll all its points COUNT times and print each "
            "measurepoint with value, unit, quality and raw registers. Nothing is spooled "
            "or sent to EnOS."
        ),
    )
    read.add_argument("config", type=Path, metavar="CONFIG", help="path to gatewayd.yaml")
    read.add_argument("--device", required=True, metavar="NAME", help="the device to read")
    read.add_argument("--json", action="store_true", help="one JSON object per poll")
    read.add_argument(
        "--count", type=_positive_int, default=1, metavar="N", help="polls to make (default 1)"
    )
    read.add_argument(
        "--interval",
        type=_duration,
        default=None,
        metavar="D",
        help="time between polls, e.g. 1s or 500ms (default: the device's)",
    )
    read.set_defaults(func=run_read)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _find_device(config: Config, name: str) -> DeviceConfig | None:
    device = next((d for d in config.devices if d.name == name), None)
    if device is None:
        known = ", ".join(d.name for d in config.devices) or "none"
        print(
            f"gatewayd: no device named {name!r} in the config (devices: {known})", file=sys.stderr
        )
    return device


def _bus_of(config: Config, device: DeviceConfig) -> BusConfig:
    # The loader guarantees every device names an existing bus.
    return next(b for b in config.buses if b.name == device.bus)


# ---------------------------------------------------------------------------- plan


def run_plan(args: argparse.Namespace) -> int:
    """Print the plan of every bus (or of `--device`'s bus, that device only)."""
    config = load_or_report(args.config)
    if config is None:
        return os.EX_CONFIG
    buses: list[tuple[BusConfig, list[DeviceConfig]]]
    if args.device is not None:
        device = _find_device(config, args.device)
        if device is None:
            return os.EX_USAGE
        buses = [(_bus_of(config, device), [device])]
    else:
        buses = [(b, [d for d in config.devices if d.bus == b.name]) for b in config.buses]
    reports = [(bus, devices, bus_capacity(bus, devices, config.models)) for bus, devices in buses]
    if args.json:
        doc = {
            "buses": [
                _plan_json(bus, devices, cap, config.models) for bus, devices, cap in reports
            ]
        }
        print(json.dumps(doc, indent=2))
    else:
        for bus, devices, cap in reports:
            _print_plan(bus, devices, cap, config.models)
    for _, _, cap in reports:
        if cap.overloaded:
            print(
                f"warning: bus {cap.bus} cannot meet its poll period: a full cycle needs "
                f"{_ms(cap.wire_time)} of wire time, the shortest period is "
                f"{format_duration(cap.shortest_period)}",
                file=sys.stderr,
            )
    return os.EX_OK


def _describe_bus(bus: BusConfig) -> str:
    if isinstance(bus, SerialBus):
        return f"rtu {bus.device} {bus.baudrate} {bus.bytesize}{bus.parity.value}{bus.stopbits}"
    if bus.type == "rtu_over_tcp":
        return f"rtu_over_tcp {bus.host}:{bus.port} (serial side {bus.baudrate} baud)"
    return f"tcp {bus.host}:{bus.port}"


def _plural(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


def _report_rules(device: DeviceConfig, models: Mapping[str, DeviceModel]) -> dict[str, str]:
    """measurepoint → its report rule as text (`always`, `change ±0.5 hb 900s`)."""
    model = models.get(device.model)
    if model is None:
        return {}
    return {name: spec.describe() for name, spec in report_specs(device, model).items()}


def _print_plan(
    bus: BusConfig,
    devices: Sequence[DeviceConfig],
    cap: BusCapacity,
    models: Mapping[str, DeviceModel],
) -> None:
    period = "-" if not cap.devices else format_duration(cap.shortest_period)
    print(
        f"bus {bus.name} ({_describe_bus(bus)}): "
        f"{_plural(cap.requests, 'request')} per full cycle, "
        f"wire time {_ms(cap.wire_time)}, shortest period {period} "
        f"({cap.utilisation:.1%} of the bus){'  OVERLOADED' if cap.overloaded else ''}"
    )
    plans = {p.device: p for p in cap.devices}
    for device in devices:
        plan = plans.get(device.name)
        if plan is None:
            print(f"  device {device.name}: disabled, not polled")
            continue
        print(
            f"  device {device.name} (unit {device.unit_id}, model {device.model}, every "
            f"{format_duration(device.poll_interval)}): "
            f"{_plural(len(plan.requests), 'request')} per cycle, "
            f"{_ms(plan.wire_time)}, gap fill {resolve_gap_fill(bus)}"
        )
        points = _points(plan)
        for request, names in zip(plan.requests, points, strict=True):
            print(
                f"    {request.table:<8} {request.start:>5} +{request.count:<4} {', '.join(names)}"
            )
        by_rule: dict[str, list[str]] = {}
        for name, rule in _report_rules(device, models).items():
            by_rule.setdefault(rule, []).append(name)
        for rule, names in by_rule.items():
            print(f"    report {rule}: {', '.join(names)}")


def _points(plan: DevicePlan) -> list[list[str]]:
    return [[plan.points[i] for i in request.points] for request in plan.requests]


def _plan_json(
    bus: BusConfig,
    devices: Sequence[DeviceConfig],
    cap: BusCapacity,
    models: Mapping[str, DeviceModel],
) -> dict[str, Any]:
    plans = {p.device: p for p in cap.devices}
    out_devices = []
    for device in devices:
        plan = plans.get(device.name)
        if plan is None:
            out_devices.append({"name": device.name, "enabled": False})
            continue
        out_devices.append(
            {
                "name": device.name,
                "enabled": True,
                "unit_id": device.unit_id,
                "model": device.model,
                "poll_interval_s": device.poll_interval,
                "requests_per_cycle": len(plan.requests),
                "wire_time_s": plan.wire_time,
                "report": _report_rules(device, models),
                "requests": [
                    {
                        "table": str(r.table),
                        "start": r.start,
                        "count": r.count,
                        "measurepoints": names,
                    }
                    for r, names in zip(plan.requests, _points(plan), strict=True)
                ],
            }
        )
    return {
        "name": bus.name,
        "type": bus.type,
        "gap_fill": resolve_gap_fill(bus),
        "requests_per_cycle": cap.requests,
        "wire_time_s": cap.wire_time,
        "shortest_period_s": None if not cap.devices else cap.shortest_period,
        "utilisation": cap.utilisation,
        "overloaded": cap.overloaded,
        "devices": out_devices,
    }


# ---------------------------------------------------------------------------- read


def run_read(args: argparse.Namespace) -> int:
    """Poll `--device` `--count` times and print what it answered."""
    config = load_or_report(args.config)
    if config is None:
        return os.EX_CONFIG
    device = _find_device(config, args.device)
    if device is None:
        return os.EX_USAGE
    bus = _bus_of(config, device)
    interval = args.interval if args.interval is not None else device.poll_interval
    return asyncio.run(_read(config, bus, device, args.count, interval, as_json=args.json))


async def _read(
    config: Config,
    bus: BusConfig,
    device: DeviceConfig,
    count: int,
    interval: float,
    *,
    as_json: bool,
) -> int:
    from gatewayd.modbus.client import make_client  # noqa: PLC0415 - the pymodbus seam, lazily

    model = config.models[device.model]
    reader = DeviceReader(bus, device, model, gap_fill=resolve_gap_fill(bus))
    decoder = ResponseDecoder(reader.points, reader.orders)
    clock = SystemClock()
    client = make_client(bus)
    try:
        await client.connect()
    except BusUnavailable as exc:
        # The message names the bus, the port or endpoint, the setting and the reason.
        print(f"gatewayd: {exc}", file=sys.stderr)
        return os.EX_UNAVAILABLE
    status = os.EX_OK
    try:
        everything = list(range(len(reader.points)))
        for n in range(count):
            if n:
                # Keep the polls on the interval grid like the daemon (no drift).
                await clock.sleep(interval - clock.monotonic() % interval)
            outcome = await reader.read(client, everything, clock)
            decoded = decoder.decode(outcome.responses)
            _print_poll(reader, outcome, decoded, n + 1, count, as_json=as_json)
            if not outcome.answered:
                status = os.EX_UNAVAILABLE
            elif outcome.failed or decoded.failed:
                status = EX_PARTIAL
            else:
                status = os.EX_OK
    finally:
        await client.close()
    return status


def _print_poll(
    reader: DeviceReader,
    outcome: ReadOutcome,
    decoded: Decoded,
    n: int,
    count: int,
    *,
    as_json: bool,
) -> None:
    failed = [PointReading(f.index, None, (), f.ts_ms, f.error) for f in outcome.failed]
    readings = sorted([*decoded.good, *decoded.failed, *failed], key=lambda r: r.index)
    device = reader.device
    if as_json:
        print(
            json.dumps(
                {
                    "device": device.name,
                    "bus": device.bus,
                    "unit_id": device.unit_id,
                    "poll": n,
                    "requests": outcome.requests,
                    "points": [_reading_json(reader, r) for r in readings],
                }
            )
        )
        return
    when = max((r.ts_ms for r in readings), default=0)
    stamp = datetime.fromtimestamp(when / 1000, UTC).isoformat(timespec="milliseconds")
    print(
        f"{device.name} (unit {device.unit_id} on {device.bus}) poll {n}/{count} at "
        f"{stamp}, {outcome.requests} requests"
    )
    rows = [("measurepoint", "value", "unit", "quality", "raw")]
    for reading in readings:
        point = reader.points[reading.index]
        value = "-" if reading.value is None else str(reading.value)
        quality = "good" if reading.error is None else f"bad ({reading.error})"
        rows.append((point.measurepoint, value, point.unit or "", quality, _raw(reading)))
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row[:4], widths, strict=True)]
        print("  " + "  ".join([*cells, row[4]]).rstrip())


def _raw(reading: PointReading) -> str:
    return " ".join(f"0x{word:04X}" for word in reading.raw)


def _reading_json(reader: DeviceReader, reading: PointReading) -> dict[str, Any]:
    point = reader.points[reading.index]
    return {
        "measurepoint": point.measurepoint,
        "value": reading.value,
        "unit": point.unit,
        "quality": "good" if reading.error is None else "bad",
        "error": reading.error,
        "raw": list(reading.raw),
        "ts_ms": reading.ts_ms,
    }
