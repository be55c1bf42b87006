"""Which sub-devices EnOS knows, which are logged in on this session, which the cloud disabled."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from gatewayd.config.models import Config


@dataclass
class SubDevice:
    """One Modbus device as an EnOS sub-device, with its state on the current session."""

    name: str
    product_key: str
    device_key: str
    secret: str
    enabled: bool = True  # False after combine.disable (until combine.enable)
    deleted: bool = False  # True after combine.delete: never published again
    online: bool = False  # logged in on the current MQTT session
    # Wall time (epoch ms) this device's current login completed: only samples taken
    # from then on may go out live (post.batch); older ones were taken while it was
    # offline and go out as resume (PROTOCOL.md §6, item 3).
    online_since_ms: int = 0
    last_error: str = ""  # why the last login failed, for status and logs
    # When (clock.monotonic) EnOS last refused this device's login: it is asked again only
    # after the re-login interval, not on every wake-up (None: not refused).
    refused_at: float | None = None

    @property
    def keys(self) -> tuple[str, str]:
        return (self.product_key, self.device_key)

    def logged_in(self, now_ms: int) -> None:
        """EnOS accepted this device's login at `now_ms` (wall clock, epoch ms)."""
        self.online = True
        self.online_since_ms = now_ms
        self.last_error = ""
        self.refused_at = None

    def takes_live(self, ts_ms: int) -> bool:
        """A sample taken at `ts_ms` may go out live: the device is logged in now and was
        already logged in (on this session) when the sample was taken."""
        return self.publishable and ts_ms >= self.online_since_ms

    @property
    def publishable(self) -> bool:
        """Data for this device may go out live (post.batch needs it logged in)."""
        return self.online and self.enabled and not self.deleted

    @property
    def wanted(self) -> bool:
        """This device should be logged in (enabled and not deleted by the cloud)."""
        return self.enabled and not self.deleted


class SubDeviceRegistry:
    """Sub-devices by gatewayd name and by EnOS keys."""

    def __init__(self, devices: Iterable[SubDevice]) -> None:
        self._by_name = {d.name: d for d in devices}
        self._by_keys = {d.keys: d for d in self._by_name.values()}

    @classmethod
    def from_config(cls, config: Config) -> SubDeviceRegistry:
        """Every enabled device of the config (the loader has resolved secret files)."""
        return cls(
            SubDevice(
                name=d.name,
                product_key=d.product_key,
                device_key=d.device_key,
                secret=d.device_secret.get_secret_value() if d.device_secret else "",
            )
            for d in config.devices
            if d.enabled
        )

    def __iter__(self) -> Iterator[SubDevice]:
        return iter(self._by_name.values())

    def __len__(self) -> int:
        return len(self._by_name)

    def get(self, name: str) -> SubDevice | None:
        return self._by_name.get(name)

    def by_keys(self, product_key: str, device_key: str) -> SubDevice | None:
        return self._by_keys.get((product_key, device_key))

    def add(self, device: SubDevice) -> None:
        """Add or replace a sub-device (a reload changed its keys or secret)."""
        old = self._by_name.pop(device.name, None)
        if old is not None:
            self._by_keys.pop(old.keys, None)
        self._by_name[device.name] = device
        self._by_keys[device.keys] = device

    def remove(self, name: str) -> None:
        """Forget a sub-device the configuration no longer has."""
        old = self._by_name.pop(name, None)
        if old is not None:
            self._by_keys.pop(old.keys, None)

    def mark_all_offline(self) -> None:
        """The gateway connection dropped: EnOS logs every sub-device out with it."""
        for device in self._by_name.values():
            device.online = False

    def online_count(self) -> int:
        return sum(1 for d in self._by_name.values() if d.online)
