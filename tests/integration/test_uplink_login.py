"""Sub-device login and the gateway CONNECT against the EnOS emulator, with the real daemon.

Two meters on a Modbus simulator (`site` from test_run_e2e); the cloud is changed before
the daemon starts: meter2 disabled (723), outside the gateway's topology (740) or holding
another secret (742). meter1 is always fine and must never suffer for meter2.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import socket
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import structlog
import yaml

from gatewayd.clock import VirtualClock
from gatewayd.config.loader import load_config
from gatewayd.config.models import Config
from gatewayd.enos.reconnect import THROTTLE_ATTEMPTS
from gatewayd.sim.emulator.auth import ConnectThrottle
from gatewayd.spool.worker import Spool
from gatewayd.uplink.subdevices import SubDevice, SubDeviceRegistry
from gatewayd.uplink.uplink import Uplink
from tests.integration.test_run_e2e import Site, produced, received, running, site
from tests.support import async_wait_until

__all__ = ["site"]

GW = ("gwPK", "gwDK")
METER2 = ("meterPK", "meter2")


def with_uplink_options(site: Site, **options: object) -> None:
    """Rewrite the site's gatewayd.yaml with extra `uplink:` options and reload it."""
    data = yaml.safe_load(site.config_path.read_text())
    data["uplink"].update(options)
    site.config_path.write_text(yaml.safe_dump(data, sort_keys=False))
    site.config = load_config(site.config_path)


def logins(site: Site, device_key: str) -> list[tuple[str, int]]:
    """(action, code) of every login/logout the cloud saw for `device_key`, in order."""
    return [(r.action, r.code) for r in site.emulator.records.logins if r.device_key == device_key]


def cloud_points(site: Site, device_key: str, channel: str | None = None) -> int:
    return len(site.emulator.values(device=device_key, channel=channel))


def sub(uplink: Uplink | None, name: str) -> SubDevice:
    assert uplink is not None
    device = uplink.registry.get(name)
    assert device is not None
    return device


async def more_cycles(site: Site, n: int) -> None:
    """Wait until `n` more poll cycles were committed (time passes in the daemon's terms)."""
    start = len(site.committed)
    await async_wait_until(lambda: len(site.committed) >= start + n, 15, f"{n} more cycles")


async def test_disabled_sub_device_waits_for_enable(site: Site) -> None:
    """723 for meter2: meter1 flows, meter2 is asked once (batch + single), enable brings it."""
    site.emulator.state.set_enabled(METER2, False)
    async with running(site) as daemon:
        await async_wait_until(lambda: cloud_points(site, "meter1", "post") >= 8, 15, "m1 live")
        await more_cycles(site, 10)
        assert logins(site, "meter2") == [("login", 723), ("login", 723)]
        meter2 = sub(daemon.uplink, "meter-2")
        assert (meter2.online, meter2.last_error) == (False, "disabled")
        assert cloud_points(site, "meter2") == 0
        assert site.emulator.online_sub_devices(*GW) == [("meterPK", "meter1")]

        params = [{"productKey": "meterPK", "deviceKey": "meter2"}]
        reply = await site.emulator.send_command(*GW, "combine.enable", params)
        assert reply["code"] == 200, reply
        await async_wait_until(lambda: meter2.online, 15, "meter2 logged in after enable")
        assert logins(site, "meter2")[2:] == [("login", 200)]
        await async_wait_until(
            lambda: cloud_points(site, "meter2", "post") >= 4, 15, "meter2 live data"
        )
        assert site.emulator.online_sub_devices(*GW) == [
            ("meterPK", "meter1"),
            ("meterPK", "meter2"),
        ]


async def test_topology_missing_at_start_is_added_before_login_when_auto_topo(
    site: Site,
) -> None:
    """auto_topo: thing.topo.get shows meter2 outside the topology; it is added with
    thing.topo.add before its first login (no 740), logs in, flows."""
    with_uplink_options(site, auto_topo=True)
    site.emulator.state.devices[METER2].gateway = None
    async with running(site) as daemon:
        await async_wait_until(lambda: cloud_points(site, "meter2", "post") >= 4, 15, "m2 live")
        assert logins(site, "meter2") == [("login", 200)]
        assert site.emulator.stats.requests_by_method["thing.topo.get"] == 1
        assert site.emulator.stats.requests_by_method["thing.topo.add"] == 1
        assert site.emulator.state.devices[METER2].gateway == GW
        assert sub(daemon.uplink, "meter-2").online
        assert cloud_points(site, "meter1", "post") > 0


async def test_740_without_auto_topo_stays_offline_and_keeps_its_rows(site: Site) -> None:
    """No auto_topo: meter2 is asked once, never online; the cloud refuses its resume (1212)."""
    site.emulator.state.devices[METER2].gateway = None
    async with running(site) as daemon:
        await async_wait_until(lambda: cloud_points(site, "meter1", "post") >= 8, 15, "m1 live")
        await async_wait_until(
            lambda: site.emulator.stats.replies_by_code[1212] >= 1, 15, "meter2's resume"
        )
        await more_cycles(site, 10)
        # Asked in the batch and once alone; delivery's re-login requests do not repeat it.
        assert logins(site, "meter2") == [("login", 740), ("login", 740)]
        meter2 = sub(daemon.uplink, "meter-2")
        assert meter2.online is False
        assert meter2.last_error.startswith("740")
        assert site.emulator.stats.requests_by_method["thing.topo.add"] == 0
        # Resume with allowOfflineSubDevice=true still needs the topology (spec §4: 1212
        # "not connected via this gateway"): nothing of meter2 is stored, nothing is lost.
        assert cloud_points(site, "meter2") == 0
        assert daemon.spool is not None
        counts = await daemon.spool.counts()
        assert counts.dead_letters == 0
        assert counts.samples > 0  # meter2's rows wait in the spool


async def test_wrong_secret_is_refused_once_and_isolated(site: Site) -> None:
    """742 for meter2: one refusal logged, no repeated logins, meter1 unaffected."""
    site.emulator.state.devices[METER2].secret = "not-the-configured-secret"
    with structlog.testing.capture_logs() as captured:
        async with running(site) as daemon:
            await async_wait_until(lambda: cloud_points(site, "meter1", "post") >= 8, 15, "m1 live")
            await more_cycles(site, 10)
            assert logins(site, "meter2") == [("login", 742), ("login", 742)]
            meter2 = sub(daemon.uplink, "meter-2")
            assert meter2.online is False
            assert meter2.last_error.startswith("742")
            assert sub(daemon.uplink, "meter-1").online
    refused = [e for e in captured if e["event"] == "sub-device login refused"]
    assert [(e["device"], e["code"]) for e in refused] == [("meter-2", "742 SIGN_CHECK_FAILED")]
    assert logins(site, "meter1")[0] == ("login", 200)


async def test_sub_devices_are_logged_out_on_shutdown(site: Site) -> None:
    """Stopping the daemon logs out every online sub-device (code 200) before disconnecting."""
    async with running(site) as daemon:
        await async_wait_until(
            lambda: len(site.emulator.online_sub_devices(*GW)) == 2, 15, "both online"
        )
        uplink = daemon.uplink
    assert logins(site, "meter1") == [("login", 200), ("logout", 200)]
    assert logins(site, "meter2") == [("login", 200), ("logout", 200)]
    assert site.emulator.online_sub_devices(*GW) == []
    assert uplink is not None
    assert uplink.registry.online_count() == 0


# ------------------------------------------------------------------ known delivery bugs


async def precondition(waiting: Awaitable[None]) -> None:
    """Await a setup step; its failure is an error, never the expected failure (xfail)."""
    try:
        await waiting
    except AssertionError as exc:
        raise RuntimeError(f"test setup failed: {exc}") from exc


async def test_refused_sub_device_rows_are_not_resent_in_a_tight_loop(site: Site) -> None:
    """A disabled meter2 costs at most a few rejected resume requests, not one per wake-up."""
    site.emulator.state.set_enabled(METER2, False)
    async with running(site):
        await precondition(
            async_wait_until(lambda: cloud_points(site, "meter1", "post") >= 4, 15, "m1 live")
        )
        await precondition(more_cycles(site, 10))
    assert site.emulator.stats.replies_by_code[1212] <= 3


async def test_refused_sub_device_does_not_block_the_others_backlog(site: Site) -> None:
    """After an outage, meter1's backlog arrives although meter2 is disabled in the cloud."""
    site.emulator.state.set_enabled(METER2, False)
    async with running(site) as daemon:
        assert daemon.uplink is not None
        status = daemon.uplink.status
        await precondition(
            async_wait_until(lambda: cloud_points(site, "meter1", "post") >= 4, 15, "m1 live")
        )
        site.archived.extend(site.emulator.records.points)
        await site.emulator.stop()
        await precondition(more_cycles(site, 6))  # a backlog older than the live window
        site.emulator = type(site.emulator)(site.emulator.config, port=site.emulator.port)
        site.emulator.state.set_enabled(METER2, False)
        await site.emulator.start()
        await precondition(
            async_wait_until(lambda: status.connects >= 2 and status.state == "connected", 15)
        )
        meter1 = {s for s in produced(site) if s[0] == "meter1"}
        await async_wait_until(lambda: meter1 <= received(site), 6, "meter1's backlog")


# ------------------------------------------------------------------ gateway CONNECT


async def test_refused_connects_respect_the_floor_and_throttle(site: Site) -> None:
    """CONNACK 5 on every attempt: one immediate CONNECT, then none within the 60 s floor."""
    site.emulator.faults.refuse_connects(None)
    async with running(site) as daemon:
        assert daemon.uplink is not None
        status = daemon.uplink.status
        await async_wait_until(lambda: status.refused == 1, 10, "the refused CONNECT")
        # Time passes in the daemon (poll cycles) while the uplink waits out its floor.
        await more_cycles(site, 25)
        stats = site.emulator.stats
        assert (stats.refused_connects, stats.refused_by_code[5], stats.connects) == (1, 1, 0)
        assert (status.connects, status.refused) == (1, 1)
        assert status.state.startswith("reconnecting in ")
        assert int(status.state.split()[2].rstrip("s")) >= 55
        assert status.last_error == "EnOS refused CONNECT (return code 5)"
    assert stats.refused_connects <= THROTTLE_ATTEMPTS


@contextlib.asynccontextmanager
async def virtual_uplink(tmp_path: Path, port: int) -> AsyncIterator[tuple[Uplink, VirtualClock]]:
    """An Uplink on a virtual clock (its backoff sleeps), with real CONNECTs to `port`."""
    config = Config.model_validate(
        {
            "gateway": {
                "product_key": "gwPK",
                "device_key": "gwDK",
                "device_secret": "gwSecret",
                "broker": {"host": "127.0.0.1", "port": port, "connect_timeout": "5s"},
            },
            "spool": {"path": str(tmp_path / "spool.db"), "synchronous": "normal"},
        }
    )
    clock = VirtualClock()
    async with await Spool.open(config.spool) as spool:
        uplink = Uplink(
            config, spool, SubDeviceRegistry([]), clock=clock, rng=random.Random(20261122)
        )
        task = asyncio.create_task(uplink.run())
        try:
            yield uplink, clock
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def attempt_times(uplink: Uplink, clock: VirtualClock, span_s: float) -> list[float]:
    """Virtual times of the CONNECT attempts the uplink makes over `span_s` virtual seconds.

    Time moves in 0.25 s steps; after each, the test waits (really) until the attempt that
    step started has failed and the uplink sleeps again, so attempts are timed to a step.
    """
    status = uplink.status
    start, times, seen = clock.monotonic(), [], 0
    while clock.monotonic() - start < span_s:
        await async_wait_until(lambda: status.state.startswith("reconnecting in"), 10, "backoff")
        if status.connects > seen:
            times += [clock.monotonic() - start] * (status.connects - seen)
            seen = status.connects
        await clock.advance(0.25)
    return times


def assert_within_enos_throttle(times: list[float]) -> None:
    """EnOS' own rule (the emulator's throttle) admits every attempt: ≤ 4 in any 120 s."""
    throttle = ConnectThrottle(max_connects=4, window=120.0, block=300.0)
    assert all(throttle.admit(GW, t) for t in times), times
    assert max(sum(1 for t in times if s <= t < s + 120.0) for s in times) <= THROTTLE_ATTEMPTS


async def test_refused_storm_on_a_virtual_clock(site: Site, tmp_path: Path) -> None:
    """CONNACK 5 for 10 virtual minutes: every retry ≥ 60 s after the last, within the throttle."""
    site.emulator.faults.refuse_connects(None)
    async with virtual_uplink(tmp_path, site.emulator.port) as (uplink, clock):
        times = await attempt_times(uplink, clock, 600.0)
    assert times[0] == 0.0
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(gap >= 60.0 for gap in gaps), gaps
    assert len(times) >= 4  # it keeps trying: at most 300 s apart (cap), here ~60-128 s
    assert site.emulator.stats.refused_connects == len(times) == uplink.status.refused
    assert site.emulator.stats.connects == 0
    assert_within_enos_throttle(times)


async def test_unreachable_broker_storm_on_a_virtual_clock(tmp_path: Path) -> None:
    """Nothing listens for 10 virtual minutes: TCP is retried every 0.5-5 s and, since no
    CONNECT is ever sent, none is counted against EnOS' budget."""
    # The port is held by a bound socket that never listens (every connect is refused),
    # so no server started meanwhile, by this run or another, can take it.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        async with virtual_uplink(tmp_path, held.getsockname()[1]) as (uplink, clock):
            times = await attempt_times(uplink, clock, 600.0)
            tries = uplink._policy.unreachable_count
    assert times == []  # no CONNECT: status.connects stayed 0
    assert tries >= 600 / 5
    assert uplink.status.refused == 0
    assert uplink.status.last_error.startswith("cannot reach the EnOS broker (no CONNECT sent)")
