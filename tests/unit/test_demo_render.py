"""The demo's pure parts: table/line/summary rendering and the cloud bookkeeping."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatewayd.modbus.poller import CycleResult
from gatewayd.samples import Event, Quality, Sample
from gatewayd.sim.demo.render import (
    DeviceRow,
    Snapshot,
    format_value,
    render_line,
    render_summary,
    render_table,
)
from gatewayd.sim.demo.site import MODEL_FILES, shipped_models
from gatewayd.sim.demo.tally import CloudTally, Ledger, OutageTimeline, ReconnectCountdown, account
from gatewayd.sim.emulator.records import EventRecord, PointRecord, Records

REPO = Path(__file__).resolve().parents[2]


def snapshot(**changes: object) -> Snapshot:
    base: dict[str, object] = {
        "elapsed_s": 75.4,
        "devices": (
            DeviceRow("inverter-1", "tcp", "up", 30.0, 1500, 3,
                      (("ac_power", 1234), ("ac_frequency", 50.0123456), ("ok", True))),
            DeviceRow("meter-1", "rtu pty", "backoff", 10.5, 630, 0, ()),
        ),
        "post": 2000, "resume": 130, "events": 3, "backlog_rows": 42, "dead_letters": 1,
        "uplink": "reconnecting in 4s", "outage": "CLOUD DOWN 5s (back in 25s)",
    }  # fmt: skip
    base.update(changes)
    return Snapshot(**base)  # type: ignore[arg-type]


def test_table_lays_out_devices_values_and_footer() -> None:
    """Rows are aligned, values formatted, the footer carries backlog, counts and uplink."""
    text = render_table(snapshot(), width=120)
    lines = text.splitlines()
    assert lines[0].startswith("gatewayd demo  0:01:15  ")
    assert lines[2].split() == ["DEVICE", "LINK", "STATE", "PTS/S", "POINTS", "EVENTS",
                                "LAST", "VALUES", "(in", "the", "cloud)"]  # fmt: skip
    assert lines[3] == (
        "inverter-1  tcp      up         30.0     1500       3  "
        "ac_power=1234 ac_frequency=50.012 ok=true"
    )
    assert lines[4] == "meter-1     rtu pty  backoff    10.5      630       0  "
    assert "cloud   2000 points live (post) · 130 backfilled (resume) · 3 events" in lines
    assert "spool   backlog 42 rows · dead letters 1" in lines
    assert "uplink  reconnecting in 4s · CLOUD DOWN 5s (back in 25s)" in lines
    assert "\x1b" not in text  # the caller adds the clear/home sequence
    assert text.endswith("\n")


def test_table_cuts_every_line_to_the_width() -> None:
    """On a narrow terminal the last values are cut and no line exceeds the width."""
    text = render_table(snapshot(warnings=2, last_warning="EnOS connection lost: " + "x" * 80),
                        width=75)  # fmt: skip
    assert max(len(line) for line in text.splitlines()) <= 75
    row = next(line for line in text.splitlines() if line.startswith("inverter-1"))
    assert "ac_power=1234" in row
    assert "ac_frequency" not in row
    assert any(line.startswith("log     2 warnings, last: EnOS") for line in text.splitlines())


def test_plain_line_has_every_figure_and_no_ansi() -> None:
    """The non-terminal line is one line with machine-greppable key=value figures."""
    line = render_line(snapshot())
    assert "\n" not in line
    assert "\x1b" not in line
    assert line.startswith("[0:01:15] uplink=reconnecting_in_4s backlog=42 post=2000 ")
    assert "resume=130 events=3 dead=1 files=0 |" in line
    assert "inverter-1=30.0/s,1500pts,3ev meter-1=10.5/s,630pts,0ev" in line
    assert line.endswith("[CLOUD DOWN 5s (back in 25s)]")


@pytest.mark.parametrize(
    ("value", "text"),
    [(True, "true"), (False, "false"), (3, "3"), (229.87654, "229.88"), ("auto", "auto")],
)
def test_values_are_compact(value: object, text: str) -> None:
    """Floats get 5 significant digits, bools read true/false."""
    assert format_value(value) == text  # type: ignore[arg-type]


def point(device: str, name: str, value: object, t: int, channel: str = "post") -> PointRecord:
    return PointRecord("pk", device, name, value, None, t, channel, t)  # type: ignore[arg-type]


def test_cloud_tally_reads_new_records_only_and_counts_per_device() -> None:
    """Absorbing twice counts each record once; rates, last values and duplicates follow."""
    records = Records()
    tally = CloudTally([("inv", "inv01"), ("m1", "meter01")], started=0.0)
    records.points += [point("inv01", "p", 1, 1000), point("inv01", "q", 2.5, 1000),
                       point("meter01", "v", 230.0, 1000)]  # fmt: skip
    tally.absorb(records, now=1.0)
    records.points += [point("inv01", "p", 7, 2000, "resume"), point("inv01", "p", 7, 2000)]
    records.events.append(EventRecord("pk", "meter01", "over_voltage", {}, 1500, 1600))
    tally.absorb(records, now=2.0)
    tally.absorb(records, now=2.5)
    inv, meter = tally.devices
    assert (inv.post, inv.resume, inv.points, inv.events) == (3, 1, 4, 0)
    assert inv.values == {"p": 7, "q": 2.5}
    assert (meter.points, meter.events) == (1, 1)
    assert (tally.post, tally.resume, tally.events, tally.duplicates) == (4, 1, 1, 1)
    assert inv.rate(now=2.5, since=0.0) == pytest.approx(4 / 2.5)
    assert inv.rate(now=6.5, since=0.0) == pytest.approx(2 / 5)  # the 1 s arrivals aged out
    assert inv.rate(now=20.0, since=0.0) == 0.0


def test_account_counts_lost_only_what_neither_cloud_nor_spool_holds() -> None:
    """Missing samples covered by spool rows are kept, not lost; the rest are lost."""
    ledger = Ledger({"inv": "inv01"})
    samples = [Sample("inv", "p", v, 1000 * v) for v in (1, 2, 3)]
    ledger.observe(CycleResult("bus", [*samples, Sample("inv", "p", 0, 9, Quality.BAD)],
                               [Event("inv", "trip", 2000)], 0, 0.0, ("inv",), 1, 0))  # fmt: skip
    records = Records()
    records.points.append(point("inv01", "p", 1, 1000))
    tally = CloudTally([("inv", "inv01")], started=0.0)
    tally.absorb(records, now=1.0)
    kept = account(ledger, tally, spool_samples=1, spool_events=1)
    assert (kept.offered_samples, kept.offered_events, kept.live, kept.in_spool, kept.lost) == (
        3, 1, 1, 2, 1,
    )  # fmt: skip
    assert account(ledger, tally, spool_samples=2, spool_events=1).lost == 0


def test_outage_timeline_follows_cut_reconnect_and_drain() -> None:
    """Phases advance with the facts observed; the backfill counts from the cut."""
    line = OutageTimeline(after=10.0, duration=30.0)
    line.observe(5.0, connected=True, backlog=0, resume=4)
    assert line.phase == "pending"
    assert line.describe(5.0) == "uplink cut in 5s"
    line.cut_at = 10.0
    line.observe(20.0, connected=False, backlog=300, resume=4)
    assert line.describe(20.0) == "CLOUD DOWN 10s (back in 20s)"
    line.restored_at = 40.0
    line.observe(41.0, connected=False, backlog=900, resume=4)
    assert line.phase == "reconnecting"
    line.observe(43.0, connected=True, backlog=500, resume=404)
    assert (line.phase, line.reconnected_at, line.resume_after) == ("draining", 43.0, 400)
    line.observe(45.0, connected=True, backlog=0, resume=904)
    assert (line.phase, line.drained_at, line.backlog_peak) == ("done", 45.0, 900)
    assert line.describe(46.0) == "outage over: 900 points backfilled, peak backlog 900 rows"


def test_summary_tells_delivery_outage_and_loss() -> None:
    """The closing paragraph gives live/backfilled/events, the outage story and lost."""
    ledger = Ledger({})
    tally = CloudTally([], started=0.0)
    outage = OutageTimeline(10.0, 30.0, cut_at=10.0, restored_at=40.0, reconnected_at=42.0,
                            drained_at=45.0, backlog_peak=900)  # fmt: skip
    text = render_summary(
        account(ledger, tally, spool_samples=0, spool_events=0),
        elapsed_s=60.2, devices=4, meter_link="on RTU over TCP", dead_letters=0, outage=outage,
    )  # fmt: skip
    assert text.startswith("Ran 60s with 4 devices (meters on RTU over TCP). ")
    assert "cut at 10s for 30s; the spool backlog peaked at 900 rows" in text
    assert "reconnected 2s after the cloud came back and drained the backlog via resume in 3s." in (
        text
    )
    assert text.endswith("committed 0 samples and 0 events: lost 0.")
    assert "\n" not in text


def test_shipped_models_equal_the_example_models() -> None:
    """The package-data copies of the models never drift from config/models."""
    shipped = shipped_models()
    assert sorted(shipped) == sorted(p.name for p in (REPO / "config" / "models").glob("*.yaml"))
    assert set(shipped) == set(MODEL_FILES)
    for name, text in shipped.items():
        assert text == (REPO / "config" / "models" / name).read_text(encoding="utf-8"), name


def test_reconnect_countdown_counts_down_each_wait() -> None:
    """The once-set "reconnecting in Ns" counts down; a new attempt restarts it; hint on long."""
    countdown = ReconnectCountdown()
    assert countdown.text(0.0, "connected", 1) == "connected"
    assert countdown.text(1.0, "reconnecting in 4s", 2) == "reconnecting in 4s"
    assert countdown.text(3.0, "reconnecting in 4s", 2) == "reconnecting in 2s"
    assert countdown.text(9.0, "reconnecting in 4s", 2) == "reconnecting in 0s"
    assert countdown.text(9.5, "reconnecting in 4s", 3) == "reconnecting in 4s"  # next wait
    assert countdown.text(10.0, "reconnecting in 107s", 4) == (
        "reconnecting in 107s (EnOS connect throttle: at most 4 CONNECTs in 120 s)"
    )
    assert countdown.text(50.0, "reconnecting in 107s", 4).startswith("reconnecting in 67s ")
