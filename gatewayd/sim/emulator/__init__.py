"""A faithful EnOS cloud emulator: embedded MQTT broker, EnOS auth, responder and control API.

See `server.EnosEmulator` for the Python API and `gatewayd emulate` for the command line.
"""

from gatewayd.sim.emulator.config import (
    EmulatorConfig,
    EventSpec,
    MeasurepointSpec,
    OptionsSpec,
    ProductSpec,
    ThingModel,
    ThrottleSpec,
)
from gatewayd.sim.emulator.records import EventRecord, LoginRecord, PointRecord, Records
from gatewayd.sim.emulator.server import CommandTimeout, DeviceNotConnected, EnosEmulator

__all__ = [
    "CommandTimeout",
    "DeviceNotConnected",
    "EmulatorConfig",
    "EnosEmulator",
    "EventRecord",
    "EventSpec",
    "LoginRecord",
    "MeasurepointSpec",
    "OptionsSpec",
    "PointRecord",
    "ProductSpec",
    "Records",
    "ThingModel",
    "ThrottleSpec",
]
