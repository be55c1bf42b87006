"""`gatewayd plan` and `gatewayd read` against a test config and the real device simulator."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest

from gatewayd.cli import main
from gatewayd.config.loader import load_config
from gatewayd.sim.device import DeviceSimulator
from tests.support import free_port

MODELS = Path(__file__).resolve().parents[2] / "config" / "models"
REPO = Path(__file__).resolve().parents[2]

CONFIG = """\
gateway:
  product_key: gwPk
  device_key: gwDk
  device_secret: s3cret
  broker: {{host: 127.0.0.1}}
models_dir: {models}
buses:
  - {{name: plant, type: tcp, host: 127.0.0.1, port: {port}, timeout: 1s, gap_fill: 12}}
  - {{name: slow485, type: rtu, device: /dev/ttyGATEWAYD-TEST, baudrate: 1200, timeout: 1s}}
devices:
  - {{name: meter-1, bus: plant, unit_id: 1, model: sdm630, product_key: pk, device_key: m1,
     device_secret: s, poll_interval: 5s}}
  - {{name: meter-2, bus: plant, unit_id: 2, model: sdm630, product_key: pk, device_key: m2,
     device_secret: s, poll_interval: 5s}}
  - {{name: meter-3, bus: slow485, unit_id: 3, model: sdm630, product_key: pk, device_key: m3,
     device_secret: s, poll_interval: 1s}}
"""

#: The SDM630 map with a 12-register gap fill, computed by hand from config/models/sdm630.yaml.
SDM630_PLAN = [("input", 0, 36), ("input", 52, 24), ("input", 200, 6), ("input", 224, 2),
               ("input", 342, 2)]  # fmt: skip


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    """A config with two meters on a TCP bus (simulator port) and one on a slow RS-485 line."""
    path = tmp_path / "gatewayd.yaml"
    path.write_text(CONFIG.format(models=MODELS, port=free_port()))
    return path


def test_plan_prints_requests_and_warns_for_an_overloaded_bus(
    config_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Text plan: per-device requests with measurepoints; 1200 baud at 1 s is overloaded."""
    assert main(["plan", str(config_path)]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].startswith("bus plant (tcp 127.0.0.1:")
    assert "10 requests per full cycle" in lines[0]
    assert any(line.startswith("  device meter-1 (unit 1, model sdm630, every 5s): 5 requests")
               for line in lines)
    first_request = next(line for line in lines if line.strip().startswith("input"))
    assert first_request.split()[:3] == ["input", "0", "+36"]
    assert "voltage_l1, voltage_l2" in first_request
    assert "OVERLOADED" in next(line for line in lines if line.startswith("bus slow485"))
    assert "warning: bus slow485 cannot meet its poll period" in err
    assert "bus plant" not in err


def test_plan_json_for_one_device(config_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--device --json: only that device, requests equal to the hand-computed plan."""
    assert main(["plan", str(config_path), "--device", "meter-2", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    (bus,) = doc["buses"]
    assert bus["name"] == "plant"
    assert bus["overloaded"] is False
    (device,) = bus["devices"]
    assert device["name"] == "meter-2"
    assert device["requests_per_cycle"] == 5
    got = [(r["table"], r["start"], r["count"]) for r in device["requests"]]
    assert got == SDM630_PLAN
    assert device["requests"][4]["measurepoints"] == ["total_energy"]
    assert bus["wire_time_s"] == pytest.approx(device["wire_time_s"])


def test_plan_unknown_device_and_bad_config(
    config_path: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unknown device is a usage error (64); an invalid config exits 78 with its errors."""
    assert main(["plan", str(config_path), "--device", "meter-9"]) == 64
    assert "no device named 'meter-9'" in capsys.readouterr().err
    bad = tmp_path / "bad.yaml"
    bad.write_text(config_path.read_text().replace("timeout: 1s, gap", "timeout: 1, gap"))
    assert main(["plan", str(bad)]) == 78
    assert "bad.yaml:" in capsys.readouterr().err


async def run_cli(*args: str) -> tuple[int, str, str]:
    """Run `python -m gatewayd ARGS` in a subprocess (the simulator keeps serving meanwhile)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gatewayd", *args, cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_read_json_polls_the_simulator(config_path: Path) -> None:
    """read --json --count 2: every point good, pinned values and their raw registers."""
    config = load_config(config_path)
    async with DeviceSimulator.from_config(config, "plant") as sim:
        sim.set_value(1, "voltage_l1", 230.5)
        sim.set_value(1, "frequency", 50.0)
        code, out, err = await run_cli(
            "read", str(config_path), "--device", "meter-1", "--json", "--count", "2",
            "--interval", "100ms",
        )  # fmt: skip
    assert code == 0, err
    polls = [json.loads(line) for line in out.splitlines()]
    assert [p["poll"] for p in polls] == [1, 2]
    for poll in polls:
        assert poll["device"] == "meter-1"
        assert poll["requests"] == 5
        points = {p["measurepoint"]: p for p in poll["points"]}
        assert len(points) == len(config.models["sdm630"].points)
        assert all(p["quality"] == "good" for p in points.values())
        assert points["voltage_l1"]["value"] == 230.5
        assert points["voltage_l1"]["raw"] == [0x4366, 0x8000]
        assert points["voltage_l1"]["unit"] == "V"
        assert points["frequency"]["raw"] == [0x4248, 0x0000]
    assert sim.stats(1).total_requests == 10
    assert sim.stats(2).total_requests == 0


async def test_read_text_output_and_silent_device(config_path: Path) -> None:
    """Text output shows value, unit, quality and hex raw; a silent device exits 69."""
    config = load_config(config_path)
    async with DeviceSimulator.from_config(config, "plant") as sim:
        sim.set_value(1, "voltage_l1", 230.5)
        sim.faults(2).silent = True
        code, out, err = await run_cli("read", str(config_path), "--device", "meter-1")
        silent_code, silent_out, _ = await run_cli(
            "read", str(config_path), "--device", "meter-2"
        )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("meter-1 (unit 1 on plant) poll 1/1 at ")
    assert lines[1].split() == ["measurepoint", "value", "unit", "quality", "raw"]
    row = next(line for line in lines if line.split()[0] == "voltage_l1")
    assert row.split() == ["voltage_l1", "230.5", "V", "good", "0x4366", "0x8000"]
    assert silent_code == 69
    row = next(line for line in silent_out.splitlines() if line.split()[0] == "voltage_l1")
    assert row.split()[:3] == ["voltage_l1", "-", "V"]
    assert "bad (timeout" in row
