"""Real Modbus parts for integration tests: the device simulator and socat pty pairs.

Fixtures (imported into conftest.py, so every integration test can ask for them):

- `modbus_model`: a `DeviceModel` with a point of every data type in every table.
- `modbus_sim`: a `DeviceSimulator` serving units 1 and 2 of `modbus_model` over Modbus TCP
  on a free loopback port (values pinned still: every point `Motion.FIXED`).
- `socat_pty_pair`: two linked pseudo-terminals `(a, b)`; bytes written to one come out of
  the other, and both are real serial devices to pyserial.

Helpers: `tcp_bus(port)`, `rtu_over_tcp_bus(port)`, `serial_bus(device)` build bus configs
with test-friendly defaults.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from gatewayd.config.models import DeviceModel, RtuOverTcpBus, SerialBus, TcpBus
from gatewayd.sim.device import DeviceSimulator, SimulatedUnit
from gatewayd.sim.device_motion import Motion
from tests.support import wait_until

SOCAT = shutil.which("socat") or "/usr/bin/socat"

#: A model exercising every type, table, order override, scale/offset and enum.
MODEL_DOC: dict[str, Any] = {
    "name": "test-all-types",
    "byte_order": "big",
    "word_order": "big",
    "points": [
        {"measurepoint": "relay", "table": "coil", "address": 0, "type": "bool", "writable": True},
        {"measurepoint": "relay2", "table": "coil", "address": 7, "type": "bool"},
        {"measurepoint": "door_open", "table": "discrete", "address": 3, "type": "bool"},
        {"measurepoint": "flags_bit0", "table": "holding", "address": 0, "type": "bool", "bit": 0},
        {"measurepoint": "flags_bit9", "table": "holding", "address": 0, "type": "bool", "bit": 9},
        {"measurepoint": "i16", "table": "holding", "address": 1, "type": "int16"},
        {"measurepoint": "u16", "table": "holding", "address": 2, "type": "uint16"},
        {"measurepoint": "i32", "table": "holding", "address": 3, "type": "int32"},
        {"measurepoint": "u32", "table": "holding", "address": 5, "type": "uint32"},
        {"measurepoint": "i64", "table": "holding", "address": 7, "type": "int64"},
        {"measurepoint": "u64", "table": "holding", "address": 11, "type": "uint64"},
        {"measurepoint": "f32", "table": "holding", "address": 15, "type": "float32"},
        {"measurepoint": "f64", "table": "holding", "address": 17, "type": "float64"},
        {"measurepoint": "name", "table": "holding", "address": 21, "type": "string", "count": 5},
        {"measurepoint": "bcd4", "table": "holding", "address": 26, "type": "bcd16"},
        {"measurepoint": "bcd8", "table": "holding", "address": 27, "type": "bcd32"},
        {
            "measurepoint": "mode", "table": "holding", "address": 29, "type": "uint16",
            "enum": {0: "off", 1: "standby", 2: "run"},
        },
        {
            "measurepoint": "setpoint", "table": "holding", "address": 30, "type": "int16",
            "scale": 0.1, "offset": -5.0,
        },
        {
            "measurepoint": "f32_swapped", "table": "holding", "address": 31, "type": "float32",
            "byte_order": "little", "word_order": "little",
        },
        {"measurepoint": "voltage", "table": "input", "address": 0, "type": "float32", "unit": "V"},
        {"measurepoint": "energy_total", "table": "input", "address": 2, "type": "uint32"},
    ],
}  # fmt: skip


def tcp_bus(port: int, **overrides: Any) -> TcpBus:
    """A Modbus TCP bus config to 127.0.0.1:`port`."""
    return TcpBus.model_validate(
        {"name": "tcp-test", "type": "tcp", "host": "127.0.0.1", "port": port, **overrides}
    )


def rtu_over_tcp_bus(port: int, **overrides: Any) -> RtuOverTcpBus:
    """An RTU-over-TCP bus config to 127.0.0.1:`port` (serial side at 115200 baud)."""
    doc = {"name": "rtutcp-test", "type": "rtu_over_tcp", "host": "127.0.0.1", "port": port}
    return RtuOverTcpBus.model_validate({"baudrate": 115200, **doc, **overrides})


def serial_bus(device: str, **overrides: Any) -> SerialBus:
    """An RTU serial bus config on `device` (115200 8N1 unless overridden)."""
    doc = {"name": "rtu-test", "type": "rtu", "device": device}
    return SerialBus.model_validate({"baudrate": 115200, **doc, **overrides})


def still_units(model: DeviceModel, *unit_ids: int) -> list[SimulatedUnit]:
    """Units of `model` whose points do not move (tests pin the values they check)."""
    motions = dict.fromkeys((p.measurepoint for p in model.points), Motion.FIXED)
    return [SimulatedUnit(uid, model, motions=motions) for uid in unit_ids]


@pytest.fixture
def modbus_model() -> DeviceModel:
    """A device model with a point of every data type in every table."""
    return DeviceModel.model_validate(MODEL_DOC)


@pytest.fixture
async def modbus_sim(modbus_model: DeviceModel) -> AsyncIterator[DeviceSimulator]:
    """Units 1 and 2 of `modbus_model` (still values) served over Modbus TCP on loopback."""
    async with DeviceSimulator(still_units(modbus_model, 1, 2)) as sim:
        yield sim


class SocatPair:
    """A running `socat` joining two pseudo-terminals at paths `a` and `b`."""

    def __init__(self, workdir: Path) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.a, self.b = str(workdir / "ttyA"), str(workdir / "ttyB")
        self._log_path = workdir / "socat.log"
        self._log = self._log_path.open("wb")
        self.process = subprocess.Popen(
            [SOCAT, "-d", "-d", f"pty,raw,echo=0,link={self.a}", f"pty,raw,echo=0,link={self.b}"],
            stdout=self._log,
            stderr=self._log,
        )
        try:
            wait_until(
                lambda: (
                    (Path(self.a).exists() and Path(self.b).exists())
                    or self.process.poll() is not None
                ),
                10,
                "socat to create both pty links",
            )
        except AssertionError:
            self.stop()
            raise
        if self.process.poll() is not None:
            self.stop()
            raise RuntimeError(f"socat exited: {self._log_path.read_text()}")

    def stop(self) -> None:
        """End socat: both ptys go away, like a USB adapter being unplugged."""
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)
        self._log.close()


@pytest.fixture
def socat_pty_pair(tmp_path: Path) -> Iterator[tuple[str, str]]:
    """Two linked pseudo-terminals (a, b) made by socat; gone after the test."""
    pair = SocatPair(tmp_path)
    try:
        yield pair.a, pair.b
    finally:
        pair.stop()
