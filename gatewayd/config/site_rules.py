"""Checks across the sections of `gatewayd.yaml`: names, references, identities, secrets.

Works on the buses and devices that validate on their own, so a broken device does not
hide a duplicate name two devices further down.
"""

from __future__ import annotations

from typing import Any

from pydantic import TypeAdapter, ValidationError

from gatewayd.config.errors import ConfigIssue, DataPath
from gatewayd.config.model_rules import valid_items
from gatewayd.config.models import BusConfig, DeviceConfig, GatewayConfig, SerialBus
from gatewayd.config.suggest import hint_for
from gatewayd.config.yamlload import YamlDocument

_BUS_ADAPTER: TypeAdapter[Any] = TypeAdapter(BusConfig)


def valid_gateway(raw: object) -> GatewayConfig | None:
    """The gateway section if it validates on its own."""
    try:
        return GatewayConfig.model_validate(raw)
    except ValidationError:
        return None


def valid_buses(raw: object) -> list[tuple[int, Any]]:
    """(index, bus) for each bus that validates on its own."""
    return list(valid_items(raw, _BUS_ADAPTER))


def valid_devices(raw: object) -> list[tuple[int, DeviceConfig]]:
    """(index, device) for each device that validates on its own."""
    return list(valid_items(raw, DeviceConfig))


def check_site(doc: YamlDocument, data: dict[str, Any]) -> list[ConfigIssue]:
    """Duplicate names and identities, undefined buses, missing secrets."""
    issues: list[ConfigIssue] = []

    def add(path: DataPath, message: str, hint: str | None = None) -> None:
        issues.append(doc.issue(path, message, hint))

    def first_at(path: DataPath) -> str:
        return f"first at line {doc.position(path)[0]}"

    buses = valid_buses(data.get("buses"))
    bus_names: dict[str, int] = {}
    ports: dict[str, int] = {}
    bus_at = dict(buses)
    for index, bus in buses:
        seen = bus_names.setdefault(bus.name, index)
        if seen != index:
            add(
                ("buses", index, "name"),
                f"duplicate bus name '{bus.name}'",
                first_at(("buses", seen, "name")),
            )
        if isinstance(bus, SerialBus):
            seen = ports.setdefault(bus.device, index)
            if seen != index:
                add(
                    ("buses", index, "device"),
                    f"serial port '{bus.device}' is already used by bus '{bus_at[seen].name}'",
                    "put both devices on one bus",
                )

    # Undefined-bus hints name every bus written, even one that failed validation.
    written_buses = (
        [
            b["name"]
            for b in data.get("buses") or []
            if isinstance(b, dict) and isinstance(b.get("name"), str)
        ]
        if isinstance(data.get("buses"), list)
        else []
    )
    device_names: dict[str, int] = {}
    identities: dict[tuple[str, str], int] = {}
    unit_ids: dict[tuple[str, int], int] = {}
    devices = valid_devices(data.get("devices"))
    by_index = dict(devices)
    for index, device in devices:
        at: DataPath = ("devices", index)
        seen = device_names.setdefault(device.name, index)
        if seen != index:
            add(
                (*at, "name"),
                f"duplicate device name '{device.name}'",
                first_at(("devices", seen, "name")),
            )
        identity = (device.product_key, device.device_key)
        seen = identities.setdefault(identity, index)
        if seen != index:
            add(
                (*at, "device_key"),
                f"duplicate EnOS identity {device.product_key}/{device.device_key}",
                f"also used by device '{by_index[seen].name}'",
            )
        if device.bus not in written_buses:
            add(
                (*at, "bus"),
                f"unknown bus '{device.bus}'",
                hint_for(device.bus, written_buses, known="defined buses"),
            )
        else:
            seen = unit_ids.setdefault((device.bus, device.unit_id), index)
            if seen != index:
                add(
                    (*at, "unit_id"),
                    f"unit_id {device.unit_id} is already used on bus "
                    f"'{device.bus}' by device '{by_index[seen].name}'",
                )
    _check_secrets(data, add)
    return issues


def _given(section: dict[str, Any], key: str) -> bool:
    return section.get(key) is not None


def _check_secrets(data: dict[str, Any], add: Any) -> None:
    """Secret presence, on the raw data: a device broken elsewhere still gets told."""
    gateway = data.get("gateway")
    if isinstance(gateway, dict):
        for kind in ("device", "product"):
            if _given(gateway, f"{kind}_secret") and _given(gateway, f"{kind}_secret_file"):
                add(
                    ("gateway", f"{kind}_secret_file"),
                    f"give {kind}_secret or {kind}_secret_file, not both",
                )
        mode = gateway.get("secure_mode", 2)
        needed = {2: "device", 3: "product"}.get(mode) if isinstance(mode, int) else None
        if needed and not (
            _given(gateway, f"{needed}_secret") or _given(gateway, f"{needed}_secret_file")
        ):
            why = "signs in" if needed == "device" else "activates"
            add(
                ("gateway", f"{needed}_secret"),
                f"missing: secure_mode {mode} {why} with the {needed} secret",
                f"set {needed}_secret or {needed}_secret_file",
            )
    devices = data.get("devices")
    for index, device in enumerate(devices if isinstance(devices, list) else []):
        if not isinstance(device, dict):
            continue
        at: DataPath = ("devices", index)
        inline, file = _given(device, "device_secret"), _given(device, "device_secret_file")
        if inline and file:
            add((*at, "device_secret_file"), "give device_secret or device_secret_file, not both")
        elif not (inline or file) and device.get("enabled", True) is not False:
            add(
                (*at, "device_secret"),
                "missing: an enabled device logs in to EnOS with its device secret",
                "set device_secret or device_secret_file",
            )
