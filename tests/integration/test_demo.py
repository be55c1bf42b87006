"""`gatewayd demo` as a real subprocess: data for every device, outage backfilled, clean stop."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from gatewayd.sim.demo.site import CAPTURE, TRIP
from gatewayd.sim.emulator.state import default_asset_id

REPO = Path(__file__).resolve().parents[2]
DEMO = [sys.executable, "-m", "gatewayd", "demo"]
DEVICES = {"inverter-1", "plc-1", "meter-1", "meter-2"}
LINE = re.compile(r"^\[\d+:\d\d:\d\d\] uplink=(\S+) backlog=(\d+) post=(\d+) resume=(\d+) ")

pytestmark = pytest.mark.timeout(90)


async def run_demo(*args: str, cwd: Path) -> tuple[int, str, str]:
    """Run the demo with its scratch directory under `cwd` (TMPDIR): `--keep` keeps it there."""
    process = await asyncio.create_subprocess_exec(
        *DEMO, *args, cwd=cwd, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "TMPDIR": str(cwd)},
    )  # fmt: skip
    out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def summary_of(out: str) -> dict[str, Any]:
    last = next(line for line in reversed(out.strip().splitlines()) if line.startswith("{"))
    summary: dict[str, Any] = json.loads(last)
    return summary


async def test_outage_fills_the_spool_then_drains_via_resume_losing_nothing(tmp_path: Path) -> None:
    """A 3 s uplink cut: backlog grows, resume drains it to 0, every device arrives, none lost."""
    code, out, err = await run_demo(
        "--duration", "14s", "--outage-after", "2s", "--outage", "3s", "--json", "--keep",
        cwd=tmp_path,
    )  # fmt: skip
    assert code == 0, out + err
    assert "Traceback" not in out + err
    summary = summary_of(out)
    assert set(summary["devices"]) == DEVICES
    for name, figures in summary["devices"].items():
        assert figures["post"] > 0, name
    assert summary["backfilled"] > 0
    assert summary["lost"] == 0
    assert summary["duplicates"] == 0
    assert summary["dead_letters"] == 0
    assert summary["daemon_exit"] == 0
    assert summary["offered_samples"] == summary["live"] + summary["backfilled"]
    outage = summary["outage"]
    assert outage["backlog_peak"] > 0
    assert outage["reconnected_at"] > outage["restored_at"] > outage["cut_at"]
    assert outage["drained_at"] >= outage["reconnected_at"]
    # The plain progress lines (stdout is a pipe) show the backlog rise, then fall to 0
    # while the resume count rises.
    figures = [m.groups() for m in map(LINE.match, out.splitlines()) if m]
    assert len(figures) >= 10
    backlogs = [int(backlog) for _, backlog, _, _ in figures]
    peak = backlogs.index(max(backlogs))
    assert max(backlogs) > 0
    assert 0 in backlogs[peak:]
    resumes = [int(resume) for _, _, _, resume in figures]
    assert resumes[peak] < resumes[-1]
    assert resumes == sorted(resumes)
    assert any(uplink.startswith("reconnecting") for uplink, _, _, _ in figures)
    assert "lost 0." in out
    assert_inverter_registered_once_with_its_attributes(summary, out)
    assert_one_file_event_stored(summary, out, tmp_path)


def assert_one_file_event_stored(summary: dict[str, Any], out: str, tmp: Path) -> None:
    """The inverter tripped once: the cloud stored exactly one file event, its CSV (as the
    demo saved it from the cloud into its kept scratch directory) has the md5 the summary
    gives, the capture's header and rows before and after the event; the text says so."""
    (root,) = tmp.glob("gatewayd-demo-*")
    assert f"kept in {root}" in out
    (event,) = summary["file_events"]
    assert summary["file_events_left"] == 0
    assert (event["event"], event["device"], event["param"]) == (TRIP.event, TRIP.device, "record")
    fired = datetime.fromtimestamp(event["time_ms"] / 1000, UTC)
    assert event["filename"] == f"{TRIP.device}-{TRIP.event}-{fired:%Y%m%dT%H%M%SZ}.csv"
    stored = (root / "cloud-files" / event["filename"]).read_bytes()
    assert event["size"] == len(stored)
    assert event["md5"] == hashlib.md5(stored, usedforsecurity=False).hexdigest()
    assert event["md5_verified"] is True
    asset_id = default_asset_id(("invProductKey", "inverter01"))
    assert event["uri"] == f"enos-connect://o-demo/{asset_id}/1.csv"
    rows = list(csv.reader(io.StringIO(stored.decode())))
    assert rows[0] == ["time", *CAPTURE["points"]]
    times = [datetime.fromisoformat(row[0].replace("Z", "+00:00")) for row in rows[1:]]
    assert times == sorted(times)
    assert any(t < fired for t in times), (fired, times)
    assert any(t > fired for t in times), (fired, times)
    assert all(len(row) == 1 + len(CAPTURE["points"]) and all(row[1:]) for row in rows[1:])
    assert (
        f"The cloud stored the file event {TRIP.event} of {TRIP.device} with "
        f"record={event['filename']} ({len(stored)} bytes, md5 {event['md5']}, the md5 the "
        "upload declared), sent "
    ) in out


#: inverter-1's attributes as the cloud must hold them: the registration's own (site), the
#: SunSpec nameplate the gateway read from the simulator's registers, the static ones.
INVERTER_ATTRIBUTES = {
    "site": "North-2",
    "manufacturer": "Gatewayd Sim",
    "model_name": "SIM-INV-10K",
    "firmware_version": "4.12.3",
    "serial_number": "INV1-26-000481",
    "rated_power_kw": 10,
    "commissioned": "2026-11-30",
}


def assert_inverter_registered_once_with_its_attributes(summary: dict[str, Any], out: str) -> None:
    """inverter-1 (register:, no secret) was registered once, whatever the outage did,
    bound to the gateway, and the cloud holds exactly its attributes; the text says so."""
    assert summary["register_requests"] == 1
    registered = summary["registered"]["inverter-1"]
    asset_id = default_asset_id(("invProductKey", "inverter01"))
    assert registered == {
        "product_key": "invProductKey",
        "device_key": "inverter01",
        "asset_id": asset_id,
        "bound": True,
        "attributes": INVERTER_ATTRIBUTES,
    }
    assert (
        f"The gateway registered inverter-1 in the cloud as invProductKey/inverter01, asset id "
        f"{asset_id}, bound to the gateway; the cloud holds its attributes commissioned="
        "2026-11-30, firmware_version=4.12.3, manufacturer=Gatewayd Sim, model_name=SIM-INV-10K,"
        " rated_power_kw=10, serial_number=INV1-26-000481, site=North-2."
    ) in out


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
async def test_signal_stops_everything_cleanly(tmp_path: Path, signum: signal.Signals) -> None:
    """Ctrl-C or SIGTERM once data flows: exit 0, a summary with nothing lost, no traceback."""
    process = await asyncio.create_subprocess_exec(
        *DEMO, cwd=tmp_path, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    assert process.stdout is not None
    seen: list[str] = []
    try:
        while True:
            raw = await asyncio.wait_for(process.stdout.readline(), 30)
            assert raw, "the demo ended before data arrived: " + "".join(seen)
            line = raw.decode()
            seen.append(line)
            counts = dict(re.findall(r"(\S+)=[\d.]+/s,(\d+)pts", line))
            if set(counts) == DEVICES and all(int(n) > 0 for n in counts.values()):
                break
        process.send_signal(signum)
        out, err = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = "".join(seen) + out.decode() + err.decode()
    assert process.returncode == 0, text
    assert "Traceback" not in text
    assert re.search(r"The daemon committed \d+ samples and \d+ events: lost 0", text), text


def test_demo_runs_from_the_built_wheel_alone(tmp_path: Path) -> None:
    """The wheel ships the demo and its models: it runs unpacked, away from the repository."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "gatewayd", source / "gatewayd",
                    ignore=shutil.ignore_patterns("__pycache__"))  # fmt: skip
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path),
         str(source)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert build.returncode == 0, build.stderr
    (wheel,) = tmp_path.glob("gatewayd-*.whl")
    site = tmp_path / "site"
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(site)
    for model in ("generic_plc.yaml", "sdm630.yaml", "sunspec_inverter.yaml"):
        assert f"gatewayd/sim/demo/models/{model}" in names
    script = (
        "import sys; sys.path.insert(0, sys.argv[1]); import gatewayd; "
        "assert gatewayd.__file__.startswith(sys.argv[1]), gatewayd.__file__; "
        "from gatewayd.cli import main; sys.exit(main(sys.argv[2:]))"
    )
    run = subprocess.run(
        [sys.executable, "-c", script, str(site), "demo", "--duration", "4s", "--no-socat",
         "--json"],
        cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    summary = summary_of(run.stdout)
    assert summary["meter_link"] == "on RTU over TCP"
    assert {name for name, f in summary["devices"].items() if f["points"] > 0} == DEVICES
    assert summary["lost"] == 0
