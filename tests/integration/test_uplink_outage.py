"""A cloud outage end to end: which channel (post or resume) every sample arrived on.

Modbus simulator -> gatewayd (in-process, default reconnect policy) -> EnOS emulator with
its connect throttle on. The emulator is stopped and started again; the instants that
decide a sample's channel come from the cloud's side: when the link was cut and when the
emulator accepted each sub-device's login. Rule (enos-protocol.md §6, item 3): a sample
taken while the gateway was offline, or before its sub-device's login completed, must
never arrive by `post.batch`; later samples arrive by `post` while the backlog is still
draining; nothing is lost.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import yaml

from gatewayd.config.loader import load_config
from gatewayd.config.models import DeviceModel
from gatewayd.sim.device import DeviceSimulator
from gatewayd.sim.emulator import EmulatorConfig, EnosEmulator
from gatewayd.sim.emulator.records import LoginRecord
from tests.integration.modbus_fixtures import still_units
from tests.integration.test_run_e2e import (
    METER_MODEL,
    Site,
    produced,
    received,
    running,
    write_site,
)
from tests.support import async_wait_until, free_port

#: Samples this long after their device's login must be live (the login reply has to
#: travel back to the gateway first; generous for a loaded 2-core machine).
LOGIN_SETTLE_MS = 2000


@pytest.fixture
async def outage_site(tmp_path: Path) -> AsyncIterator[Site]:
    """Two meters polled every 200 ms; a 30 s live window (the default) and a slow backlog
    pace, so that offline samples are still young when the cloud returns and the backlog
    takes several seconds to drain."""
    model = DeviceModel.model_validate(METER_MODEL)
    async with DeviceSimulator(still_units(model, 1, 2)) as sim:
        for unit in (1, 2):
            sim.set_value(unit, "voltage", 230.0 + unit)
            sim.set_value(unit, "energy", 1000 * unit)
            sim.set_value(unit, "temp", 21.5)
            sim.set_value(unit, "alarm", False)
        path = write_site(tmp_path, sim.port, free_port())
        document = yaml.safe_load(path.read_text())
        document["uplink"] = {
            "live_window": "30s",
            "reply_timeout": "5s",
            "backlog_points_per_second": 20,
        }
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


def first_logins(logins: list[LoginRecord]) -> dict[str, int]:
    """Device key -> when the emulator first accepted its login (epoch ms)."""
    accepted: dict[str, int] = {}
    for login in logins:
        if login.action == "login" and login.code == 200:
            accepted.setdefault(login.device_key, login.received_at)
    return accepted


async def test_offline_samples_arrive_only_by_resume_and_live_ones_do_not_wait(
    outage_site: Site,
) -> None:
    """Samples of the outage and before each re-login go by resume; later ones by post,
    while the backlog still drains; every committed sample arrives."""
    site = outage_site
    async with running(site):
        await async_wait_until(
            lambda: {"meter1", "meter2"} <= {r.device_key for r in site.emulator.records.points},
            15,
            "live values of both meters",
        )
        before = first_logins(site.emulator.records.logins)
        site.archived.extend(site.emulator.records.points)
        cut_ms = int(time.time() * 1000)
        await site.emulator.stop()
        down_from = len(site.committed)
        await async_wait_until(lambda: len(site.committed) >= down_from + 20, 20, "cycles")
        site.emulator = EnosEmulator(site.emulator.config, port=site.config.gateway.broker.port)
        await site.emulator.start()
        await async_wait_until(
            lambda: len(first_logins(site.emulator.records.logins)) == 2, 60, "re-login"
        )
        after = first_logins(site.emulator.records.logins)
        settled = max(after.values()) + LOGIN_SETTLE_MS
        await async_wait_until(
            lambda: any(
                r.channel == "post" and r.time >= settled for r in site.emulator.records.points
            ),
            30,
            "live data after the re-login",
        )
        await async_wait_until(
            lambda: produced(site) <= received(site), 90, "every committed sample in the cloud"
        )

    assert set(before) == set(after) == {"meter1", "meter2"}
    # One CONNECT brought the gateway back (refused TCP connects cost none), none refused.
    assert (site.emulator.stats.connects, site.emulator.stats.refused_connects) == (1, 0)
    posted = [r for r in site.delivered() if r.channel == "post"]
    # No sample taken before its device's login (first session) or between the cut and
    # its re-login arrived by post.
    early = [r for r in posted if r.time < before[r.device_key]]
    offline = [r for r in posted if cut_ms <= r.time < after[r.device_key]]
    assert early == []
    assert offline == []
    # The outage's samples exist and all came by resume.
    outage = {s for s in produced(site) if cut_ms <= s[2] < after[s[0]]}
    assert len(outage) >= 2 * 4 * 15  # 2 meters x 4 points x at least 15 cycles
    assert outage <= received(site, "resume")
    # Samples taken well after the re-login arrived live, not as backlog...
    live_after = {s for s in produced(site) if s[2] >= after[s[0]] + LOGIN_SETTLE_MS}
    assert live_after
    assert live_after <= received(site, "post")
    # ...and the first of them did not wait for the backlog to drain.
    resumed_at = [r.received_at for r in site.emulator.records.points if r.channel == "resume"]
    first_live = min(
        r.received_at
        for r in site.emulator.records.points
        if r.channel == "post" and r.time >= after[r.device_key] + LOGIN_SETTLE_MS
    )
    assert first_live < max(resumed_at)
    # Nothing lost.
    assert produced(site) <= received(site)
