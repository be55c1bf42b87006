"""A bus whose port cannot be opened or configured, and a bus task that crashes (issue #16.3).

Real parts: a tty driver that refuses a setting (Linux ptys force 8 data bits without
parity, and pyserial's second tcsetattr with parity E then fails with termios.error
EINVAL: the issue's exact failure), a port that is no tty (a regular file: ENOTTY), socat
pty pairs that appear at the configured path later, the pymodbus simulator as the device,
`gatewayd read` as a subprocess. Only the crash test injects a fault (a reader raising an
error nobody foresaw): no real part misbehaves that way.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import structlog
import yaml

from gatewayd.app import Daemon
from gatewayd.config.loader import load_config
from gatewayd.config.models import DeviceModel
from gatewayd.modbus.client import make_client
from gatewayd.modbus.errors import BusUnavailable
from gatewayd.modbus.health import DeviceState
from gatewayd.modbus.reader import DeviceReader
from gatewayd.sim.device import DeviceSimulator
from gatewayd.systemd import Notifier
from tests.integration.modbus_fixtures import SocatPair, serial_bus, still_units
from tests.support import async_wait_until, free_port

REPO = Path(__file__).resolve().parents[2]

METER = {
    "name": "meter",
    "points": [
        {"measurepoint": "voltage", "table": "input", "address": 0, "type": "float32"},
        {"measurepoint": "energy", "table": "input", "address": 2, "type": "uint32"},
    ],
}


def write_site(tmp: Path, bus: dict[str, Any]) -> Path:
    """A site with one meter (unit 1) on `bus`; the broker is a port nobody listens on."""
    site = {
        "gateway": {"product_key": "gwPK", "device_key": "gwDK", "device_secret": "gwSecret",
                    "broker": {"host": "127.0.0.1", "port": free_port()}},
        "spool": {"path": str(tmp / "spool.db"), "synchronous": "normal"},
        "buses": [bus],
        "devices": [{"name": "meter-1", "bus": bus["name"], "unit_id": 1, "model": "meter",
                     "product_key": "meterPK", "device_key": "meter1",
                     "device_secret": "secret1", "poll_interval": "200ms"}],
        "models": {"meter": METER},
    }  # fmt: skip
    path = tmp / "gatewayd.yaml"
    path.write_text(yaml.safe_dump(site, sort_keys=False))
    return path


@contextlib.asynccontextmanager
async def running(path: Path) -> AsyncIterator[Daemon]:
    """The daemon on `path`, in this process; stopped (exit 0) on the way out."""
    daemon = Daemon(path, load_config(path), notifier=Notifier(environ={}))
    task = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(daemon.ready.wait(), 20)
        yield daemon
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 30) == 0


def events(logs: list[dict[str, Any]], name: str) -> list[dict[str, Any]]:
    """The captured log entries whose message is `name`."""
    return [entry for entry in logs if entry["event"] == name]


async def test_refused_line_setting_is_bus_unavailable_with_port_and_setting(
    tmp_path: Path,
) -> None:
    """termios.error from tcsetattr (a pty refuses parity E) is BusUnavailable naming both."""
    pair = SocatPair(tmp_path)
    try:
        client = make_client(serial_bus(pair.a, baudrate=9600, parity="E"))
        with pytest.raises(BusUnavailable) as caught:
            await client.connect()
        await client.close()
    finally:
        pair.stop()
    message = str(caught.value)
    assert f"cannot open or configure {pair.a} (9600 baud 8E1)" in message
    assert message.endswith("[Errno 22] Invalid argument (termios)")


async def test_port_that_is_no_tty_is_retried_and_recovers_when_the_pty_appears(
    tmp_path: Path,
) -> None:
    """A regular file at the port's path: devices DOWN with the reason, one warning, retries
    with backoff; a socat pty created at that path is picked up with one "recovered" line."""
    line = tmp_path / "line"
    line.mkdir()
    port = line / "ttyA"  # where SocatPair(line) puts its first pty
    port.write_text("not a tty")
    path = write_site(tmp_path, {"name": "rs485", "type": "rtu", "device": str(port),
                                 "baudrate": 9600, "timeout": "500ms",
                                 "reconnect_max": "1s"})  # fmt: skip
    with structlog.testing.capture_logs() as logs:
        async with running(path) as daemon:
            poller = daemon.pollers["rs485"]
            await async_wait_until(lambda: poller.bus_failures >= 3, 30, "three failed opens")
            status = poller.device_states()["meter-1"]
            assert status.state is DeviceState.DOWN
            assert status.last_error is not None
            assert status.last_error.startswith(
                f"port unavailable: bus rs485: cannot open or configure {port} (9600 baud 8N1): "
            )
            assert "Inappropriate ioctl for device" in status.last_error
            port.unlink()
            pair = SocatPair(line)
            model = DeviceModel.model_validate(METER)
            try:
                async with DeviceSimulator(
                    still_units(model, 1), mode="rtu", serial_port=pair.b, baudrate=9600
                ):
                    await async_wait_until(
                        lambda: poller.device_states()["meter-1"].state is DeviceState.UP,
                        30,
                        "meter-1 up on the new pty",
                    )
            finally:
                pair.stop()
    assert len(events(logs, "bus unavailable; reconnecting with backoff")) == 1
    recovered = events(logs, "bus recovered")
    assert len(recovered) == 1
    assert recovered[0]["after_failures"] >= 3
    assert not events(logs, "bus task crashed; restarting it with backoff")


async def test_refused_setting_keeps_the_bus_task_alive_and_devices_down(
    tmp_path: Path,
) -> None:
    """The driver refusing parity E: the bus task lives on and retries with backoff, its
    device is DOWN (not "starting") with the port, the setting and the reason; one warning."""
    pair = SocatPair(tmp_path / "line")
    path = write_site(tmp_path, {"name": "rs485", "type": "rtu", "device": pair.a,
                                 "baudrate": 9600, "parity": "E", "timeout": "500ms",
                                 "reconnect_max": "1s"})  # fmt: skip
    try:
        with structlog.testing.capture_logs() as logs:
            async with running(path) as daemon:
                poller = daemon.pollers["rs485"]
                await async_wait_until(lambda: poller.bus_failures >= 3, 30, "three failed opens")
                status = poller.device_states()["meter-1"]
                restarts = daemon.supervisors["rs485"].restarts
    finally:
        pair.stop()
    assert status.state is DeviceState.DOWN
    assert status.last_error == (
        f"port unavailable: bus rs485: cannot open or configure {pair.a} "
        "(9600 baud 8E1): [Errno 22] Invalid argument (termios)"
    )
    assert restarts == 0  # the poller itself retried: its task never died
    assert not events(logs, "bus task crashed; restarting it with backoff")
    warnings = events(logs, "bus unavailable; reconnecting with backoff")
    assert len(warnings) == 1
    assert warnings[0]["error"] in status.last_error


async def test_crashing_bus_task_is_restarted_with_backoff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A poller raising an unexpected error twice is restarted by the daemon; one error
    line for the episode, one "recovered" line once a cycle completes."""
    model = DeviceModel.model_validate(METER)
    async with DeviceSimulator(still_units(model, 1)) as sim:
        sim.set_value(1, "voltage", 230.0)
        path = write_site(tmp_path, {"name": "plant", "type": "tcp", "host": "127.0.0.1",
                                     "port": sim.port, "timeout": "500ms",
                                     "reconnect_max": "1s"})  # fmt: skip
        real_read = DeviceReader.read
        crashes_left = [2]

        async def crashing_read(self: DeviceReader, *args: Any, **kwargs: Any) -> Any:
            if crashes_left[0]:
                crashes_left[0] -= 1
                raise RuntimeError("a bug nobody foresaw")
            return await real_read(self, *args, **kwargs)

        monkeypatch.setattr(DeviceReader, "read", crashing_read)
        with structlog.testing.capture_logs() as logs:
            async with running(path) as daemon:
                poller = daemon.pollers["plant"]
                await async_wait_until(
                    lambda: poller.device_states()["meter-1"].state is DeviceState.UP,
                    30,
                    "meter-1 up after the restarts",
                )
                assert daemon.supervisors["plant"].restarts == 2
                assert daemon.supervisors["plant"].crashes == 0
    crashed = events(logs, "bus task crashed; restarting it with backoff")
    assert len(crashed) == 1
    assert crashed[0]["error"] == "RuntimeError('a bug nobody foresaw')"
    assert crashed[0]["bus"] == "plant"
    recovered = events(logs, "bus task recovered")
    assert len(recovered) == 1
    assert recovered[0]["crashes"] == 2


async def test_bus_task_crashing_every_time_shows_its_devices_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bus task that crashes on every start: its device is DOWN with the reason (not
    "starting" for ever), restarts keep coming with backoff, one error line in all."""
    model = DeviceModel.model_validate(METER)
    async with DeviceSimulator(still_units(model, 1)) as sim:
        path = write_site(tmp_path, {"name": "plant", "type": "tcp", "host": "127.0.0.1",
                                     "port": sim.port, "timeout": "500ms",
                                     "reconnect_max": "1s"})  # fmt: skip

        async def crashing_read(self: DeviceReader, *args: Any, **kwargs: Any) -> Any:
            raise RuntimeError("a bug on every cycle")

        monkeypatch.setattr(DeviceReader, "read", crashing_read)
        with structlog.testing.capture_logs() as logs:
            async with running(path) as daemon:
                supervisor = daemon.supervisors["plant"]
                await async_wait_until(lambda: supervisor.restarts >= 3, 30, "three restarts")
                status = daemon.pollers["plant"].device_states()["meter-1"]
                crashes = supervisor.crashes
    assert status.state is DeviceState.DOWN
    assert status.last_error == (
        "bus task crashed, restarting: RuntimeError('a bug on every cycle')"
    )
    assert crashes >= 3
    assert len(events(logs, "bus task crashed; restarting it with backoff")) == 1
    assert not events(logs, "bus task recovered")


async def test_read_exits_69_without_traceback_when_the_driver_refuses_the_setting(
    tmp_path: Path,
) -> None:
    """`gatewayd read` on a pty with parity E (the driver refuses it): exit 69, one line."""
    pair = SocatPair(tmp_path / "line")
    try:
        path = write_site(tmp_path, {"name": "rs485", "type": "rtu", "device": pair.a,
                                     "baudrate": 9600, "parity": "E"})  # fmt: skip
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gatewayd", "read", str(path), "--device", "meter-1",
            cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 60)
    finally:
        pair.stop()
    assert process.returncode == 69, err.decode()
    assert out == b""
    assert err.decode().splitlines() == [
        f"gatewayd: bus rs485: cannot open or configure {pair.a} "
        "(9600 baud 8E1): [Errno 22] Invalid argument (termios)"
    ]
