"""The loop shared by the per-sub-device syncs (attributes, tags): pass over due devices.

A subclass says which devices it serves (`_serves`), how long it may sleep when nothing is
scheduled (`_idle_s`) and what one pass does (`sync`, which ends by calling
`self._schedule.done`). When a device is due is `PassSchedule`'s pure rule.
"""

from __future__ import annotations

import asyncio
import contextlib

from gatewayd.clock import Clock
from gatewayd.config.models import Config, DeviceConfig
from gatewayd.enos.session import GatewaySession
from gatewayd.uplink.passes import PassSchedule
from gatewayd.uplink.subdevices import SubDevice, SubDeviceRegistry


class DevicePasses:
    """Runs `sync` for each logged-in sub-device when its pass is due, until cancelled."""

    def __init__(self, config: Config, *, clock: Clock) -> None:
        self._config = config
        self._clock = clock
        self._wake = asyncio.Event()
        self._schedule = PassSchedule()
        #: Completed passes per device name (status, tests).
        self.passes: dict[str, int] = {}

    def reconfigure(self, config: Config) -> None:
        """A reload: what should be in the cloud may have changed; every device is due now."""
        self._config = config
        self._schedule.reset()
        self._wake.set()

    def wake(self) -> None:
        """Sub-devices may have logged in: look for passes due now."""
        self._wake.set()

    async def run(self, session: GatewaySession, registry: SubDeviceRegistry) -> None:
        """Pass over due devices until cancelled (the session's task group ends it)."""
        while True:
            self._wake.clear()
            for device in list(registry):
                if self._due(device):
                    await self.sync(session, device)
            names = [d.name for d in registry if d.publishable]
            sleep_s = self._schedule.sleep_s(names, self._clock.monotonic(), self._idle_s())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(sleep_s):
                    await self._wake.wait()

    async def sync(self, session: GatewaySession, device: SubDevice) -> None:
        """One pass over `device`."""
        raise NotImplementedError

    def _serves(self, config: DeviceConfig) -> bool:
        """Whether this sync has anything to do for a device so configured."""
        return True

    def _idle_s(self) -> float:
        """The longest sleep when no pass is scheduled sooner (logins wake the loop)."""
        raise NotImplementedError

    def _config_of(self, name: str) -> DeviceConfig | None:
        return next((d for d in self._config.devices if d.name == name), None)

    def _due(self, device: SubDevice) -> bool:
        config = self._config_of(device.name)
        if config is None or not device.publishable or not self._serves(config):
            return False
        return self._schedule.due(device.name, device.online_since_ms, self._clock.monotonic())

    def _pass_done(self, device: SubDevice, login_ms: int, wait_s: float) -> None:
        """Record a finished pass for login `login_ms`; the next one in `wait_s`."""
        self._schedule.done(device.name, login_ms, self._clock.monotonic() + wait_s)
        self.passes[device.name] = self.passes.get(device.name, 0) + 1
