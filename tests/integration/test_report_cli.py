"""`gatewayd plan` shows each point's report rule; `gatewayd status` the points polled and
sent per minute of each device (with a running daemon, simulator and emulator)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from gatewayd.app import STATUS_FILE, state_dir
from gatewayd.cli import main
from tests.integration.test_report_by_exception_e2e import rbe_site
from tests.integration.test_run_e2e import Site, running, write_site
from tests.integration.test_status_cli import gatewayd_status
from tests.support import async_wait_until, free_port

__all__ = ["rbe_site"]


def test_plan_shows_each_points_report_rule(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Device rule for all points, a per-point override for one; text and JSON."""
    path = write_site(tmp_path, free_port(), free_port())
    document = yaml.safe_load(path.read_text())
    document["devices"][0]["report"] = {"on": "change", "deadband": "2%", "heartbeat": "10m"}
    document["devices"][0]["point_reports"] = {"alarm": {"on": "always"}}
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    assert main(["plan", str(path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    reports = [line.strip() for line in lines if line.strip().startswith("report ")]
    assert reports == [
        "report change ±2% hb 600s: voltage, energy, temp",
        "report always: alarm",
        "report always: voltage, energy, temp, alarm",
    ]
    assert main(["plan", str(path), "--device", "meter-1", "--json"]) == 0
    device = json.loads(capsys.readouterr().out)["buses"][0]["devices"][0]
    assert device["report"] == {
        "voltage": "change ±2% hb 600s",
        "energy": "change ±2% hb 600s",
        "temp": "change ±2% hb 600s",
        "alarm": "always",
    }


async def test_status_shows_points_polled_and_sent_per_minute(rbe_site: Site) -> None:
    """Still meters on change: the status file and `gatewayd status` count every polled
    point and far fewer sent."""
    site = rbe_site
    path = state_dir(site.config) / STATUS_FILE

    def counts() -> list[tuple[int, int]]:
        if not path.exists():
            return []
        devices = json.loads(path.read_text())["devices"]
        return [(d["polled_per_minute"], d["sent_per_minute"]) for d in devices]

    async with running(site):
        # 4 points every 200 ms: 20 polls (80 points) take 4 s.
        await async_wait_until(
            lambda: len(counts()) == 2 and all(p >= 80 for p, _ in counts()),
            30,
            "a status report with 20 polls of each meter",
        )
        assert all(sent * 3 < polled for polled, sent in counts())
        code, text = await gatewayd_status(site)
    assert code == 0
    meter = next(line for line in text.splitlines() if "meter-1" in line)
    match = re.search(r"(\d+)/min polled, (\d+)/min sent", meter)
    assert match is not None, meter
    assert int(match[2]) * 3 < int(match[1])
