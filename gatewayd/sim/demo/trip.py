"""The demo's one fault: the inverter trips once, so its captured event fires once.

The simulator moves every point by itself (an enum cycles through its states every few
seconds), which would fire the captured event again and again. So the tripping point is
pinned to its normal state before the daemon starts, set to the tripped state once, a
few seconds after the daemon is ready (its capture ring then holds rows from before the
trip), and set back: one event, one file.
"""

from __future__ import annotations

import asyncio

from gatewayd.config.models import Config
from gatewayd.sim.demo.site import Trip
from gatewayd.sim.device import DeviceSimulator

__all__ = ["hold_normal", "trip_once"]


def _unit_id(config: Config, device: str) -> int:
    return next(d.unit_id for d in config.devices if d.name == device)


def hold_normal(simulator: DeviceSimulator, config: Config, trip: Trip) -> None:
    """Pin the tripping point to its normal state (before the daemon's first poll)."""
    simulator.set_value(_unit_id(config, trip.device), trip.point, trip.normal)


async def trip_once(simulator: DeviceSimulator, config: Config, trip: Trip) -> None:
    """Trip `trip.after` seconds from now, recover `trip.lasts` later (scheduled actions)."""
    unit_id = _unit_id(config, trip.device)
    await asyncio.sleep(trip.after)
    simulator.set_value(unit_id, trip.point, trip.tripped)
    await asyncio.sleep(trip.lasts)
    simulator.set_value(unit_id, trip.point, trip.normal)
