"""Machine-readable CLI output: stdout carries only it, every log line goes to stderr."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from tests.integration.raw_modbus import DEVICE_FAILURE, RawHoldingDevice

REPO = Path(__file__).resolve().parents[2]

CONFIG = """\
gateway:
  product_key: gwPk
  device_key: gwDk
  device_secret: s3cret
  broker: {{host: 127.0.0.1}}
buses:
  - {{name: plant, type: tcp, host: 127.0.0.1, port: {port}, timeout: 2s, gap_fill: 0}}
devices:
  - {{name: pump-1, bus: plant, unit_id: 1, model: pump, product_key: pk, device_key: p1,
     device_secret: s, poll_interval: 5s}}
models:
  pump:
    name: pump
    points:
      - {{measurepoint: speed, table: holding, address: 0, type: uint16}}
      - {{measurepoint: fault_code, table: holding, address: 10, type: uint16}}
"""


async def run_cli(*args: str) -> tuple[int, str, str]:
    """Run `python -m gatewayd ARGS` in a subprocess; (exit status, stdout, stderr)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gatewayd", *args, cwd=REPO,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_read_json_stdout_is_only_json_while_the_device_warns(tmp_path: Path) -> None:
    """A device answering exception 04 makes `read` warn; stdout still parses as one JSON."""
    async with RawHoldingDevice({0: 1234}, {10: DEVICE_FAILURE}) as device:
        config = tmp_path / "gatewayd.yaml"
        config.write_text(CONFIG.format(port=device.port))
        code, out, err = await run_cli("read", str(config), "--device", "pump-1", "--json")
    assert device.requests == [(0, 1), (10, 1)]
    assert code == 1, err  # some points failed
    doc = json.loads(out)  # the whole of stdout: no log line before or after the JSON
    points = {p["measurepoint"]: p for p in doc["points"]}
    assert points["speed"]["value"] == 1234
    assert points["fault_code"]["quality"] == "bad"
    assert points["fault_code"]["error"] == "exception 4 reading holding 10+1"
    assert "device rejected read" in err
    assert err.count("device rejected read") == 1
