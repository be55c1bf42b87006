"""The demo site: the example models on a simulated plant, written into a scratch directory.

The site mirrors `config/gatewayd.yaml` (an inverter and a PLC behind one Modbus TCP
endpoint, two SDM630 meters on an RS-485 line) with demo-friendly settings: loopback ports
chosen at start, fast polls, and a short `live_window` so that what was held back during
an outage visibly travels as backfill (`resume`) rather than as late live data.

The inverter is new to the cloud: it has a `register:` block and no secret, so the gateway
registers it (`thing.device.register`) before binding and logging it in, and sends its
nameplate (read from the SunSpec common model) and static attributes.

The inverter's `inverter_fault` event has a capture rule here (the shipped example model
has none: a capture needs `integration.http`): when it fires, the gateway records the
inverter's AC/DC values around it into a CSV file and uploads it with the event to the
emulator's HTTP side, which `integration.http` points at. The demo trips the inverter
once (`TRIP`); the service account's secret key is made per run, in a 0600 file.

The models are read from package data (`gatewayd/sim/demo/models`), never from the
repository, so `gatewayd demo` works from an installed wheel.
"""

from __future__ import annotations

import os
import secrets
import socket
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

__all__ = [
    "CAPTURE",
    "DEMO_DEVICES",
    "INTEGRATION",
    "MODEL_FILES",
    "REGISTERED",
    "TRIP",
    "DemoDevice",
    "SiteFiles",
    "Trip",
    "demo_models",
    "free_port",
    "shipped_models",
    "site_document",
    "write_site",
]

PLANT_BUS = "plant-tcp"
METER_BUS = "meters"
MODEL_FILES = ("generic_plc.yaml", "sdm630.yaml", "sunspec_inverter.yaml")

#: How the meters' line is simulated: a real serial pty pair, or RTU framing over TCP.
MeterLink = Literal["rtu", "rtu_over_tcp"]


@dataclass(frozen=True, slots=True)
class DemoDevice:
    """One simulated device of the demo site."""

    name: str
    bus: str
    unit_id: int
    model: str
    product_key: str
    device_key: str
    poll_interval: str


DEMO_DEVICES: tuple[DemoDevice, ...] = (
    DemoDevice("inverter-1", PLANT_BUS, 1, "sunspec_inverter", "invProductKey", "inverter01", "1s"),
    DemoDevice("plc-1", PLANT_BUS, 2, "generic_plc", "plcProductKey", "plc01", "1s"),
    DemoDevice("meter-1", METER_BUS, 1, "sdm630", "meterProductKey", "meter01", "2s"),
    DemoDevice("meter-2", METER_BUS, 2, "sdm630", "meterProductKey", "meter02", "2s"),
)

#: What the gateway registers in the cloud itself (device name → its `register:` block),
#: and the static attributes it sends for them next to the nameplate read from registers.
REGISTERED: dict[str, dict[str, Any]] = {
    "inverter-1": {"name": "Inverter 1", "timezone": "+01:00", "attributes": {"site": "North-2"}},
}
STATIC_ATTRIBUTES: dict[str, dict[str, Any]] = {
    "inverter-1": {"rated_power_kw": 10, "commissioned": "2026-11-30"},
}


@dataclass(frozen=True, slots=True)
class Trip:
    """The demo's one fault: `point` of `device` reads `normal`, then `tripped` once,
    `after` seconds after the daemon is ready, for `lasts` seconds."""

    device: str
    model_file: str
    event: str
    point: str
    normal: str
    tripped: str
    after: float
    lasts: float


TRIP = Trip("inverter-1", "sunspec_inverter.yaml", "inverter_fault", "operating_state",
            "mppt", "fault", after=3.0, lasts=2.0)  # fmt: skip
#: The capture rule the demo adds to the tripping event: short, so the demo stays quick
#: (the file is complete `after` seconds after the trip, then uploaded within a second).
CAPTURE: dict[str, Any] = {
    "points": ["ac_power", "ac_voltage_an", "ac_frequency", "dc_voltage"],
    "before": "10s",
    "after": "3s",
    "format": "csv",
    "param": "record",
}
#: The service account of the demo's OU (its secret key is made per run).
INTEGRATION = {"org_id": "o-demo", "access_key": "demo-access-key"}
SECRET_KEY_FILE = "integration.secret"  # noqa: S105 (a file name)


@dataclass(frozen=True, slots=True)
class SiteFiles:
    """Where the demo site was written and how its buses are reached."""

    root: Path
    config_path: Path
    plant_port: int
    mqtt_port: int
    http_port: int  # the emulator's HTTP integration side
    meter_link: MeterLink
    meter_port: int | None  # TCP port of the meters when not on a serial pty
    meter_serial: str | None  # the gateway's end of the pty pair


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def shipped_models() -> dict[str, str]:
    """The example device models shipped with the package: file name → YAML text."""
    folder = resources.files("gatewayd.sim.demo").joinpath("models")
    return {name: folder.joinpath(name).read_text(encoding="utf-8") for name in MODEL_FILES}


def demo_models() -> dict[str, str]:
    """The models the demo site uses: the shipped ones, the tripping event with `CAPTURE`."""
    models = shipped_models()
    document = yaml.safe_load(models[TRIP.model_file])
    rules = [rule for rule in document["events"] if rule["event"] == TRIP.event]
    if len(rules) != 1:
        raise ValueError(f"{TRIP.model_file}: expected one {TRIP.event!r} rule, not {len(rules)}")
    rules[0]["capture"] = dict(CAPTURE)
    header = f"# The shipped {TRIP.model_file}, with a capture on {TRIP.event} (gatewayd demo).\n"
    text = yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    return {**models, TRIP.model_file: header + text}


def site_document(
    *,
    plant_port: int,
    mqtt_port: int,
    http_port: int,
    meter_serial: str | None = None,
    meter_port: int | None = None,
) -> dict[str, Any]:
    """The demo's gatewayd.yaml as a dict: meters on `meter_serial`, else RTU over TCP.

    The service account's secret key is read from `SECRET_KEY_FILE` next to it."""
    if (meter_serial is None) == (meter_port is None):
        raise ValueError("give exactly one of meter_serial and meter_port")
    meters: dict[str, Any]
    if meter_serial is not None:
        meters = {"name": METER_BUS, "type": "rtu", "device": meter_serial, "baudrate": 19200,
                  "timeout": "500ms", "max_registers": 80}  # fmt: skip
    else:
        meters = {"name": METER_BUS, "type": "rtu_over_tcp", "host": "127.0.0.1",
                  "port": meter_port, "baudrate": 19200, "timeout": "500ms",
                  "max_registers": 80}  # fmt: skip
    return {
        "gateway": {
            "product_key": "gwProductKey",
            "device_key": "gwDeviceKey",
            "secure_mode": 2,
            "device_secret": "demo-gateway-secret",
            "broker": {"host": "127.0.0.1", "port": mqtt_port, "keepalive": "60s"},
        },
        "spool": {"path": "spool.db", "synchronous": "normal"},
        # Samples older than 2 s when sent go out as backfill: after even a short outage
        # the held-back data travels via resume, as it would after a long one in the field.
        "uplink": {"live_window": "2s", "reply_timeout": "10s"},
        "logging": {"level": "info", "format": "console"},
        # The emulator's HTTP side, on loopback: plain http (gatewayd check warns, rightly).
        "integration": {
            "http": {
                "address": f"http://127.0.0.1:{http_port}",
                **INTEGRATION,
                "secret_key_file": SECRET_KEY_FILE,
            }
        },
        "models_dir": "models",
        "buses": [
            {
                "name": PLANT_BUS,
                "type": "tcp",
                "host": "127.0.0.1",
                "port": plant_port,
                "timeout": "1s",
            },
            meters,
        ],
        "devices": [_device_entry(d) for d in DEMO_DEVICES],
    }


def _device_entry(device: DemoDevice) -> dict[str, Any]:
    """One device of the site: a secret, or a `register:` block for the gateway to use."""
    entry: dict[str, Any] = {
        "name": device.name,
        "bus": device.bus,
        "unit_id": device.unit_id,
        "model": device.model,
        "product_key": device.product_key,
        "device_key": device.device_key,
        "poll_interval": device.poll_interval,
    }
    if device.name in REGISTERED:
        entry["register"] = REGISTERED[device.name]
    else:
        entry["device_secret"] = f"demo-{device.device_key}-secret"
    if device.name in STATIC_ATTRIBUTES:
        entry["attributes"] = STATIC_ATTRIBUTES[device.name]
    return entry


def write_site(root: Path, *, meter_serial: str | None = None) -> SiteFiles:
    """Write gatewayd.yaml and the models into `root`, on free loopback ports.

    With `meter_serial` (the gateway's end of a pty pair) the meters are on Modbus RTU;
    without it they are on RTU over TCP, on a port of their own.
    """
    models = root / "models"
    models.mkdir(parents=True, exist_ok=True)
    for name, text in demo_models().items():
        (models / name).write_text(text, encoding="utf-8")
    # A secret file must not be open to group or others (the device-secret rules).
    secret = os.open(root / SECRET_KEY_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(secret, "w", encoding="utf-8") as handle:
        handle.write(secrets.token_hex(16) + "\n")
    plant_port, mqtt_port, http_port = free_port(), free_port(), free_port()
    meter_port = None if meter_serial is not None else free_port()
    document = site_document(
        plant_port=plant_port, mqtt_port=mqtt_port, http_port=http_port,
        meter_serial=meter_serial, meter_port=meter_port,
    )  # fmt: skip
    config_path = root / "gatewayd.yaml"
    header = "# Written by `gatewayd demo`: a simulated site on loopback; removed on exit.\n"
    config_path.write_text(header + yaml.safe_dump(document, sort_keys=False), encoding="utf-8")
    return SiteFiles(
        root=root,
        config_path=config_path,
        plant_port=plant_port,
        mqtt_port=mqtt_port,
        http_port=http_port,
        meter_link="rtu" if meter_serial is not None else "rtu_over_tcp",
        meter_port=meter_port,
        meter_serial=meter_serial,
    )
