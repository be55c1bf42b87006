"""The nameplates of the demo's simulated devices: what their model `attributes:` read.

The device simulator moves the measurepoints of a model and reads 0 everywhere else, so
a nameplate (manufacturer, firmware version, serial number, ...) has to be written into
its registers. Each value is encoded by the project's codec from the model's attribute
definition, with the unit's byte and word orders, exactly as the gateway will decode it.
"""

from __future__ import annotations

from gatewayd.config.models import Config
from gatewayd.modbus import codec
from gatewayd.samples import Value
from gatewayd.sim.device import DeviceSimulator

__all__ = ["NAMEPLATES", "write_nameplates"]

#: Per demo device: attribute → the value its registers hold.
NAMEPLATES: dict[str, dict[str, Value]] = {
    "inverter-1": {
        "manufacturer": "Gatewayd Sim",
        "model_name": "SIM-INV-10K",
        "firmware_version": "4.12.3",
        "serial_number": "INV1-26-000481",
    },
    "meter-1": {"serial_number": 26000101, "meter_code": 0x70},
    "meter-2": {"serial_number": 26000102, "meter_code": 0x70},
}


def write_nameplates(simulator: DeviceSimulator, config: Config, bus: str) -> int:
    """Write the nameplate of each device of `bus` into `simulator`; returns values written.

    Attributes without a value in `NAMEPLATES` are left alone (they read 0, or "").
    """
    written = 0
    served = set(simulator.unit_ids)
    for device in config.devices:
        if device.bus != bus or device.unit_id not in served:
            continue
        unit = simulator.unit(device.unit_id)
        values = NAMEPLATES.get(device.name, {})
        for attribute in config.models[device.model].attributes:
            if attribute.attribute not in values:
                continue
            point = attribute.as_point()
            byte_order, word_order = unit.orders(point)
            words = codec.encode(
                point, values[attribute.attribute], byte_order=byte_order, word_order=word_order
            )
            unit.wire_write(point.table, point.address, words)
            written += 1
    return written
