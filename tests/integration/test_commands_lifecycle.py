"""Sub-device lifecycle from the cloud: combine.disable / enable / delete, end to end."""

from __future__ import annotations

import time
from pathlib import Path

from tests.integration.commands_site import CommandSite, running_site
from tests.support import async_wait_until


def latest_ms(site: CommandSite, device_key: str) -> int:
    """Time of the newest value the cloud holds for `device_key` (0 if none)."""
    return max((r.time for r in site.emulator.records.points if r.device_key == device_key),
               default=0)  # fmt: skip


def cycles_with(site: CommandSite, device: str) -> int:
    """Committed poll cycles that carried samples of `device`."""
    return sum(1 for c in site.committed if any(s.device == device for s in c.samples))


async def more_cycles(site: CommandSite, device: str, n: int) -> None:
    """Wait until `n` more cycles of `device` were committed."""
    start = cycles_with(site, device)
    await async_wait_until(lambda: cycles_with(site, device) >= start + n, 15, f"{n} cycles")


async def test_disable_stops_polling_and_publishing_enable_resumes(tmp_path: Path) -> None:
    """disable: no data, no polling; enable: logged in again and data flows."""
    async with running_site(tmp_path) as site:
        await async_wait_until(lambda: latest_ms(site, "m1") > 0, 15, "m1 data in the cloud")
        reply = await site.combine("combine.disable", 1)
        disabled_at = int(time.time() * 1000)
        assert reply["code"] == 200, reply
        assert "m1" not in site.online()
        await more_cycles(site, "m2", 2)  # anything in flight for m1 has settled by now
        requests = site.sim.stats(1).total_requests
        await more_cycles(site, "m2", 4)
        assert site.sim.stats(1).total_requests == requests  # polling stopped
        assert latest_ms(site, "m1") <= disabled_at  # nothing measured after it was sent
        assert not any(s.device == "m1" for c in site.committed[-4:] for s in c.samples)

        reply = await site.combine("combine.enable", 1)
        enabled_at = int(time.time() * 1000)
        assert reply["code"] == 200, reply
        await async_wait_until(lambda: "m1" in site.online(), 15, "m1 logged in again")
        await async_wait_until(
            lambda: latest_ms(site, "m1") > enabled_at, 15, "fresh m1 data in the cloud"
        )
        assert site.sim.stats(1).total_requests > requests
        set_reply = await site.write(1, {"u16": 77})
        assert set_reply["code"] == 200, set_reply


async def test_disable_keeps_polling_when_configured(tmp_path: Path) -> None:
    """poll_when_disabled: the device is still polled while disabled, but nothing is sent."""
    async with running_site(tmp_path, m1={"poll_when_disabled": True}) as site:
        await async_wait_until(lambda: latest_ms(site, "m1") > 0, 15, "m1 data in the cloud")
        assert (await site.combine("combine.disable", 1))["code"] == 200
        disabled_at = int(time.time() * 1000)
        await more_cycles(site, "m2", 2)
        requests = site.sim.stats(1).total_requests
        await more_cycles(site, "m2", 3)
        assert site.sim.stats(1).total_requests > requests  # still polled
        assert latest_ms(site, "m1") <= disabled_at  # but not published


async def test_delete_is_never_published_again(tmp_path: Path) -> None:
    """delete: polling stops and the sub-device's data never reaches the cloud again."""
    async with running_site(tmp_path) as site:
        await async_wait_until(lambda: latest_ms(site, "m1") > 0, 15, "m1 data in the cloud")
        reply = await site.combine("combine.delete", 1)
        deleted_at = int(time.time() * 1000)
        assert reply["code"] == 200, reply
        await more_cycles(site, "m2", 2)
        requests = site.sim.stats(1).total_requests
        await more_cycles(site, "m2", 4)
        assert site.sim.stats(1).total_requests == requests
        assert latest_ms(site, "m1") <= deleted_at
        assert latest_ms(site, "m2") > deleted_at
        registry = site.daemon.uplink.registry if site.daemon.uplink else None
        assert registry is not None
        sub = registry.get("m1")
        assert sub is not None
        assert (sub.deleted, sub.online) == (True, False)


async def test_combine_for_unknown_sub_device(tmp_path: Path) -> None:
    """A combine.* naming a device the gateway does not have: an error naming it."""
    async with running_site(tmp_path) as site:
        params = [{"productKey": "otherPK", "deviceKey": "ghost"}]
        reply = await site.emulator.send_command("gwPK", "gwDK", "combine.disable", params)
        assert reply["code"] >= 2000
        assert "otherPK&ghost" in reply["message"]
        assert site.online() == {"m1", "m2"}


def publishing(site: CommandSite, device: str) -> bool:
    """What the daemon's device status says of `device`'s publishing."""
    states = {n: s for p in site.daemon.pollers.values() for n, s in p.device_states().items()}
    return states[device].publishing


async def test_delete_then_enable_stays_muted_and_says_so(tmp_path: Path) -> None:
    """enable after delete: polled again, still never published, and status says muted."""
    async with running_site(tmp_path) as site:
        await async_wait_until(lambda: latest_ms(site, "m1") > 0, 15, "m1 data in the cloud")
        assert (await site.combine("combine.delete", 1))["code"] == 200
        deleted_at = int(time.time() * 1000)
        assert (await site.combine("combine.enable", 1))["code"] == 200
        requests = site.sim.stats(1).total_requests
        await more_cycles(site, "m2", 4)
        assert site.sim.stats(1).total_requests > requests  # enable resumed polling
        assert latest_ms(site, "m1") <= deleted_at  # a deleted device stays unpublished
        assert publishing(site, "m1") is False  # and its status says so
        assert publishing(site, "m2") is True


async def test_disabled_device_stays_muted_across_a_reload(tmp_path: Path) -> None:
    """A reload builds new pollers: a device the cloud disabled is still shown as muted."""
    async with running_site(tmp_path, m1={"poll_when_disabled": True}) as site:
        await async_wait_until(lambda: latest_ms(site, "m1") > 0, 15, "m1 data in the cloud")
        assert (await site.combine("combine.disable", 1))["code"] == 200
        disabled_at = int(time.time() * 1000)
        old_pollers = set(map(id, site.daemon.pollers.values()))
        site.daemon.request_reload()
        await async_wait_until(
            lambda: set(map(id, site.daemon.pollers.values())).isdisjoint(old_pollers),
            15,
            "new pollers after the reload",
        )
        await more_cycles(site, "m2", 3)
        assert publishing(site, "m1") is False
        assert latest_ms(site, "m1") <= disabled_at
