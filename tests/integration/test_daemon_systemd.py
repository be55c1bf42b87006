"""`gatewayd run` under a real NOTIFY_SOCKET: READY, STATUS, WATCHDOG, RELOADING, STOPPING."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from gatewayd.config.loader import load_config
from gatewayd.config.models import DeviceModel
from gatewayd.sim.device import DeviceSimulator
from gatewayd.sim.emulator import EmulatorConfig, EnosEmulator
from tests.integration.modbus_fixtures import still_units
from tests.integration.test_run_e2e import METER_MODEL, write_site
from tests.support import async_wait_until, free_port


class NotifySocket:
    """A bound AF_UNIX datagram socket collecting sd_notify messages in arrival order."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.messages: list[str] = []
        self._task = asyncio.create_task(self._pump())

    async def _pump(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            data = await loop.sock_recv(self.sock, 4096)
            self.messages.append(data.decode())

    def states(self) -> list[str]:
        """Messages other than the periodic STATUS and WATCHDOG ones."""
        return [
            m for m in self.messages if not m.startswith(("STATUS=", "WATCHDOG=")) or "\n" in m
        ]

    def close(self) -> None:
        self._task.cancel()
        self.sock.close()


def add_third_meter(path: Path) -> None:
    site = yaml.safe_load(path.read_text())
    extra = dict(site["devices"][-1], name="meter-3", unit_id=3, device_key="meter3",
                 device_secret="secret3")  # fmt: skip
    site["devices"].append(extra)
    path.write_text(yaml.safe_dump(site, sort_keys=False))


@pytest.fixture
async def plant(tmp_path: Path) -> AsyncIterator[tuple[Path, EnosEmulator]]:
    """Three meters on a simulator; the site file lists two, the cloud knows all three."""
    model = DeviceModel.model_validate(METER_MODEL)
    async with DeviceSimulator(still_units(model, 1, 2, 3)) as sim:
        path = write_site(tmp_path, sim.port, free_port())
        full = tmp_path / "full.yaml"
        full.write_text(path.read_text())
        add_third_meter(full)
        config = load_config(full)
        emulator = EnosEmulator(
            EmulatorConfig.from_gateway_config(config), port=config.gateway.broker.port
        )
        await emulator.start()
        try:
            yield path, emulator
        finally:
            await emulator.stop()


async def test_notify_protocol_reload_and_stop(plant: tuple[Path, EnosEmulator]) -> None:
    """READY first; a bad reload keeps running; a good one adds a device; SIGTERM stops."""
    path, emulator = plant
    notify = NotifySocket(path.parent / "notify.sock")
    env = {**os.environ, "NOTIFY_SOCKET": str(notify.path), "WATCHDOG_USEC": "1000000"}
    env.pop("WATCHDOG_PID", None)
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gatewayd", "run", str(path),
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await async_wait_until(lambda: notify.messages, 20, "the first notification")
        assert notify.messages[0] == "READY=1"
        await async_wait_until(
            lambda: any(m.startswith("STATUS=devices 2/2 up") for m in notify.messages),
            20,
            "a status line with both devices up",
        )
        await async_wait_until(
            lambda: notify.messages.count("WATCHDOG=1") >= 2, 10, "watchdog pings"
        )
        online = set(emulator.online_sub_devices("gwPK", "gwDK"))
        assert online == {("meterPK", "meter1"), ("meterPK", "meter2")}

        # A broken config: reload refused, old config keeps running.
        good = path.read_text()
        path.write_text(good.replace("poll_interval: 200ms", "poll_interval: 200"))
        process.send_signal(signal.SIGHUP)
        await async_wait_until(lambda: len(notify.states()) >= 3, 10, "reload notifications")
        reloading, ready = notify.states()[1:3]
        assert reloading.startswith("RELOADING=1\nMONOTONIC_USEC=")
        assert ready == "READY=1"
        assert process.returncode is None
        seen = len(emulator.records.points)
        await async_wait_until(
            lambda: len(emulator.records.points) > seen + 4, 10, "data after a refused reload"
        )

        # A good config adding a device: it is polled and published without a restart.
        path.write_text(good)
        add_third_meter(path)
        process.send_signal(signal.SIGHUP)
        await async_wait_until(lambda: len(notify.states()) >= 5, 10, "second reload")
        assert notify.states()[3].startswith("RELOADING=1\n")
        assert notify.states()[4] == "READY=1"
        await async_wait_until(
            lambda: any(r.device_key == "meter3" for r in emulator.records.points),
            20,
            "data of the added device",
        )
        connects = emulator.stats.connects
        assert connects == 1, "a reload that keeps the identity keeps the MQTT session"

        process.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(process.wait(), 20) == 0
        assert notify.states()[-1] == "STOPPING=1"
    finally:
        with contextlib.suppress(ProcessLookupError):
            process.kill()
        notify.close()
        stderr = await process.stderr.read() if process.stderr else b""
        assert b"Traceback" not in stderr, stderr.decode(errors="replace")
