"""The daemon's capture writer on a real directory: a capture that cannot start gives its
event back (one warning), and a device gone silent still gets its drop by the clock."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from gatewayd.clock import VirtualClock
from gatewayd.config.models import Config
from gatewayd.mapping.capture import FINISH_GRACE_MS
from gatewayd.mapping.captures import Captures
from gatewayd.samples import Event, SampleBlock
from tests.support import async_wait_until

MODEL = {
    "name": "inv",
    "points": [
        {"measurepoint": "power", "table": "input", "address": 0, "type": "float32"},
        {"measurepoint": "trip", "table": "coil", "address": 0, "type": "bool"},
    ],
    "events": [
        {"event": "trip", "rule": "bit_set", "point": "trip",
         "capture": {"points": ["power"], "before": "10s", "after": "2s", "param": "record"}},
    ],
}  # fmt: skip


def site(tmp: Path) -> Config:
    return Config.model_validate(
        {
            "gateway": {"product_key": "gp", "device_key": "gd", "device_secret": "s",
                        "broker": {"host": "127.0.0.1"}},
            "spool": {"path": str(tmp / "spool.db")},
            "buses": [{"name": "b", "type": "tcp", "host": "127.0.0.1"}],
            "devices": [{"name": "inv-01", "bus": "b", "model": "inv", "product_key": "p",
                         "device_key": "d", "device_secret": "s", "poll_interval": "1s"}],
            "models": {"inv": MODEL},
        }
    )  # fmt: skip


@pytest.fixture
async def writer_task() -> AsyncIterator[list[asyncio.Task[None]]]:
    tasks: list[asyncio.Task[None]] = []
    yield tasks
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


async def test_a_capture_that_cannot_start_sends_its_event_without_the_file(
    tmp_path: Path, writer_task: list[asyncio.Task[None]]
) -> None:
    """The capture directory cannot be made (a file is in its place): both events come
    back to go by event.post as they were, with one warning for the episode."""
    config = site(tmp_path)
    (tmp_path / "captures").write_text("in the way")
    back: list[Event] = []

    async def unwritten(event: Event) -> None:
        back.append(event)

    captures = Captures(tmp_path / "captures", config, clock=VirtualClock(), on_unwritten=unwritten)
    hook = captures.hook("inv-01")
    assert hook is not None
    fired = [Event("inv-01", "trip", 1000 + i, {"measurepoint": "trip", "value": True})
             for i in range(2)]  # fmt: skip
    with structlog.testing.capture_logs() as logs:
        block = SampleBlock("inv-01", ["power"], [1.5], 1000)
        assert hook.take([], [block], [fired[0]], publishing=True) == []
        assert hook.take([], [], [fired[1]], publishing=True) == []
        writer_task.append(asyncio.create_task(captures.run()))
        await async_wait_until(lambda: len(back) == 2, 20, "both events back")
    assert back == fired
    warnings = [e for e in logs if e["log_level"] == "warning"]
    assert [e["event"][:35] for e in warnings] == ["capture file cannot be written (a c"]


async def test_a_silent_device_gets_its_drop_by_the_clock(
    tmp_path: Path, writer_task: list[asyncio.Task[None]]
) -> None:
    """No reading after the event: once the clock passes after + grace the capture is
    published with the rows it has."""
    clock = VirtualClock(wall=1_764_928_800.0)
    now_ms = round(clock.time() * 1000)
    captures = Captures(tmp_path / "captures", site(tmp_path), clock=clock)
    hook = captures.hook("inv-01")
    assert hook is not None
    block = SampleBlock("inv-01", ["power", "trip"], [2.5, True], now_ms)
    event = Event("inv-01", "trip", now_ms, {"measurepoint": "trip", "value": True})
    assert hook.take([], [block], [event], publishing=True) == []
    writer_task.append(asyncio.create_task(captures.run()))
    directory = tmp_path / "captures"
    await async_wait_until(lambda: list(directory.glob("*.part")), 20, "the running capture")
    await clock.advance((2000 + FINISH_GRACE_MS) / 1000 + 1.5)
    await async_wait_until(lambda: list(directory.glob("*.json")), 20, "the drop")
    (sidecar,) = directory.glob("*.json")
    data: dict[str, Any] = json.loads(sidecar.read_text())
    assert data["time"] == now_ms
    payload = directory / sidecar.name.removesuffix(".json")
    assert payload.read_bytes() == b"time,power\r\n2025-12-05T10:00:00.000Z,2.5\r\n"


async def test_a_reload_keeps_a_running_capture(
    tmp_path: Path, writer_task: list[asyncio.Task[None]]
) -> None:
    """`configure` with the reloaded config: the new hook appends to the capture the old
    one started, and the ring keeps its values."""
    config = site(tmp_path)
    captures = Captures(tmp_path / "captures", config, clock=VirtualClock())
    old = captures.hook("inv-01")
    assert old is not None
    block = SampleBlock("inv-01", ["power"], [1.5], 1000)
    old.take([], [block], [Event("inv-01", "trip", 1000)], publishing=True)
    captures.configure(site(tmp_path))
    new = captures.hook("inv-01")
    assert new is not None
    new.take([], [SampleBlock("inv-01", ["power"], [2.5], 2000)], [], publishing=True)
    new.take([], [SampleBlock("inv-01", ["power"], [3.5], 4000)], [], publishing=True)
    writer_task.append(asyncio.create_task(captures.run()))
    directory = tmp_path / "captures"
    await async_wait_until(lambda: list(directory.glob("*.json")), 20, "the drop")
    (sidecar,) = directory.glob("*.json")
    payload = directory / sidecar.name.removesuffix(".json")
    assert payload.read_bytes() == (
        b"time,power\r\n1970-01-01T00:00:01.000Z,1.5\r\n1970-01-01T00:00:02.000Z,2.5\r\n"
    )
    ring = captures.devices["inv-01"].ring
    assert ring.entries("power") == [(1000, 1.5), (2000, 2.5), (4000, 3.5)]


async def test_leftovers_that_cannot_be_completed_do_not_stop_the_start(tmp_path: Path) -> None:
    """A leftover capture that cannot be read (its .part is a directory): one error line,
    nothing completed, no exception: the daemon starts polling anyway."""
    directory = tmp_path / "captures"
    (directory / "x.csv.part").mkdir(parents=True)
    (directory / "x.csv.json.part").write_text("{}")
    captures = Captures(directory, site(tmp_path), clock=VirtualClock())
    with structlog.testing.capture_logs() as logs:
        assert await captures.recover() == []
    errors = [e for e in logs if e["log_level"] == "error"]
    assert [e["event"][:47] for e in errors] == ["captures left by a crash cannot be completed; t"]
