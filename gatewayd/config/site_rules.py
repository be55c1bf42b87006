"""Checks across the sections of `gatewayd.yaml`: names, references, identities, secrets."""

from __future__ import annotations

from typing import Any

from gatewayd.config.errors import ConfigIssue, DataPath
from gatewayd.config.suggest import hint_for
from gatewayd.config.yamlload import YamlDocument


def _items(data: dict[str, Any], section: str) -> list[tuple[int, dict[str, Any]]]:
    """(index, mapping) for each mapping in the list `data[section]`."""
    raw = data.get(section)
    if not isinstance(raw, list):
        return []
    return [(i, item) for i, item in enumerate(raw) if isinstance(item, dict)]


def _text(item: dict[str, Any], key: str) -> str | None:
    value = item.get(key)
    return value if isinstance(value, str) else None


def check_site(doc: YamlDocument, data: dict[str, Any]) -> list[ConfigIssue]:
    """Duplicate names and identities, undefined buses, missing secrets.

    Works on the raw values (where they have the right type), so a device with a bad
    poll interval is still checked for an undefined bus in the same run.
    """
    issues: list[ConfigIssue] = []

    def add(path: DataPath, message: str, hint: str | None = None) -> None:
        issues.append(doc.issue(path, message, hint))

    def first_at(path: DataPath) -> str:
        return f"first at line {doc.position(path)[0]}"

    bus_names: dict[str, int] = {}
    ports: dict[str, int] = {}
    for index, bus in _items(data, "buses"):
        name = _text(bus, "name")
        if name is not None:
            seen = bus_names.setdefault(name, index)
            if seen != index:
                add(
                    ("buses", index, "name"),
                    f"duplicate bus name '{name}'",
                    first_at(("buses", seen, "name")),
                )
        port = _text(bus, "device")
        if port is not None and bus.get("type") == "rtu":
            seen = ports.setdefault(port, index)
            if seen != index:
                add(
                    ("buses", index, "device"),
                    f"serial port '{port}' is already used by bus "
                    f"'{_text(data['buses'][seen], 'name')}'",
                    "put both devices on one bus",
                )

    device_names: dict[str, int] = {}
    identities: dict[tuple[str, str], int] = {}
    unit_ids: dict[tuple[str, int], int] = {}
    for index, device in _items(data, "devices"):
        at: DataPath = ("devices", index)
        name = _text(device, "name")
        if name is not None:
            seen = device_names.setdefault(name, index)
            if seen != index:
                add(
                    (*at, "name"),
                    f"duplicate device name '{name}'",
                    first_at(("devices", seen, "name")),
                )
        product_key, device_key = _text(device, "product_key"), _text(device, "device_key")
        if product_key is not None and device_key is not None:
            seen = identities.setdefault((product_key, device_key), index)
            if seen != index:
                add(
                    (*at, "device_key"),
                    f"duplicate EnOS identity {product_key}/{device_key}",
                    f"also used by devices[{seen}] at line {doc.position(('devices', seen))[0]}",
                )
        bus_name = _text(device, "bus")
        if bus_name is None:
            continue
        if bus_name not in bus_names:
            add(
                (*at, "bus"),
                f"unknown bus '{bus_name}'",
                hint_for(bus_name, bus_names, known="defined buses"),
            )
            continue
        unit_id = device.get("unit_id", 1)
        if isinstance(unit_id, int) and not isinstance(unit_id, bool):
            seen = unit_ids.setdefault((bus_name, unit_id), index)
            if seen != index:
                add(
                    (*at, "unit_id"),
                    f"unit_id {unit_id} is already used on bus '{bus_name}'",
                    f"by devices[{seen}] at line {doc.position(('devices', seen))[0]}",
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
    _check_integration_secret(data, add)
    devices = data.get("devices")
    for index, device in enumerate(devices if isinstance(devices, list) else []):
        if not isinstance(device, dict):
            continue
        at: DataPath = ("devices", index)
        inline, file = _given(device, "device_secret"), _given(device, "device_secret_file")
        registers = "register" in device
        if inline and file:
            add((*at, "device_secret_file"), "give device_secret or device_secret_file, not both")
        elif registers and (inline or file):
            add(
                (*at, "register"),
                "a device with a secret is registered already",
                "remove 'register', or the secret to have the gateway register it",
            )
        elif not (inline or file) and not registers and device.get("enabled", True) is not False:
            add(
                (*at, "device_secret"),
                "missing: an enabled device logs in to EnOS with its device secret",
                "set device_secret or device_secret_file",
            )


def _check_integration_mqtt_secrets(data: dict[str, Any], add: Any) -> None:
    """Each `integration.mqtt` product signs its channel with its product secret, given once."""
    integration = data.get("integration")
    mqtt = integration.get("mqtt") if isinstance(integration, dict) else None
    products = mqtt.get("products") if isinstance(mqtt, dict) else None
    for pk, product in (products or {}).items() if isinstance(products, dict) else ():
        if not isinstance(product, dict):
            continue
        at: DataPath = ("integration", "mqtt", "products", pk)
        inline, file = _given(product, "product_secret"), _given(product, "product_secret_file")
        if inline and file:
            add(
                (*at, "product_secret_file"), "give product_secret or product_secret_file, not both"
            )
        elif not (inline or file):
            add(
                at,
                f"missing: the integration channel of product '{pk}' signs with its product secret",
                "set product_secret or product_secret_file",
            )


def _check_integration_secret(data: dict[str, Any], add: Any) -> None:
    """`integration.http` needs its service account's secret key, given once."""
    _check_integration_mqtt_secrets(data, add)
    integration = data.get("integration")
    http = integration.get("http") if isinstance(integration, dict) else None
    if not isinstance(http, dict):
        return
    at: DataPath = ("integration", "http")
    inline, file = _given(http, "secret_key"), _given(http, "secret_key_file")
    if inline and file:
        add((*at, "secret_key_file"), "give secret_key or secret_key_file, not both")
    elif not (inline or file):
        add(
            (*at, "secret_key"),
            "missing: the token service signs with the service account's secret key",
            "set secret_key or secret_key_file",
        )
