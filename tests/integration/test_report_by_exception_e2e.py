"""Report by exception end to end: Modbus simulator → gatewayd → EnOS emulator, through a
cloud outage and a daemon restart.

The meters report on change (deadband 0.5, heartbeat 2 s). The test moves meter 1's
voltage in steps (some within the deadband, some beyond it, one during the outage) and
checks what the cloud holds: just before each next step, the cloud's last voltage is
within the deadband of the value the device held; no two records of a point are further
apart than the heartbeat (plus one poll's slack) while the daemon runs, the outage
included (its heartbeats arrive by resume); the first reading after the restart is sent
although it is within the deadband of the last one sent; far fewer points are sent than
polled.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from itertools import pairwise
from pathlib import Path

import pytest
import yaml

from gatewayd.config.loader import load_config
from gatewayd.config.models import DeviceModel
from gatewayd.sim.device import DeviceSimulator
from gatewayd.sim.emulator import EmulatorConfig, EnosEmulator
from gatewayd.sim.emulator.records import PointRecord
from tests.integration.modbus_fixtures import still_units
from tests.integration.test_run_e2e import METER_MODEL, Site, running, write_site
from tests.support import async_wait_until, free_port

DEADBAND = 0.5
HEARTBEAT_MS = 2000
POLL_MS = 200
#: A heartbeat goes with the first poll at or after it: a loaded machine may delay a poll.
GAP_SLACK_MS = 1500


@pytest.fixture
async def rbe_site(tmp_path: Path) -> AsyncIterator[Site]:
    """Two still meters reporting on change (2 s heartbeat); a cloud that knows them."""
    async with report_site(tmp_path, "2s") as site:
        yield site


@contextlib.asynccontextmanager
async def report_site(tmp_path: Path, heartbeat: str) -> AsyncIterator[Site]:
    """Two still meters reporting on change; a cloud that knows them."""
    model = DeviceModel.model_validate(METER_MODEL)
    async with DeviceSimulator(still_units(model, 1, 2)) as sim:
        for unit in (1, 2):
            sim.set_value(unit, "voltage", 231.0)
            sim.set_value(unit, "energy", 1000 * unit)
            sim.set_value(unit, "temp", 21.5)
            sim.set_value(unit, "alarm", False)
        path = write_site(tmp_path, sim.port, free_port())
        document = yaml.safe_load(path.read_text())
        for device in document["devices"]:
            device["report"] = {"on": "change", "deadband": DEADBAND, "heartbeat": heartbeat}
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        config = load_config(path)
        emulator = EnosEmulator(
            EmulatorConfig.from_gateway_config(config), port=config.gateway.broker.port
        )
        await emulator.start()
        site = Site(path, config, sim, emulator)
        try:
            yield site
        finally:
            # An outage test replaces the cloud: stop the one running now (stop is idempotent).
            await site.emulator.stop()
            await emulator.stop()


def series(site: Site, device_key: str, point: str) -> list[PointRecord]:
    """The cloud's records of one point, in time order (one per time)."""
    mine = [r for r in site.delivered() if (r.device_key, r.point) == (device_key, point)]
    by_time = {r.time: r for r in mine}
    return [by_time[t] for t in sorted(by_time)]


def held_at(records: list[PointRecord], t_ms: int) -> PointRecord:
    """The cloud's value of a point at `t_ms`: its last record at or before it."""
    return [r for r in records if r.time <= t_ms][-1]


async def test_cloud_series_stays_within_deadband_through_outage_and_restart(
    rbe_site: Site,
) -> None:
    """Deadband, heartbeat, outage backfill and restart, checked on the cloud's series."""
    site = rbe_site
    steps: list[tuple[int, float]] = [(0, 231.0)]

    def step(value: float) -> None:
        site.sim.set_value(1, "voltage", value)
        steps.append((int(time.time() * 1000), value))

    def cloud_has(value: float) -> bool:
        return any(r.value == pytest.approx(value) for r in series(site, "meter1", "voltage"))

    async def cycles(n: int) -> None:
        # Still meters commit only when a heartbeat is due: as few as one cycle per
        # heartbeat when both meters' fall in the same poll (15 needed over 30 s under load).
        seen = len(site.committed)
        timeout = 30 + n * HEARTBEAT_MS / 1000
        await async_wait_until(lambda: len(site.committed) >= seen + n, timeout, f"{n} cycles")

    runs: list[tuple[int, int]] = []  # (start, stop) wall ms of each daemon run
    async with running(site, quick_reconnect=True) as daemon:
        start = int(time.time() * 1000)
        await async_wait_until(lambda: cloud_has(231.0), 15, "the first voltage")
        step(231.3)  # within the deadband: held back until a heartbeat
        await cycles(6)
        step(233.0)  # beyond: sent
        await async_wait_until(lambda: cloud_has(233.0), 15, "233 V in the cloud")
        await cycles(6)
        site.archived.extend(site.emulator.records.points)
        await site.emulator.stop()
        step(236.0)  # beyond, during the outage: spooled, arrives by resume
        await cycles(6)
        step(236.2)  # within the deadband of 236.0
        await cycles(6)
        site.emulator = EnosEmulator(site.emulator.config, port=site.config.gateway.broker.port)
        site.emulator.throttle.enabled = False
        await site.emulator.start()
        await async_wait_until(lambda: cloud_has(236.0), 60, "the outage's values by resume")
        await cycles(6)
        assert daemon.spool is not None
        report = await daemon.report(daemon.spool)
        runs.append((start, int(time.time() * 1000)))
    meter1 = next(d for d in report.devices if d["device"] == "meter-1")
    # Counted over the last minute: every point of every poll, few of them sent.
    assert meter1["polled_per_minute"] >= 4 * 10
    assert meter1["sent_per_minute"] * 3 < meter1["polled_per_minute"]

    before_restart = len(site.committed)
    async with running(site, quick_reconnect=True):
        start = int(time.time() * 1000)
        await async_wait_until(
            lambda: any("meter-1" in r.devices for r in site.committed[before_restart:]),
            15,
            "the first poll after the restart",
        )
        first = next(r for r in site.committed[before_restart:] if "meter-1" in r.devices)
        await cycles(15)
        runs.append((start, int(time.time() * 1000)))

    # The first reading after the restart is sent though within the deadband of 236.0.
    first_voltage = [
        s for s in first.samples if (s.device, s.measurepoint) == ("meter-1", "voltage")
    ]
    assert [s.value for s in first_voltage] == [pytest.approx(236.2)]

    voltage = series(site, "meter1", "voltage")
    assert "resume" in {r.channel for r in voltage}
    # Just before each next step (and at the end) the cloud held the device's value to
    # within the deadband.
    ends = [t for t, _ in steps[1:]] + [runs[-1][1]]
    for (_, value), end in zip(steps, ends, strict=True):
        assert abs(held_at(voltage, end - 1).value - value) <= DEADBAND + 1e-9, (value, end)
    # No gap longer than the heartbeat while the daemon ran, for every point of both meters.
    for device_key in ("meter1", "meter2"):
        for point in ("voltage", "energy", "temp", "alarm"):
            records = series(site, device_key, point)
            for run_start, run_stop in runs:
                times = [r.time for r in records if run_start <= r.time <= run_stop]
                assert times, (device_key, point)
                gaps = [b - a for a, b in pairwise(times)]
                assert max(gaps, default=0) <= HEARTBEAT_MS + GAP_SLACK_MS, (device_key, point)
    # 231.3 (within the deadband) went only with heartbeats: one per heartbeat at most.
    held_back = [r for r in voltage if steps[1][0] <= r.time < steps[2][0]]
    assert len(held_back) <= (steps[2][0] - steps[1][0]) // HEARTBEAT_MS + 1


async def test_a_new_session_sends_every_point_again(tmp_path: Path) -> None:
    """Unchanged values with an hour's heartbeat: after the cloud comes back, the first
    poll of the new session sends every point of both meters, live."""
    async with report_site(tmp_path, "1h") as site, running(site, quick_reconnect=True) as d:

        def polled() -> int:  # meter-1's points polled in the last minute
            return d.pollers["plant"].report_rates()["meter-1"][0]

        await async_wait_until(
            lambda: len({(r.device_key, r.point) for r in site.emulator.records.points}) == 8,
            15,
            "every point of both meters once",
        )
        await site.emulator.stop()
        # Nothing changes, so nothing is committed: count polls, not committed cycles.
        seen = polled()
        await async_wait_until(lambda: polled() >= seen + 3 * 4, 30, "3 polls offline")
        site.emulator = EnosEmulator(site.emulator.config, port=site.config.gateway.broker.port)
        site.emulator.throttle.enabled = False
        await site.emulator.start()
        await async_wait_until(
            lambda: len({(r.device_key, r.point) for r in site.emulator.records.points}) == 8,
            30,
            "every point of both meters again",
        )
    # Nothing changed and no heartbeat was due: only the new session made them go.
    values = {(r.device_key, r.point): r.value for r in site.emulator.records.points}
    assert values[("meter1", "voltage")] == pytest.approx(231.0)
    assert values[("meter2", "energy")] == 2000
