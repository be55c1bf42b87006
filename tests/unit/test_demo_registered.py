"""The demo's registered device: its site entry, its nameplate registers, the cloud view
of it and how the table and the summary show it."""

from __future__ import annotations

from pathlib import Path

from gatewayd.config.loader import load_config
from gatewayd.config.models import Config
from gatewayd.modbus import codec
from gatewayd.sim.demo.nameplate import NAMEPLATES, write_nameplates
from gatewayd.sim.demo.registered import RegisteredDevice, registered_devices
from gatewayd.sim.demo.render import Snapshot, render_registered, render_summary, render_table
from gatewayd.sim.demo.site import PLANT_BUS, write_site
from gatewayd.sim.demo.tally import CloudTally, Ledger, account
from gatewayd.sim.device import DeviceSimulator
from gatewayd.sim.emulator import EmulatorConfig
from gatewayd.sim.emulator.state import CloudState, Device, default_asset_id

INVERTER = ("invProductKey", "inverter01")


def site_config(tmp_path: Path) -> Config:
    """The demo's site, written and loaded (the meters' pty is never opened here)."""
    return load_config(write_site(tmp_path, meter_serial="/dev/null-pty").config_path)


def test_the_inverter_is_registered_by_the_gateway_with_static_attributes(tmp_path: Path) -> None:
    """inverter-1 has a register: block and no secret; the other devices keep theirs."""
    config = site_config(tmp_path)
    by_name = {d.name: d for d in config.devices}
    inverter = by_name["inverter-1"]
    assert inverter.registration is not None
    assert inverter.registration.name == "Inverter 1"
    assert inverter.registration.attributes == {"site": "North-2"}
    assert inverter.device_secret is None
    assert inverter.device_secret_file is None
    assert inverter.attributes == {"rated_power_kw": 10, "commissioned": "2026-11-30"}
    assert [d.name for d in config.devices if d.registration is None] == [
        "plc-1", "meter-1", "meter-2"
    ]  # fmt: skip
    # The emulator does not know it until the gateway registers it, but its product model
    # declares every attribute the gateway will send.
    cloud = EmulatorConfig.from_gateway_config(config)
    assert INVERTER not in {(d.product_key, d.device_key) for d in cloud.devices}
    assert cloud.models["sunspec_inverter"].attributes == [
        "commissioned", "firmware_version", "manufacturer", "model_name", "rated_power_kw",
        "serial_number", "site",
    ]  # fmt: skip


def test_nameplates_are_written_where_the_model_attributes_read_them(tmp_path: Path) -> None:
    """Each nameplate value decodes back, through the model's attribute definition, to
    the value written; devices of another bus are left alone."""
    config = site_config(tmp_path)
    simulator = DeviceSimulator.from_config(config, PLANT_BUS)
    assert write_nameplates(simulator, config, PLANT_BUS) == 4  # the inverter's; the PLC has none
    unit = simulator.unit(1)
    read = {}
    for attribute in config.models["sunspec_inverter"].attributes:
        point = attribute.as_point()
        words = unit.registers(point.table, point.address, point.register_count)
        read[attribute.attribute] = codec.decode(
            point, words, byte_order=unit.orders(point)[0], word_order=unit.orders(point)[1]
        )
    assert read == NAMEPLATES["inverter-1"]
    assert unit.registers(point.table, 40000, 4) == [0, 0, 0, 0]  # nothing else written


def test_registered_devices_read_the_cloud_state(tmp_path: Path) -> None:
    """Before registration: no asset id; after: the cloud's asset id, binding and
    attributes sorted by name."""
    config = site_config(tmp_path)
    state = CloudState(EmulatorConfig.from_gateway_config(config))
    (before,) = registered_devices(config, state)
    assert before == RegisteredDevice("inverter-1", *INVERTER, None, False, ())
    state.devices[INVERTER] = Device(
        *INVERTER, "s3cret", True, default_asset_id(INVERTER),
        gateway=("gwProductKey", "gwDeviceKey"),
        attributes={"site": "North-2", "firmware_version": "4.12.3"},
    )  # fmt: skip
    (after,) = registered_devices(config, state)
    assert after.asset_id == default_asset_id(INVERTER)
    assert after.bound is True
    assert after.attributes == (("firmware_version", "4.12.3"), ("site", "North-2"))
    assert after.to_json() == {
        "product_key": "invProductKey", "device_key": "inverter01",
        "asset_id": default_asset_id(INVERTER), "bound": True,
        "attributes": {"firmware_version": "4.12.3", "site": "North-2"},
    }  # fmt: skip


DONE = RegisteredDevice(
    "inverter-1", *INVERTER, "3e593f5b", True, (("rated_power_kw", 10), ("site", "North-2"))
)


def test_summary_and_table_show_the_registered_device() -> None:
    """The summary ends with the registration sentence; the table has a line for it."""
    accounting = account(Ledger({}), CloudTally([], started=0.0), spool_samples=0, spool_events=0)
    text = render_summary(accounting, elapsed_s=6.0, devices=4, meter_link="on RTU over TCP",
                          dead_letters=0, outage=None, registered=[DONE])  # fmt: skip
    assert text.endswith(
        "lost 0. The gateway registered inverter-1 in the cloud as invProductKey/inverter01, "
        "asset id 3e593f5b, bound to the gateway; the cloud holds its attributes "
        "rated_power_kw=10, site=North-2."
    )
    table = render_table(
        Snapshot(6.0, (), 0, 0, 0, 0, 0, "connected", registered=(DONE,)), width=120
    ).splitlines()
    assert (
        "device  inverter-1 registered, asset 3e593f5b · 2 attributes in the cloud: "
        "rated_power_kw=10, site=North-2"
    ) in table


def test_a_device_not_registered_yet_says_so() -> None:
    """No asset id: the sentence says the cloud does not have it yet."""
    waiting = RegisteredDevice("inverter-1", *INVERTER, None, False, ())
    assert render_registered(waiting) == (
        "inverter-1 (invProductKey/inverter01) is not registered in the cloud yet."
    )
