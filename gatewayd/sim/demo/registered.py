"""What the emulated cloud holds about the devices the gateway registered itself.

A device with a `register:` block is unknown to the cloud until the gateway registers it;
the demo shows that it arrived: the keys it was registered under, the asset id the cloud
assigned, whether it is bound to the gateway, and its attributes as the cloud keeps them
(the registration's own, then what `thing.attribute.update` sent). Pure: it reads the
emulator's state, it changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gatewayd.config.models import Config
from gatewayd.samples import Value
from gatewayd.sim.emulator.state import CloudState

__all__ = ["RegisteredDevice", "registered_devices"]


@dataclass(frozen=True, slots=True)
class RegisteredDevice:
    """One `register:` device as the cloud sees it (`asset_id` None: not registered yet)."""

    name: str
    product_key: str
    device_key: str
    asset_id: str | None
    bound: bool  # in the gateway's topology
    attributes: tuple[tuple[str, Value], ...]  # sorted by name

    def to_json(self) -> dict[str, Any]:
        """The summary's JSON shape."""
        return {
            "product_key": self.product_key,
            "device_key": self.device_key,
            "asset_id": self.asset_id,
            "bound": self.bound,
            "attributes": dict(self.attributes),
        }


def registered_devices(config: Config, state: CloudState) -> tuple[RegisteredDevice, ...]:
    """Each configured `register:` device, in config order, as the cloud holds it now."""
    gateway = (config.gateway.product_key, config.gateway.device_key)
    found: list[RegisteredDevice] = []
    for device in config.devices:
        if device.registration is None:
            continue
        cloud = state.device((device.product_key, device.device_key))
        found.append(
            RegisteredDevice(
                name=device.name,
                product_key=device.product_key,
                device_key=device.device_key,
                asset_id=cloud.asset_id if cloud is not None else None,
                bound=cloud is not None and cloud.gateway == gateway,
                attributes=tuple(sorted(cloud.attributes.items())) if cloud is not None else (),
            )
        )
    return tuple(found)
