"""The emulator's HTTP side knows the devices a gateway registered on its MQTT side.

A device with a `register:` block is not in the emulator's config: the gateway registers it
(`thing.device.register`), and from then on EnOS accepts file events for it over HTTP
too. Before, the HTTP side only knew the config's devices and answered 1257.
"""

from __future__ import annotations

from pathlib import Path

from gatewayd.integration.http import HttpSettings, IntegrationClient
from gatewayd.integration.message import AssetRef, EventRecord, local_value
from gatewayd.integration.replies import Accepted, Rejected
from gatewayd.integration.stream import describe_file
from gatewayd.sim.emulator import EmulatorConfig
from gatewayd.sim.emulator.http_cloud import IntegrationCloud, IntegrationSpec
from gatewayd.sim.emulator.http_server import IntegrationHttpServer
from gatewayd.sim.emulator.state import CloudState, Device, default_asset_id

EMULATOR_YAML = """\
models:
  inverter:
    events:
      inverter_fault: {params: [measurepoint, value, record], files: [record]}
products:
  - {product_key: gwPK, kind: gateway}
  - {product_key: invPK, kind: sub_device, model: inverter}
devices:
  - {product_key: gwPK, device_key: gw1, device_secret: gwSecret}
integration:
  org_id: o15
  accounts: {ak-gateway: sk-9f2c}
"""
KEYS = ("invPK", "inv1")
ASSET = AssetRef(product_key=KEYS[0], device_key=KEYS[1])


async def test_an_upload_for_a_device_registered_later_is_accepted(tmp_path: Path) -> None:
    """Unknown device: 1257; once registered in the MQTT side's state: accepted, stored
    under its asset id, with its product's file-typed param, and downloadable."""
    (tmp_path / "emu.yaml").write_text(EMULATOR_YAML)
    config = EmulatorConfig.load(tmp_path / "emu.yaml")
    state = CloudState(config)
    cloud = IntegrationCloud(IntegrationSpec.from_emulator_config(config), state=state)
    (tmp_path / "trip.csv").write_bytes(b"time,ac_power\r\n2026-12-05T10:00:00.000Z,7\r\n")
    files = [describe_file(tmp_path / "trip.csv", "f1", "inverter_fault", ASSET)]
    params = {"measurepoint": "operating_state", "value": "fault", "record": local_value("f1")}
    record = EventRecord(ASSET, 1796464800000, {"inverter_fault": params})
    with IntegrationHttpServer(cloud) as server:
        settings = HttpSettings(server.url, server.url, "o15", "ak-gateway", "sk-9f2c")
        async with IntegrationClient(settings) as client:
            unknown = await client.post_event([record], files)
            # What the MQTT responder does on thing.device.register.
            asset_id = default_asset_id(KEYS)
            state.devices[KEYS] = Device(KEYS[0], KEYS[1], None, True, asset_id)
            accepted = await client.post_event([record], files, realtime=False)
            chunks: list[bytes] = []
            await client.download(f"enos-connect://o15/{asset_id}/1.csv", ASSET, chunks.append)
    assert isinstance(unknown, Rejected)
    assert unknown.code == 1257
    assert isinstance(accepted, Accepted)
    (event,) = cloud.events
    assert (event.asset.asset_id, event.event_id, event.realtime) == (
        asset_id,
        "inverter_fault",
        False,
    )
    assert event.params["record"] == f"enos-connect://o15/{asset_id}/1.csv"
    assert b"".join(chunks) == (tmp_path / "trip.csv").read_bytes()
    assert cloud.files[event.params["record"]].md5 == files[0].md5
