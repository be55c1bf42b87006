"""What the emulated cloud knows: products, devices, topology and who is online.

Plain in-memory state with the rules EnOS applies to it (a disabled or deleted sub-device
goes offline, a gateway that disconnects takes its sub-devices offline, an online
sub-device cannot leave the topology). No I/O and no clock: the responder and the auth
check call it, tests inspect and change it directly (`emu.state`).
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from gatewayd.sim.emulator.config import EmulatorConfig, ThingModel

#: (productKey, deviceKey)
Key = tuple[str, str]


@dataclass
class Product:
    """A product: secret, node type, flags and its thing model."""

    product_key: str
    secret: str | None
    kind: str  # "gateway" | "sub_device" | "direct"
    dynamic_activation: bool
    ssl_only: bool
    model: ThingModel

    @property
    def is_gateway(self) -> bool:
        return self.kind == "gateway"


@dataclass
class Device:
    """A registered device. `secret is None` means "not activated yet"."""

    product_key: str
    device_key: str
    secret: str | None
    enabled: bool
    asset_id: str
    gateway: Key | None = None  # topology parent
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> Key:
        return (self.product_key, self.device_key)

    @property
    def activated(self) -> bool:
        return self.secret is not None


def default_asset_id(key: Key) -> str:
    """A stable, EnOS-looking asset id derived from the keys."""
    return hashlib.sha1(f"{key[0]}/{key[1]}".encode()).hexdigest()[:8]  # noqa: S324 - an id


class CloudState:
    """Devices, products, topology and online state of the emulated EnOS.

    `secret_factory` issues device secrets on dynamic activation (inject a deterministic
    one in tests).
    """

    def __init__(
        self,
        config: EmulatorConfig,
        *,
        secret_factory: Callable[[Key], str] | None = None,
    ) -> None:
        self.online_cap = config.options.online_subdevice_cap
        self.max_topology_size = config.options.max_topology_size
        self._secret_factory = secret_factory or (lambda _key: secrets.token_urlsafe(15))
        self.products: dict[str, Product] = {
            p.product_key: Product(
                product_key=p.product_key,
                secret=p.product_secret,
                kind=p.kind,
                dynamic_activation=p.dynamic_activation,
                ssl_only=p.ssl_only,
                model=config.models[p.model] if p.model is not None else ThingModel(),
            )
            for p in config.products
        }
        self.devices: dict[Key, Device] = {}
        for spec in config.devices:
            key = (spec.product_key, spec.device_key)
            self.devices[key] = Device(
                product_key=spec.product_key,
                device_key=spec.device_key,
                secret=spec.device_secret,
                enabled=spec.enabled,
                asset_id=spec.asset_id or default_asset_id(key),
                gateway=spec.gateway_keys,
            )
        # gateway -> sub-devices logged in through it, in login order (dict as ordered set)
        self._online: dict[Key, dict[Key, None]] = {}

    # --- lookups ---------------------------------------------------------------------------

    def device(self, key: Key) -> Device | None:
        return self.devices.get(key)

    def product(self, product_key: str) -> Product | None:
        return self.products.get(product_key)

    def model_of(self, key: Key) -> ThingModel:
        product = self.products.get(key[0])
        return product.model if product is not None else ThingModel()

    def sub_devices_of(self, gateway: Key) -> list[Key]:
        """The gateway's topology, in registration order."""
        return [d.key for d in self.devices.values() if d.gateway == gateway]

    def online_sub_devices(self, gateway: Key) -> list[Key]:
        """Sub-devices logged in through `gateway`, in login order."""
        return list(self._online.get(gateway, {}))

    def gateway_of_online(self, sub: Key) -> Key | None:
        """The gateway `sub` is logged in through, if any."""
        for gateway, subs in self._online.items():
            if sub in subs:
                return gateway
        return None

    def is_online(self, sub: Key, via: Key | None = None) -> bool:
        gateway = self.gateway_of_online(sub)
        return gateway is not None and (via is None or gateway == via)

    # --- changes ---------------------------------------------------------------------------

    def set_online(self, gateway: Key, sub: Key) -> None:
        """Log `sub` in through `gateway` (moving it from another gateway if needed)."""
        self.set_offline(sub)
        self._online.setdefault(gateway, {})[sub] = None

    def set_offline(self, sub: Key) -> bool:
        """Log `sub` out wherever it is online; True if it was."""
        for subs in self._online.values():
            if sub in subs:
                del subs[sub]
                return True
        return False

    def gateway_gone(self, gateway: Key) -> list[Key]:
        """The gateway's connection ended: every sub-device it logged in goes offline."""
        return list(self._online.pop(gateway, {}))

    def set_enabled(self, key: Key, enabled: bool) -> None:
        """Enable or disable a device; a disabled device goes offline at once."""
        self._require(key).enabled = enabled
        if not enabled:
            self.set_offline(key)

    def delete_device(self, key: Key) -> None:
        """Delete a device: offline, out of every topology, unknown from now on."""
        self._require(key)
        self.set_offline(key)
        self.gateway_gone(key)
        del self.devices[key]
        for device in self.devices.values():
            if device.gateway == key:
                device.gateway = None

    def activate(self, key: Key) -> str:
        """Dynamic activation: issue and store a device secret; returns it."""
        device = self._require(key)
        device.secret = self._secret_factory(key)
        return device.secret

    def _require(self, key: Key) -> Device:
        device = self.devices.get(key)
        if device is None:
            raise KeyError(f"no device {key[0]}/{key[1]}")
        return device

    def __iter__(self) -> Iterator[Device]:
        return iter(self.devices.values())
