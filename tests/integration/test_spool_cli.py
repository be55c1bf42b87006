"""`gatewayd spool stats|dead-letters` as a subprocess, while a spool owner holds the file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from gatewayd.samples import Event, Sample
from gatewayd.spool.rows import Kind
from gatewayd.spool.store import SpoolStore
from tests.unit.spool_points import take_points

REPO = Path(__file__).resolve().parents[2]
CONFIG = """\
gateway:
  product_key: gwPK
  device_key: gwDK
  device_secret: gw-secret
  broker:
    host: 127.0.0.1
spool:
  path: state/spool.db
  max_bytes: 4MiB
"""


def _gatewayd(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gatewayd", "spool", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=60,
        check=False,
    )


def test_stats_and_dead_letters_read_a_spool_in_use(tmp_path: Path) -> None:
    """With the owner's connection open and rows in flight, the CLI reports exact figures."""
    config = tmp_path / "gatewayd.yaml"
    config.write_text(CONFIG)
    assert _gatewayd("stats", str(config)).returncode == 66  # no spool yet
    store = SpoolStore.open(tmp_path / "state" / "spool.db", max_bytes=4 << 20)
    store.append(
        [Sample("meter-1", "P", float(i), 1_700_000_000_000 + i) for i in range(1000)],
        [Event("meter-1", "trip", 1_700_000_000_500, {"phase": "L2"})],
        now_ms=1_700_000_001_000,
    )
    rows = take_points(store, 3)
    store.dead_letter(
        Kind.SAMPLES, [rows[0].id], 1204, "measurepoint not in model", 1_700_000_002_000
    )
    try:
        done = _gatewayd("stats", "--json", str(config))
        assert done.returncode == 0, done.stderr
        data = json.loads(done.stdout)
        assert (data["samples"], data["events"], data["dead_letters"]) == (999, 1, 1)
        assert data["oldest_sample_ts_ms"] == 1_700_000_000_001
        assert data["oldest_sample_ts_iso"] == "2023-11-14T22:13:20.001Z"
        assert data["last_append_iso"] == "2023-11-14T22:13:21.000Z"
        assert data["in_flight_samples"] is None
        assert data["max_bytes"] == 4 << 20
        assert 0 < data["file_bytes"] <= 4 << 20
        assert data["sample_bytes"] > 0

        text = _gatewayd("stats", str(config))
        assert text.returncode == 0
        assert "samples       999 points in 999 frames" in text.stdout
        assert "oldest 2023-11-14T22:13:20.001Z" in text.stdout
        assert "of 4.0 MiB cap" in text.stdout

        letters = _gatewayd("dead-letters", "--json", str(config))
        assert letters.returncode == 0
        (letter,) = json.loads(letters.stdout)
        assert (letter["kind"], letter["device"], letter["name"], letter["value"]) == (
            "samples",
            "meter-1",
            "P",
            0.0,
        )
        assert (letter["code"], letter["message"]) == (1204, "measurepoint not in model")
        line = _gatewayd("dead-letters", str(config)).stdout
        assert "code 1204  samples  meter-1  P" in line
        # The owner still works after the reads (the CLI took no lock it kept).
        assert store.ack(Kind.SAMPLES, [r.id for r in rows[1:]]) == 2
    finally:
        store.close()


def test_unreadable_spool_is_reported_not_moved(tmp_path: Path) -> None:
    """A garbage spool file makes the CLI exit 74 and leaves the file where it is."""
    config = tmp_path / "gatewayd.yaml"
    config.write_text(CONFIG)
    spool = tmp_path / "state" / "spool.db"
    spool.parent.mkdir()
    spool.write_bytes(b"garbage" * 1000)
    done = _gatewayd("stats", str(config))
    assert done.returncode == 74
    assert "cannot read" in done.stderr
    assert spool.read_bytes() == b"garbage" * 1000
    assert sorted(p.name for p in spool.parent.iterdir()) == ["spool.db"]


def test_invalid_config_exits_78(tmp_path: Path) -> None:
    """A config error is printed with its location and exits EX_CONFIG."""
    config = tmp_path / "gatewayd.yaml"
    config.write_text(CONFIG.replace("4MiB", "4"))
    done = _gatewayd("dead-letters", str(config))
    assert done.returncode == 78
    assert "spool.max_bytes" in done.stderr
