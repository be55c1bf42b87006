"""Which configured device a cloud command addresses, and whether it may be acted on now.

A command's topic carries the EnOS product/device keys of its target. It is acted on only
for a sub-device that this gateway's configuration has, that is enabled (in the config and
in the cloud), not deleted by the cloud, logged in on the current session, and whose bus
is being polled. Every other case is a `Refusal` with a code >= 2000 and the reason, and
nothing is written or read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from gatewayd.commands.validate import Refusal
from gatewayd.config.models import Config, DeviceConfig, DeviceModel
from gatewayd.enos.codes import ReplyCode
from gatewayd.modbus.poller import BusPoller
from gatewayd.uplink.subdevices import SubDeviceRegistry


@dataclass(frozen=True, slots=True)
class Target:
    """A device a command may act on, with what acting on it needs."""

    device: DeviceConfig
    model: DeviceModel
    poller: BusPoller
    #: Worst-case seconds of one Modbus request with its retries (deadline budgeting).
    request_budget: float


def resolve_target(
    product_key: str,
    device_key: str,
    *,
    config: Config,
    registry: SubDeviceRegistry | None,
    pollers: Mapping[str, BusPoller],
) -> Target | Refusal:
    """The device addressed by (`product_key`, `device_key`), or why it cannot be acted on."""
    who = f"{product_key}/{device_key}"
    gateway = config.gateway
    if (product_key, device_key) == (gateway.product_key, gateway.device_key):
        return Refusal(
            who,
            ReplyCode.SUB_DEVICE_UNKNOWN,
            "the gateway itself has no measurepoints or services; address a sub-device",
        )
    device = next(
        (d for d in config.devices if (d.product_key, d.device_key) == (product_key, device_key)),
        None,
    )
    if device is None:
        return Refusal(who, ReplyCode.SUB_DEVICE_UNKNOWN, "not a sub-device of this gateway")
    if not device.enabled:
        return Refusal(
            device.name, ReplyCode.SUB_DEVICE_DISABLED, "disabled in the gateway configuration"
        )
    sub = registry.by_keys(product_key, device_key) if registry is not None else None
    if sub is None:
        return Refusal(
            device.name, ReplyCode.SUB_DEVICE_NOT_LOGGED_IN, "not known to the EnOS session yet"
        )
    if sub.deleted:
        return Refusal(device.name, ReplyCode.SUB_DEVICE_DISABLED, "deleted by the cloud")
    if not sub.enabled:
        return Refusal(
            device.name, ReplyCode.SUB_DEVICE_DISABLED, "disabled by the cloud (combine.disable)"
        )
    if not sub.online:
        reason = "not logged in" + (f" ({sub.last_error})" if sub.last_error else "")
        return Refusal(device.name, ReplyCode.SUB_DEVICE_NOT_LOGGED_IN, reason)
    model = config.models.get(device.model)
    poller = pollers.get(device.bus)
    if model is None or poller is None or device.name not in poller.devices:
        return Refusal(
            device.name, ReplyCode.DEVICE_OFFLINE, f"bus {device.bus!r} is not being polled"
        )
    timeout = device.timeout if device.timeout is not None else poller.bus.timeout
    return Target(device, model, poller, request_budget=timeout * (poller.bus.retries + 1))
