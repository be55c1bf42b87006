"""`gatewayd emulate` from the command line, and config/emulator.yaml vs config/gatewayd.yaml."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from pathlib import Path

import pytest

from gatewayd.config.loader import load_config
from gatewayd.enos import messages
from gatewayd.enos.messages import MeasurepointRecord, SubDeviceCredentials
from gatewayd.sim.emulator import EmulatorConfig
from tests.integration.emulator_fixtures import BrokerAddress, connect_device
from tests.support import async_wait_until, free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "emulator.yaml"
GATEWAYD = ROOT / "config" / "gatewayd.yaml"


def test_example_emulator_yaml_matches_gatewayd_yaml() -> None:
    """config/emulator.yaml describes exactly the cloud side of config/gatewayd.yaml."""
    example = EmulatorConfig.load(EXAMPLE)
    derived = EmulatorConfig.from_gateway_config(load_config(GATEWAYD))
    assert example.products == derived.products
    assert example.devices == derived.devices
    assert example.models == derived.models
    gateway = load_config(GATEWAYD).gateway
    assert (gateway.product_key, gateway.device_key) in {
        (d.product_key, d.device_key) for d in example.devices
    }


def test_derived_config_types_follow_the_device_models() -> None:
    """Scaled integers become double, plain integers long, enums take codes and labels."""
    derived = EmulatorConfig.from_gateway_config(load_config(GATEWAYD))
    plc = derived.models["generic_plc"].measurepoints
    assert plc["temperature_setpoint"].type == "double"  # int16 with scale 0.1
    assert plc["pump_run_hours"].type == "long"
    assert plc["pump_run"].type == "bool"
    assert plc["plc_serial"].type == "string"
    assert plc["tank_temperature"].quality
    assert plc["operating_mode"].values == [0, 1, 2, 3, "stopped", "manual", "auto", "maintenance"]
    events = derived.models["sdm630"].events
    assert events["over_voltage"].params == ["measurepoint", "phase", "value"]


async def _run_cli(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "gatewayd",
        "emulate",
        *args,
        cwd=ROOT,
        stderr=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )


async def _accepting(port: int) -> bool:
    try:
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True


@pytest.mark.parametrize("source", ["--config", "--gateway-config"])
async def test_emulate_serves_until_sigterm_and_dumps(tmp_path: Path, source: str) -> None:
    """The CLI accepts the example gateway, records its data and dumps it on SIGTERM."""
    port = free_port()
    dump = tmp_path / "dump.json"
    config = EXAMPLE if source == "--config" else GATEWAYD
    process = await _run_cli(
        source, str(config), "--port", str(port), "--dump", str(dump), "--summary-interval", "0.2"
    )
    try:
        await async_wait_until(lambda: _accepting(port), timeout=20, what="emulate to listen")
        target = BrokerAddress("127.0.0.1", port)
        async with connect_device(
            target, "gwProductKey", "gwDeviceKey", "demo-gateway-secret"
        ) as gw:
            creds = SubDeviceCredentials("meterProductKey", "meter01", "demo-meter01-secret")
            login = messages.combine_login(
                "gwProductKey", "gwDeviceKey", id="1", device=creds, timestamp="1"
            )
            assert (await gw.send(login))["code"] == 200
            batch = messages.measurepoint_batch(
                "gwProductKey",
                "gwDeviceKey",
                id="2",
                resume=False,
                records=[
                    MeasurepointRecord(
                        "meterProductKey", "meter01", 1_700_000_000_000, {"voltage_l1": 230.1}
                    )
                ],
            )
            assert (await gw.send(batch))["code"] == 200
            resume = messages.measurepoint_batch(
                "gwProductKey",
                "gwDeviceKey",
                id="3",
                resume=True,
                records=[
                    MeasurepointRecord(
                        "meterProductKey", "meter01", 1_699_000_000_000, {"frequency": 50.0}
                    )
                ],
                allow_offline_sub_device=True,
            )
            assert (await gw.send(resume))["code"] == 200
        process.send_signal(signal.SIGTERM)
        _stdout, stderr = await asyncio.wait_for(process.communicate(), 20)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0
    lines = stderr.decode().splitlines()
    assert lines[0] == f"gatewayd emulate: listening on 127.0.0.1:{port}"
    assert any("post=1 resume=1" in line for line in lines), lines
    data = json.loads(dump.read_text())
    assert [(r["device_key"], r["point"], r["value"]) for r in data["records"]["post"]] == [
        ("meter01", "voltage_l1", 230.1)
    ]
    assert [(r["point"], r["time"]) for r in data["records"]["resume"]] == [
        ("frequency", 1_699_000_000_000)
    ]
    assert data["stats"]["connects"] == 1


async def test_emulate_rejects_a_bad_config(tmp_path: Path) -> None:
    """An invalid emulator config exits 78 (EX_CONFIG) with the reason on stderr."""
    bad = tmp_path / "emu.yaml"
    bad.write_text("devices:\n  - {product_key: nope, device_key: d}\n")
    process = await _run_cli("--config", str(bad), "--port", str(free_port()))
    _stdout, stderr = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 78
    assert "unknown product 'nope'" in stderr.decode()
