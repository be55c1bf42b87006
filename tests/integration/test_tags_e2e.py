"""Sub-device tags end to end: gatewayd (in-process) → EnOS emulator over MQTT, across restarts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import structlog
import yaml

from gatewayd.app import Daemon
from gatewayd.config.loader import load_config
from gatewayd.systemd import Notifier
from tests.integration.test_attributes_e2e import Site, make_site
from tests.support import async_wait_until


def set_tags(site: Site, defaults: dict[str, Any], own: dict[int, dict[str, Any]]) -> None:
    """Rewrite the config's `default_tags` and each meter's `tags`, and load it again."""
    doc = yaml.safe_load(site.config_path.read_text())
    doc["default_tags"] = defaults
    for unit, device in enumerate(doc["devices"], start=1):
        device["tags"] = own.get(unit, {})
    site.config_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    site.config = load_config(site.config_path)


@contextlib.asynccontextmanager
async def running(site: Site) -> AsyncIterator[Daemon]:
    """The daemon until every meter had one tag pass in this run."""
    daemon = Daemon(site.config_path, site.config, notifier=Notifier(environ={}))
    task = asyncio.create_task(daemon.run())
    try:
        await asyncio.wait_for(daemon.ready.wait(), 10)

        def passed() -> bool:
            sync = daemon.uplink.tags if daemon.uplink else None
            return sync is not None and all(
                sync.passes.get(n, 0) >= 1 for n in ("meter-1", "meter-2")
            )

        await async_wait_until(passed, timeout=30, what="tag passes")
        yield daemon
    finally:
        daemon.request_stop()
        assert await asyncio.wait_for(task, 20) == 0


def cloud_tags(site: Site, device_key: str) -> dict[str, str]:
    return dict(site.emulator.responder.tags.get(("meterPK", device_key), {}))


def requests(site: Site) -> list[tuple[str, str, dict[str, str]]]:
    return [(t.device_key, t.method, t.tags) for t in site.emulator.records.tags]


async def test_tags_sent_on_change_and_removed_tags_deleted(tmp_path: Path) -> None:
    """Defaults and own tags arrive once as text; a restart sends nothing; a changed
    default updates only that key and a tag dropped from the config is deleted."""
    async with make_site(tmp_path) as site:
        set_tags(site, {"owner": "ACME", "critical": True}, {1: {"line": "A", "owner": "Lab"}})
        async with running(site):
            pass
        assert cloud_tags(site, "meter1") == {"owner": "Lab", "critical": "true", "line": "A"}
        assert cloud_tags(site, "meter2") == {"owner": "ACME", "critical": "true"}
        assert len(requests(site)) == 2

        async with running(site):
            pass
        assert len(requests(site)) == 2  # nothing changed, nothing sent

        set_tags(site, {"owner": "ACME", "critical": False}, {1: {"owner": "Lab"}})
        async with running(site):
            pass
        assert sorted(requests(site)[2:]) == [
            ("meter1", "thing.tag.delete", {"line": ""}),
            ("meter1", "thing.tag.update", {"critical": "false"}),
            ("meter2", "thing.tag.update", {"critical": "false"}),
        ]
        assert cloud_tags(site, "meter1") == {"owner": "Lab", "critical": "false"}
        assert cloud_tags(site, "meter2") == {"owner": "ACME", "critical": "false"}


async def test_refused_tags_warn_once_per_episode_then_recover(tmp_path: Path) -> None:
    """Two refusals of meter-1's tags (two passes) make one warning; the third pass is
    accepted, says so once, and the cloud holds the tags."""
    async with make_site(tmp_path) as site:
        set_tags(site, {}, {1: {"line": "A"}})
        site.emulator.faults.answer_code(1220, 2, method="thing.tag.update")
        with structlog.testing.capture_logs() as logs:
            async with running(site) as daemon:
                sync = daemon.uplink.tags if daemon.uplink else None
                assert sync is not None
                for passes in (2, 3):
                    sync.reconfigure(site.config)  # another pass over every device, now
                    await async_wait_until(
                        lambda n=passes: sync.passes.get("meter-1", 0) >= n, 30, "tag pass"
                    )
        assert cloud_tags(site, "meter1") == {"line": "A"}
        refused = [e for e in logs if e["event"].startswith("EnOS refused a sub-device's tags")]
        assert [(e["device"], e["code"]) for e in refused] == [("meter-1", 1220)]
        again = [e for e in logs if e["event"] == "EnOS accepts the sub-device's tags again"]
        assert [(e["device"], e["failures"]) for e in again] == [("meter-1", 2)]
