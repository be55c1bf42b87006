"""Dynamic registration of sub-devices (`thing.device.register`, enos-protocol.md §3.4 #7).

A device configured with `register:` and no secret is registered by the gateway under
its configured device key; EnOS returns the device secret, which is kept 0600 in the
state directory (`registered/PK&DK.json`, written atomically) and never logged. Then
topology add and login proceed as for configured devices.

Safe against a restart or `kill -9` at any point, without registering twice: the device
key is always the configured one, so a second request for a device EnOS already has is
refused with 702, never a second device; and a `.pending` file written (fsync) before
the request leaves tells, after a crash, that a 702 is our own earlier registration
whose reply was lost (EnOS gives no way to read a secret back), so the error says so.

Outcomes: 702 → one error telling the engineer to configure the existing device's
secret; 714 (key generation failed) and no reply → tried again after `RETRY_S`; 739
(the product's device quota) → reported, tried again after `QUOTA_RETRY_S`.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from gatewayd.config.models import Config, DeviceConfig
from gatewayd.enos import messages
from gatewayd.enos.ids import IdGenerator
from gatewayd.enos.session import GatewaySession, ReplyTimeout
from gatewayd.uplink.sentstate import device_id
from gatewayd.uplink.subdevices import SubDevice, SubDeviceRegistry

log = structlog.get_logger(__name__)

DIRECTORY = "registered"
KEY_EXISTS = 702
KEY_GENERATION_FAILED = 714
QUOTA = 739
RETRY_S = 60.0
QUOTA_RETRY_S = 3600.0


def _write_private(path: Path, text: str) -> None:
    """Write `text` to `path` atomically with mode 0600 (temp file, fsync, rename)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    temp = path.with_name(path.name + ".tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    temp.replace(path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # the rename itself survives a power cut
    finally:
        os.close(directory)


@dataclass(frozen=True)
class Registered:
    """What EnOS returned for a registered sub-device."""

    product_key: str
    device_key: str
    device_secret: str
    asset_id: str


class RegistrationStore:
    """Registered devices' secrets and pending registrations, under the state directory."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def _path(self, product_key: str, device_key: str, suffix: str) -> Path:
        return self.directory / f"{device_id(product_key, device_key)}{suffix}"

    def load(self, product_key: str, device_key: str) -> Registered | None:
        """The stored registration, or None (none yet, or an unreadable file: logged)."""
        path = self._path(product_key, device_key, ".json")
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            return Registered(
                doc["productKey"], doc["deviceKey"], doc["deviceSecret"], doc.get("assetId", "")
            )
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.error("registration file is unusable", path=str(path), reason=str(exc))
            return None

    def save(self, registered: Registered) -> None:
        """Keep the secret (0600), then forget the pending mark."""
        doc = {
            "productKey": registered.product_key,
            "deviceKey": registered.device_key,
            "deviceSecret": registered.device_secret,
            "assetId": registered.asset_id,
        }
        _write_private(self._path(registered.product_key, registered.device_key, ".json"),
                       json.dumps(doc))  # fmt: skip
        self._path(registered.product_key, registered.device_key, ".pending").unlink(
            missing_ok=True
        )

    def mark_pending(self, product_key: str, device_key: str) -> bool:
        """Note that a request is about to leave; True if an earlier one left unanswered."""
        path = self._path(product_key, device_key, ".pending")
        earlier = path.exists()
        _write_private(path, json.dumps({"sent_at_ms": int(time.time() * 1000)}))
        return earlier

    def pending(self, product_key: str, device_key: str) -> bool:
        """An earlier request may have registered the device (its reply was lost)."""
        return self._path(product_key, device_key, ".pending").exists()


def register_params(device: DeviceConfig) -> dict[str, Any]:
    """One `thing.device.register` entry for `device` (§3.4)."""
    assert device.registration is not None
    entry: dict[str, Any] = {
        "productKey": device.product_key,
        "deviceKey": device.device_key,
        "deviceName": {"defaultValue": device.registration.name},
        "timezone": device.registration.timezone,
    }
    if device.registration.description:
        entry["deviceDesc"] = device.registration.description
    if device.registration.attributes:
        entry["deviceAttributes"] = dict(device.registration.attributes)
    return entry


def registered_of(reply: messages.Reply, device: DeviceConfig) -> Registered | None:
    """The entry of `device` in a 200 reply's data, if it carries a secret."""
    entries = reply.data if isinstance(reply.data, list) else [reply.data]
    for entry in entries:
        if (
            isinstance(entry, dict)
            and entry.get("deviceKey") == device.device_key
            and isinstance(entry.get("deviceSecret"), str)
            and entry["deviceSecret"]
        ):
            asset = entry.get("assetId")
            return Registered(device.product_key, device.device_key, entry["deviceSecret"],
                              asset if isinstance(asset, str) else "")  # fmt: skip
    return None


class Registration:
    """Registers the configured `register:` devices that have no secret yet."""

    def __init__(
        self,
        store: RegistrationStore,
        *,
        ids: IdGenerator,
        monotonic: Callable[[], float],
        on_secret: Callable[[str], None],
    ) -> None:
        self._store = store
        self._ids = ids
        self._monotonic = monotonic
        self._on_secret = on_secret  # masks the secret in every log line
        self._retry_at: dict[str, float] = {}  # device name -> when to ask again
        self._refused: set[str] = set()  # 702: only a config change helps

    def restore(self, config: Config, registry: SubDeviceRegistry) -> None:
        """Give registered devices their stored secrets (at start and after a reload)."""
        for device in config.devices:
            sub = registry.get(device.name)
            if device.registration is None or sub is None or sub.secret:
                continue
            stored = self._store.load(device.product_key, device.device_key)
            if stored is not None:
                self._on_secret(stored.device_secret)
                sub.secret = stored.device_secret

    async def run(
        self, session: GatewaySession, config: Config, registry: SubDeviceRegistry
    ) -> None:
        """Register every device still without a secret whose retry time has come."""
        self.restore(config, registry)
        now = self._monotonic()
        for device in config.devices:
            sub = registry.get(device.name)
            if device.registration is None or sub is None or sub.secret:
                continue
            if device.name in self._refused or now < self._retry_at.get(device.name, 0.0):
                continue
            await self._register(session, config, device, sub)

    async def _register(
        self, session: GatewaySession, config: Config, device: DeviceConfig, sub: SubDevice
    ) -> None:
        gw = config.gateway
        request = messages.device_register(
            gw.product_key, gw.device_key, id=self._ids.next_id(), entries=[register_params(device)]
        )
        earlier = self._store.mark_pending(device.product_key, device.device_key)
        try:
            raw = await session.request(request.topic, request.id, request.payload)
            reply = messages.decode_reply(raw.payload)
        except (ReplyTimeout, messages.MalformedMessage) as exc:
            self._later(device, RETRY_S, f"no usable reply: {exc}")
            return
        if reply.ok and (registered := registered_of(reply, device)) is not None:
            # First thing after the reply: nothing else may run before the secret is safe.
            self._store.save(registered)
            self._on_secret(registered.device_secret)
            sub.secret = registered.device_secret
            log.info("sub-device registered", device=device.name, asset_id=registered.asset_id)
            return
        if reply.code == KEY_EXISTS:
            self._refused.add(device.name)
            sub.last_error = "registration refused: device key exists"
            cause = (
                "an earlier registration by this gateway was interrupted before its reply"
                " was kept, and EnOS cannot return the secret again"
                if earlier
                else "EnOS already has a device with this key"
            )
            log.error(
                "cannot register the sub-device: its device key exists in EnOS (702);"
                " configure the existing device's secret (device_secret_file) and remove"
                " 'register', or delete the device in EnOS and restart",
                device=device.name, device_key=device.device_key, cause=cause,
            )  # fmt: skip
            return
        if reply.code == QUOTA:
            self._later(device, QUOTA_RETRY_S, "the product's device quota is used up (739)")
            return
        if reply.code == KEY_GENERATION_FAILED or reply.ok:
            self._later(device, RETRY_S, f"EnOS answered {reply.code} {reply.message}".strip())
            return
        self._refused.add(device.name)
        sub.last_error = f"registration refused: {reply.code}"
        log.error("sub-device registration refused", device=device.name, code=reply.code,
                  message=reply.message)  # fmt: skip

    def _later(self, device: DeviceConfig, after_s: float, why: str) -> None:
        self._retry_at[device.name] = self._monotonic() + after_s
        log.warning("sub-device registration failed; trying again later", device=device.name,
                    reason=why, retry_s=after_s)  # fmt: skip

    def reconfigure(self) -> None:
        """A reload may have fixed what was refused: ask again."""
        self._refused.clear()
        self._retry_at.clear()
