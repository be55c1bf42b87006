"""Delivery under EnOS faults: 1212 re-login, 1204 isolation, lost replies, kill -9."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys

from gatewayd.config.loader import load_config
from gatewayd.config.models import Config
from gatewayd.samples import Quality
from gatewayd.sim.emulator import EmulatorConfig, EnosEmulator
from gatewayd.spool.frames import parse_body
from gatewayd.spool.rows import Kind
from gatewayd.spool.store import SpoolStore
from gatewayd.uplink.frames import split_value
from tests.integration.test_run_e2e import Site, produced, received, running, site
from tests.support import async_wait_until

__all__ = ["site"]


async def test_1212_on_a_live_batch_logs_in_again_and_redelivers(site: Site) -> None:
    """EnOS says "no sub-device permission": the gateway re-logs in and nothing is lost."""
    async with running(site):
        await async_wait_until(lambda: site.emulator.records.points, 15, "first values")
        logins = len(site.emulator.records.logins)
        # The batch is refused, then each device's share of it (it is split by device).
        site.emulator.faults.answer_code(1212, 3, method="thing.measurepoint.post.batch")
        await async_wait_until(
            lambda: len(site.emulator.records.logins) > logins, 15, "a second login"
        )
        await async_wait_until(lambda: produced(site) <= received(site), 30, "everything delivered")
    assert site.emulator.stats.replies_by_code[1212] == 3


async def test_1204_dead_letters_only_the_rejected_point(site: Site) -> None:
    """A point the cloud model lacks: only its rows are dead-lettered, the rest arrives."""
    await site.emulator.stop()
    cloud = EmulatorConfig.from_gateway_config(site.config)
    models = {
        name: model.model_copy(
            update={"measurepoints": {k: v for k, v in model.measurepoints.items() if k != "temp"}}
        )
        for name, model in cloud.models.items()
    }
    cloud = cloud.model_copy(update={"models": models})
    site.emulator = EnosEmulator(cloud, port=site.config.gateway.broker.port)
    await site.emulator.start()
    async with running(site) as daemon:
        await async_wait_until(
            lambda: len(site.committed) >= 6 and daemon.uplink is not None
            and daemon.uplink.stats.dead_lettered >= 4,
            20,
            "rejected rows dead-lettered",
        )  # fmt: skip
        wanted = {key for key in produced(site) if key[1] != "temp"}
        await async_wait_until(lambda: wanted <= received(site), 30, "all other points")
    assert all(point != "temp" for _, point, _ in received(site))
    store = SpoolStore.from_config(site.config.spool)
    try:
        letters = store.dead_letters(limit=10_000)
    finally:
        store.close()
    assert letters, "the temp rows must be in the dead-letter table"
    assert {(d.kind, d.name, d.code) for d in letters} == {(Kind.SAMPLES, "temp", 1204)}


async def test_lost_replies_are_retried_until_acknowledged(site: Site) -> None:
    """Replies that never come: the rows stay in the spool and are sent again."""
    async with running(site):
        await async_wait_until(lambda: site.emulator.records.points, 15, "first values")
        site.emulator.faults.drop_replies(3, method="thing.measurepoint.post.batch")
        await async_wait_until(
            lambda: produced(site) <= received(site), 60, "everything delivered despite drops"
        )


def spooled_samples(config: Config) -> set[tuple[str, str, int]]:
    """(device name, point, time) of the good samples left in the spool file."""
    store = SpoolStore.from_config(config.spool)
    try:
        frames = store.take_frames(10**9)
    finally:
        store.close()
    return {
        (frame.device, name, frame.ts_ms)
        for frame in frames
        for name, shaped in parse_body(frame.body).items()
        if split_value(shaped)[1] == Quality.GOOD
    }


async def test_kill_9_loses_no_committed_sample(site: Site) -> None:
    """SIGKILL during traffic, restart: every sample committed before the kill arrives."""
    config = load_config(site.config_path)
    keys = {d.name: d.device_key for d in config.devices}
    args = [sys.executable, "-m", "gatewayd", "run", str(site.config_path)]
    first = await asyncio.create_subprocess_exec(*args, stderr=asyncio.subprocess.DEVNULL)
    try:
        await async_wait_until(lambda: len(site.emulator.records.points) >= 40, 20, "traffic")
        # From now on EnOS answers "internal error" without storing anything: rows pile up
        # in the spool, committed but unacknowledged, when the process is killed.
        for method in ("thing.measurepoint.post.batch", "thing.measurepoint.resume.batch"):
            site.emulator.faults.answer_code(500, None, method=method)
        stored = len(site.emulator.records.points)
        sent = site.emulator.stats.requests_by_method
        before = sent["thing.measurepoint.post.batch"] + sent["thing.measurepoint.resume.batch"]
        await async_wait_until(
            lambda: (
                sent["thing.measurepoint.post.batch"] + sent["thing.measurepoint.resume.batch"]
                >= before + 3
            ),
            20,
            "refused batches",
        )
        first.send_signal(signal.SIGKILL)
        await first.wait()
    finally:
        with contextlib.suppress(ProcessLookupError):
            first.kill()
    # Committed = what EnOS acknowledged (deleted from the spool) + what is still spooled.
    left = {(keys[d], p, t) for d, p, t in spooled_samples(config)}
    committed = received(site) | left
    assert len(site.emulator.records.points) == stored
    assert left - received(site), "the kill must leave committed rows EnOS never stored"
    site.emulator.faults.clear()
    second = await asyncio.create_subprocess_exec(*args, stderr=asyncio.subprocess.DEVNULL)
    try:
        await async_wait_until(lambda: committed <= received(site), 60, "the spool drained")
    finally:
        second.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(second.wait(), 20) == 0
    assert config.spool.path.exists()
