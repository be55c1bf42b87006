"""`gatewayd emulate --http-port`: the HTTP integration channel of an emulator.yaml."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path

from gatewayd.integration.http import HttpSettings, IntegrationClient
from gatewayd.integration.message import AssetRef, EventRecord, local_value
from gatewayd.integration.replies import Accepted, Rejected
from gatewayd.integration.stream import describe_file
from gatewayd.sim.emulator import EmulatorConfig
from gatewayd.sim.emulator.http_cloud import IntegrationSpec
from gatewayd.sim.emulator.state import default_asset_id
from tests.support import async_wait_until, free_port

EMULATOR_YAML = """\
models:
  meter:
    measurepoints: {voltage: {type: double}}
    events:
      tripRecord: {params: [reason, capture], files: [capture]}
      overVoltage: {params: [voltage]}
products:
  - {product_key: subPK, kind: direct, model: meter}
devices:
  - {product_key: subPK, device_key: meter1, device_secret: m1Secret}
integration:
  org_id: o15
  accounts: {ak-gateway: sk-9f2c}
"""
ASSET = AssetRef(product_key="subPK", device_key="meter1")


def test_spec_from_emulator_yaml_takes_file_params_from_the_model(tmp_path: Path) -> None:
    """Each device becomes an asset whose events list their file-typed params."""
    (tmp_path / "emu.yaml").write_text(EMULATOR_YAML)
    spec = IntegrationSpec.from_emulator_config(EmulatorConfig.load(tmp_path / "emu.yaml"))
    assert (spec.org_id, spec.accounts, spec.token_lifetime) == (
        "o15",
        {"ak-gateway": "sk-9f2c"},
        7200.0,
    )
    (asset,) = spec.assets
    assert (asset.product_key, asset.device_key, asset.asset_id) == (
        "subPK",
        "meter1",
        default_asset_id(("subPK", "meter1")),
    )
    assert asset.events == {"tripRecord": frozenset({"capture"}), "overVoltage": frozenset()}


async def _accepting(port: int) -> bool:
    try:
        _reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.close()
    return True


async def test_emulate_serves_uploads_and_downloads_over_http(tmp_path: Path) -> None:
    """An upload to `emulate --http-port` is checked against the model and downloadable."""
    (tmp_path / "emu.yaml").write_text(EMULATOR_YAML)
    (tmp_path / "trip.csv").write_bytes(b"t,i\n0,12.5\n")
    port, http_port = free_port(), free_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gatewayd", "emulate", "--config", str(tmp_path / "emu.yaml"),
        "--port", str(port), "--http-port", str(http_port), "--summary-interval", "60",
        stderr=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    try:
        await async_wait_until(lambda: _accepting(http_port), timeout=30, what="HTTP port")
        url = f"http://127.0.0.1:{http_port}"
        files = [describe_file(tmp_path / "trip.csv", "f1", "tripRecord", ASSET)]
        good = EventRecord(ASSET, 1, {"tripRecord": {"reason": 3, "capture": local_value("f1")}})
        wrong = EventRecord(ASSET, 1, {"overVoltage": {"voltage": local_value("f1")}})
        wrong_files = [describe_file(tmp_path / "trip.csv", "f1", "overVoltage", ASSET)]
        settings = HttpSettings(url, url, "o15", "ak-gateway", "sk-9f2c")
        async with IntegrationClient(settings) as client:
            accepted = await client.post_event([good], files, realtime=False)
            rejected = await client.post_event([wrong], wrong_files)
            chunks: list[bytes] = []
            asset_id = default_asset_id(("subPK", "meter1"))
            await client.download(f"enos-connect://o15/{asset_id}/1.csv", ASSET, chunks.append)
        assert isinstance(accepted, Accepted)
        assert isinstance(rejected, Rejected)
        assert rejected.code == 1204
        assert b"".join(chunks) == b"t,i\n0,12.5\n"
        process.send_signal(signal.SIGTERM)
        _out, stderr = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0
    assert f"gatewayd emulate: HTTP integration on {url}" in stderr.decode().splitlines()
