"""The demo's file event: its site (capture, integration.http, secret file), the emulator's
cloud model derived from it (file-typed params), and how a stored file event is shown."""

from __future__ import annotations

import hashlib
import stat
from pathlib import Path

import yaml

from gatewayd.config.loader import load_config
from gatewayd.config.models import DeviceModel
from gatewayd.sim.demo.files import file_events_left, save_stored_files, stored_file_events
from gatewayd.sim.demo.render import render_line, render_summary, render_table
from gatewayd.sim.demo.site import CAPTURE, TRIP, demo_models, shipped_models, write_site
from gatewayd.sim.demo.tally import Accounting
from gatewayd.sim.emulator import EmulatorConfig
from gatewayd.sim.emulator.config import events_of
from gatewayd.sim.emulator.http_cloud import (
    Asset,
    IntegrationCloud,
    IntegrationSpec,
    StoredEvent,
    StoredFile,
)
from tests.unit.test_demo_render import snapshot

CSV = b"time,ac_power\r\n2026-12-05T10:00:00.000Z,7\r\n"
URI = "enos-connect://o-demo/3e593f5b/1.csv"


def test_demo_models_add_the_capture_to_the_tripping_event_only() -> None:
    """The inverter's inverter_fault rule gets CAPTURE; every other rule and model is as shipped."""
    shipped, demo = shipped_models(), demo_models()
    assert set(demo) == set(shipped)
    for name in set(shipped) - {TRIP.model_file}:
        assert demo[name] == shipped[name]
    before = yaml.safe_load(shipped[TRIP.model_file])
    after = yaml.safe_load(demo[TRIP.model_file])
    captured = [rule for rule in after["events"] if "capture" in rule]
    assert captured == [{**next(r for r in before["events"] if r["event"] == TRIP.event),
                         "capture": CAPTURE}]  # fmt: skip
    assert [r for r in after["events"] if "capture" not in r] == [
        r for r in before["events"] if r["event"] != TRIP.event
    ]
    assert {k: v for k, v in after.items() if k != "events"} == {
        k: v for k, v in before.items() if k != "events"
    }


def test_site_points_integration_http_at_loopback_with_a_private_secret_file(
    tmp_path: Path,
) -> None:
    """integration.http names the emulator's HTTP port; the secret key is in a 0600 file."""
    site = write_site(tmp_path)
    config = load_config(site.config_path)
    http = config.integration.http
    assert http is not None
    assert http.address == f"http://127.0.0.1:{site.http_port}"
    assert (http.org_id, http.access_key) == ("o-demo", "demo-access-key")
    assert http.secret_key_file == tmp_path / "integration.secret"
    mode = (tmp_path / "integration.secret").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600
    secret = (tmp_path / "integration.secret").read_text().strip()
    assert len(secret) == 32
    assert http.secret_key is not None
    assert http.secret_key.get_secret_value() == secret
    assert write_site(tmp_path / "again").http_port != 0
    assert (tmp_path / "again" / "integration.secret").read_text().strip() != secret


def test_cloud_from_the_demo_config_has_its_account_and_file_typed_capture_param(
    tmp_path: Path,
) -> None:
    """from_gateway_config: the OU and account of integration.http, the capture's param
    file-typed (others not), and the HTTP side's product events cover the inverter."""
    config = load_config(write_site(tmp_path).config_path)
    cloud = EmulatorConfig.from_gateway_config(config)
    assert cloud.integration is not None
    secret = (tmp_path / "integration.secret").read_text().strip()
    assert (cloud.integration.org_id, cloud.integration.accounts) == (
        "o-demo",
        {"demo-access-key": secret},
    )
    events = cloud.models["sunspec_inverter"].events
    assert events[TRIP.event].files == ["record"]
    assert events[TRIP.event].params == ["measurepoint", "record", "value"]
    assert {name for name, spec in events.items() if spec.files} == {TRIP.event}
    spec = IntegrationSpec.from_emulator_config(cloud)
    # inverter-1 registers itself: not an asset at start, but its product's events are known.
    assert "inverter01" not in {a.device_key for a in spec.assets}
    assert spec.product_events["invProductKey"][TRIP.event] == frozenset({"record"})


def test_file_events_of_a_model_declare_their_file_param() -> None:
    """A `file_events` entry: its file_param is file-typed, its params are the declared ones."""
    model = DeviceModel.model_validate({
        "name": "m",
        "points": [{"measurepoint": "trip", "table": "coil", "address": 0, "type": "bool"}],
        "events": [{"event": "tripped", "rule": "bit_set", "point": "trip"}],
        "file_events": [{"event": "tripRecord", "file_param": "log",
                         "params": {"reason": "int", "phase": "string"}}],
    })  # fmt: skip
    events = events_of(model)
    assert (events["tripRecord"].params, events["tripRecord"].files) == (
        ["log", "phase", "reason"],
        ["log"],
    )
    assert (events["tripped"].params, events["tripped"].files) == (["measurepoint", "value"], [])


def _cloud_holding(declared_md5: str | None) -> IntegrationCloud:
    asset = Asset("invProductKey", "inverter01", "3e593f5b", {TRIP.event: frozenset({"record"})})
    cloud = IntegrationCloud(IntegrationSpec("o-demo", {}, (asset,)))
    name = "inverter-1-inverter_fault-20261205T100000Z.csv"
    cloud.files[URI] = StoredFile(URI, asset, TRIP.event, name, CSV, declared_md5)
    params = {"measurepoint": "operating_state", "value": "fault", "record": URI}
    cloud.events.append(StoredEvent(asset, 1796464800000, TRIP.event, params, False))
    return cloud


def test_stored_file_event_joins_event_and_file_with_the_md5_check(tmp_path: Path) -> None:
    """One row per file: device name, file name, size, md5 of the bytes, declared or not."""
    config = load_config(write_site(tmp_path).config_path)
    md5 = hashlib.md5(CSV, usedforsecurity=False).hexdigest()
    (event,) = stored_file_events(config, _cloud_holding(md5))
    assert event.to_json() == {
        "event": TRIP.event, "device": "inverter-1", "time_ms": 1796464800000,
        "param": "record", "filename": "inverter-1-inverter_fault-20261205T100000Z.csv",
        "size": len(CSV), "md5": md5, "md5_verified": True, "realtime": False, "uri": URI,
    }  # fmt: skip
    (undeclared,) = stored_file_events(config, _cloud_holding(None))
    assert undeclared.md5_verified is False
    (other,) = stored_file_events(config, _cloud_holding("0" * 32))
    assert other.md5_verified is False


def test_stored_files_are_saved_under_their_names_and_nothing_left_counts_zero(
    tmp_path: Path,
) -> None:
    """The cloud's files go to a directory (for --keep); a clean state directory leaves 0."""
    config = load_config(write_site(tmp_path).config_path)
    assert save_stored_files(_cloud_holding(None), tmp_path / "cloud-files") == 1
    saved = tmp_path / "cloud-files" / "inverter-1-inverter_fault-20261205T100000Z.csv"
    assert saved.read_bytes() == CSV
    assert file_events_left(config) == 0
    (tmp_path / "captures").mkdir()
    (tmp_path / "captures" / "x.csv").write_bytes(CSV)
    (tmp_path / "captures" / "x.csv.json").write_text("{}")
    (tmp_path / "captures" / "y.csv.part").write_bytes(CSV)  # still running: not counted
    (tmp_path / "captures" / "y.csv.json.part").write_text("{}")
    pending = tmp_path / "file-events" / "pending" / "000001"
    pending.mkdir(parents=True)
    assert file_events_left(config) == 2


def test_table_line_and_summary_show_the_file_event(tmp_path: Path) -> None:
    """The table names event, device, file, size, md5 state and realtime; the line counts
    files; the summary's sentence gives the full md5 and how it was sent."""
    config = load_config(write_site(tmp_path).config_path)
    md5 = hashlib.md5(CSV, usedforsecurity=False).hexdigest()
    events = stored_file_events(config, _cloud_holding(md5))
    table = render_table(snapshot(file_events=events), width=140).splitlines()
    assert (
        f"file    inverter_fault of inverter-1 · {len(CSV)} B · md5 {md5[:8]} verified · "
        "realtime no · inverter-1-inverter_fault-20261205T100000Z.csv"
    ) in table
    narrow = render_table(snapshot(file_events=events), width=80).splitlines()
    assert f"file    inverter_fault of inverter-1 · {len(CSV)} B · md5 {md5[:8]} verified · " in (
        next(line for line in narrow if line.startswith("file"))
    )
    assert "file    no file event in the cloud yet" in render_table(snapshot()).splitlines()
    assert " dead=1 files=1 | " in render_line(snapshot(file_events=events))
    accounting = Accounting(live=1, backfilled=0, events=0, duplicates=0, offered_samples=1,
                            offered_events=0, lost=0, in_spool=0)  # fmt: skip
    text = render_summary(
        accounting, elapsed_s=14.0, devices=4, meter_link="on RTU over TCP", dead_letters=0,
        outage=None, file_events=events, file_events_left=1,
    )  # fmt: skip
    assert text.endswith(
        "The cloud stored the file event inverter_fault of inverter-1 with "
        f"record=inverter-1-inverter_fault-20261205T100000Z.csv ({len(CSV)} bytes, md5 {md5}, "
        "the md5 the upload declared), sent as backlog (isRealtimeIntegration false). "
        "1 file event(s) were not uploaded before the stop (the daemon sends them at its "
        "next start)."
    )
