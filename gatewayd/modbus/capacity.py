"""Can a bus keep up? The wire time of one full cycle of all its devices vs its shortest period.

A bus carries one request at a time, so a cycle of every device's full plan takes at least
the sum of the requests' wire times (timing.py: frames at the baud rate, inter-frame
silence, turnaround). If that exceeds the shortest poll period on the bus, the schedule
cannot be met: cycles overrun and ticks are skipped. gatewayd warns at startup and in
`gatewayd plan` rather than refusing to run (a slow poll is better than none).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import structlog

from gatewayd.config.models import BusConfig, DeviceConfig, DeviceModel
from gatewayd.modbus.layout import Layouts
from gatewayd.modbus.planner import DeviceReadPlanner, ReadRequest
from gatewayd.modbus.timing import bus_cycle_time, resolve_gap_fill


@dataclass(frozen=True, slots=True)
class DevicePlan:
    """One device's full read plan and its wire time."""

    device: str
    points: tuple[str, ...]  # measurepoint ids, indexed like `ReadRequest.points`
    requests: tuple[ReadRequest, ...]
    wire_time: float  # seconds per full cycle
    shortest_interval: float  # seconds


@dataclass(frozen=True, slots=True)
class BusCapacity:
    """Wire time of one full cycle of a bus vs the shortest poll period on it."""

    bus: str
    devices: tuple[DevicePlan, ...]
    wire_time: float  # seconds: the sum over every device's full plan
    shortest_period: float  # seconds (inf when the bus has no enabled device)

    @property
    def requests(self) -> int:
        """Requests in one full cycle of every device."""
        return sum(len(d.requests) for d in self.devices)

    @property
    def utilisation(self) -> float:
        """wire_time / shortest_period: above 1.0 the bus cannot meet its schedule."""
        if math.isinf(self.shortest_period):
            return 0.0
        return self.wire_time / self.shortest_period

    @property
    def overloaded(self) -> bool:
        """True when one cycle's wire time exceeds the shortest period."""
        return self.wire_time > self.shortest_period

    def log_if_overloaded(self, logger: structlog.typing.FilteringBoundLogger) -> None:
        """Log one warning when the bus cannot meet its configured period."""
        if self.overloaded:
            logger.warning(
                "bus cannot meet its poll period: one cycle needs more wire time than the "
                "shortest device period (raise poll intervals, split the bus, or raise the "
                "baud rate)",
                bus=self.bus,
                wire_time_s=round(self.wire_time, 4),
                shortest_period_s=self.shortest_period,
                requests=self.requests,
            )


def device_plan(
    bus: BusConfig, device: DeviceConfig, model: DeviceModel, layouts: Layouts | None = None
) -> DevicePlan:
    """The full read plan of one device (every point, as a cold start would read it);
    with `layouts`, its plan and measurepoints are the ones its model's devices share."""
    gap_fill = resolve_gap_fill(bus)
    layout = (layouts if layouts is not None else Layouts()).of(model, device, gap_fill=gap_fill)
    planner = DeviceReadPlanner(
        layout.points,
        max_registers=min(device.max_registers or bus.max_registers, bus.max_registers),
        max_bits=bus.max_bits,
        gap_fill=gap_fill,
        plans=layout.plans,
    )
    requests = tuple(planner.plan())
    intervals = [p.poll_interval or device.poll_interval for p in model.points]
    return DevicePlan(
        device=device.name,
        points=layout.measurepoints,
        requests=requests,
        wire_time=bus_cycle_time(bus, requests),
        shortest_interval=min(intervals, default=device.poll_interval),
    )


def bus_capacity(
    bus: BusConfig,
    devices: Sequence[DeviceConfig],
    models: Mapping[str, DeviceModel],
    layouts: Layouts | None = None,
) -> BusCapacity:
    """Capacity of `bus` for the enabled `devices` on it (others are ignored)."""
    layouts = layouts if layouts is not None else Layouts()
    plans = tuple(
        device_plan(bus, d, models[d.model], layouts)
        for d in devices
        if d.bus == bus.name and d.enabled
    )
    return BusCapacity(
        bus=bus.name,
        devices=plans,
        wire_time=sum(p.wire_time for p in plans),
        shortest_period=min((p.shortest_interval for p in plans), default=math.inf),
    )
