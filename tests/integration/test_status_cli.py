"""`gatewayd status` reads what the running daemon reports."""

from __future__ import annotations

import asyncio
import json
import sys
import time

import pytest

from gatewayd.app import STATUS_FILE, state_dir
from gatewayd.cli import main
from tests.integration.test_run_e2e import Site, running, site
from tests.support import async_wait_until

__all__ = ["site"]


async def gatewayd_status(site: Site, *args: str) -> tuple[int, str]:
    """Run `gatewayd status` as its own process (the daemon's logs share this one's stdout)."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gatewayd", "status", str(site.config_path), *args,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, _ = await process.communicate()
    return await process.wait(), out.decode()


async def test_status_shows_devices_spool_and_uplink(site: Site) -> None:
    """JSON and text status name every device with its health and the uplink state."""
    path = state_dir(site.config) / STATUS_FILE
    async with running(site) as daemon:
        await async_wait_until(lambda: site.emulator.records.points, 15, "data in the cloud")
        await async_wait_until(
            lambda: path.exists() and json.loads(path.read_text())["devices_up"] == 2,
            15,
            "a status report with both devices up",
        )
        code, out = await gatewayd_status(site, "--json")
        assert code == 0
        report = json.loads(out)
        assert report["running"] is True
        assert report["pid"] > 0
        assert report["devices_total"] == 2
        assert report["uplink"] == "connected"
        assert {d["device"] for d in report["devices"]} == {"meter-1", "meter-2"}
        assert all(d["state"] == "up" for d in report["devices"])
        code, text = await gatewayd_status(site)
        assert code == 0
        assert "devices 2/2 up" in text
        assert "meter-1" in text
        assert "uplink connected" in text
        assert daemon.uplink is not None


def test_status_without_a_daemon_says_so(site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    """No status file: exit 69 (EX_UNAVAILABLE) with a clear line on stderr."""
    assert main(["status", str(site.config_path)]) == 69
    assert "gatewayd is not running" in capsys.readouterr().err


def test_status_prints_the_integration_counters_and_reads_an_older_report(
    site: Site, capsys: pytest.CaptureFixture[str]
) -> None:
    """The historical-events channel and file-event counters get a line each; a report
    of an older gatewayd (without those keys) or with the features off prints neither."""
    path = state_dir(site.config) / STATUS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    base = {
        "pid": 7, "updated_ms": int(time.time() * 1000), "uplink": "connected",
        "devices_up": 0, "devices_total": 0, "points_per_second": 0.0, "backlog_rows": 0,
        "dead_letters": 0, "dropped_rows": 0, "delivered_points": 0, "devices": [],
    }  # fmt: skip
    path.write_text(json.dumps(base))
    assert main(["status", str(site.config_path)]) == 0
    older = capsys.readouterr().out
    assert "historical events" not in older
    assert "file events" not in older
    channel = {"events": 40, "messages": 3, "dead_lettered": 1, "timeouts": 2, "connects": 5,
               "refused_connects": 4}  # fmt: skip
    files = {"pending": 2, "dead_letters": 1, "dropped": 0, "delivered": 9, "retries": 6}
    path.write_text(json.dumps({**base, "historical_events": channel, "file_events": files}))
    assert main(["status", str(site.config_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert (
        "  historical events (integration channel): 40 delivered in 3 messages, "
        "1 dead letters, 2 timeouts; 5 connects (4 refused)"
    ) in lines
    assert "  file events: 2 waiting, 1 dead letters, 0 dropped; 9 delivered, 6 retries" in lines
