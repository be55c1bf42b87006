"""The async Spool facade: one worker thread, concurrent callers, cancellation safety."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from gatewayd.config.models import SpoolConfig
from gatewayd.samples import Event, Sample
from gatewayd.spool.rows import Kind
from gatewayd.spool.worker import Spool
from tests.unit.spool_points import points_of


def _config(tmp_path: Path) -> SpoolConfig:
    return SpoolConfig(path=tmp_path / "spool.db", max_bytes="16MiB")  # type: ignore[arg-type]


async def test_concurrent_pollers_and_uplink_share_one_spool(tmp_path: Path) -> None:
    """Three bus tasks append while an uplink task drains: every row arrives once, in order."""
    async with await Spool.open(_config(tmp_path)) as spool:
        delivered: list[tuple[str, float]] = []
        done = asyncio.Event()

        async def poller(bus: str) -> None:
            for cycle in range(50):
                await spool.append([Sample(bus, "P", float(cycle), cycle)], now_ms=cycle)

        async def uplink() -> None:
            while not (done.is_set() and (await spool.counts()).samples == 0):
                batch = points_of(await spool.take_frames(20))
                delivered.extend((r.device, r.value) for r in batch)  # type: ignore[misc]
                await spool.ack(Kind.SAMPLES, [r.id for r in batch])
                if not batch:
                    await asyncio.sleep(0)

        async with asyncio.TaskGroup() as group:
            drain = group.create_task(uplink())
            async with asyncio.TaskGroup() as pollers:
                for bus in ("a", "b", "c"):
                    pollers.create_task(poller(bus))
            done.set()
            await drain
        for bus in ("a", "b", "c"):
            assert [v for d, v in delivered if d == bus] == [float(c) for c in range(50)]
        assert len(delivered) == 150


async def test_store_lives_on_one_worker_thread(tmp_path: Path) -> None:
    """All sqlite calls run on one dedicated thread, not on the event loop's thread."""
    spool = await Spool.open(_config(tmp_path))
    seen: set[str] = set()
    for _ in range(5):
        seen.add(
            await asyncio.get_running_loop().run_in_executor(
                spool._executor, lambda: threading.current_thread().name
            )
        )
    assert len(seen) == 1
    assert seen.pop().startswith("gatewayd-spool")
    await spool.close()


async def test_cancelled_take_gives_its_rows_back(tmp_path: Path) -> None:
    """A take cancelled while the worker runs it does not strand rows in flight."""
    spool = await Spool.open(_config(tmp_path))
    await spool.append([Sample("m", "P", float(i), i) for i in range(100)], [Event("m", "e", 1)])
    gate = threading.Event()
    spool._executor.submit(gate.wait, 10)  # hold the worker so the take is queued behind it
    task = asyncio.create_task(spool.take_frames(100))
    await asyncio.sleep(0)
    task.cancel()
    gate.set()
    with pytest.raises(asyncio.CancelledError):
        await task
    counts = await spool.counts()
    assert counts.in_flight_samples == 0
    assert len(points_of(await spool.take_frames(1000))) == 100
    await spool.close()


async def test_meta_and_dead_letters_through_the_facade(tmp_path: Path) -> None:
    """set_meta/get_meta and dead_letter/dead_letters work through the worker."""
    async with await Spool.open(_config(tmp_path)) as spool:
        await spool.set_meta("enos.secret", "abc")
        assert await spool.get_meta("enos.secret") == "abc"
        await spool.append([Sample("m", "P", 1.0, 10)])
        (row,) = points_of(await spool.take_frames(5))
        assert await spool.dead_letter(Kind.SAMPLES, [row.id], 1204, "bad", 20) == 1
        (letter,) = await spool.dead_letters()
        assert (letter.device, letter.name, letter.code, letter.message) == (
            "m",
            "P",
            1204,
            "bad",
        )
        assert (await spool.stats()).dead_letters == 1
