"""BusSupervisor: a crashed bus task is restarted after the bus backoff, logged once."""

from __future__ import annotations

import asyncio
import itertools
import random
from typing import Any, cast

import structlog

from gatewayd.clock import VirtualClock
from gatewayd.config.models import TcpBus
from gatewayd.modbus.backoff import bus_backoff
from gatewayd.modbus.poller import BusPoller
from gatewayd.modbus.supervisor import BusSupervisor


class CrashingPoller:
    """Stands in for a BusPoller whose `run` raises `crashes` times, then polls forever."""

    def __init__(self, clock: VirtualClock, crashes: int) -> None:
        self.bus = TcpBus.model_validate(
            {"name": "plant", "type": "tcp", "host": "127.0.0.1", "reconnect_max": "10s"}
        )
        self.clock = clock
        self.crashes = crashes
        self.started_at: list[float] = []
        self.running = asyncio.Event()
        self.marked: list[str] = []

    def mark_crashed(self, error: str) -> None:
        self.marked.append(error)

    async def run(self) -> None:
        self.started_at.append(self.clock.monotonic())
        if len(self.started_at) <= self.crashes:
            raise RuntimeError(f"crash {len(self.started_at)}")
        self.running.set()
        await asyncio.Event().wait()


async def test_restarts_follow_the_bus_backoff_and_log_one_episode() -> None:
    """Three crashes: restarts after the 1st, 2nd and 3rd bus backoff delays, heartbeats
    while waiting, one error line, one "recovered" line after the next cycle."""
    clock = VirtualClock()
    poller = CrashingPoller(clock, crashes=3)
    beats: list[float] = []
    supervisor = BusSupervisor(
        cast(BusPoller, poller),
        clock,
        heartbeat=lambda: beats.append(clock.monotonic()),
        rng=random.Random(7),
    )
    expected_rng = random.Random(7)
    backoff = bus_backoff(10.0)
    delays = [backoff.delay(n, expected_rng) for n in (1, 2, 3)]
    with structlog.testing.capture_logs() as logs:
        task = asyncio.create_task(supervisor.run())
        await clock.advance(sum(delays) + 0.01)
        assert poller.running.is_set()
        supervisor.cycle_done()
        supervisor.cycle_done()  # a second cycle says nothing more
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    gaps = [b - a for a, b in itertools.pairwise(poller.started_at)]
    assert [round(g, 6) for g in gaps] == [round(d, 6) for d in delays]
    assert 0.4 <= delays[0] <= 0.5
    assert 0.8 <= delays[1] <= 1.0
    assert 1.6 <= delays[2] <= 2.0
    assert supervisor.restarts == 3
    assert poller.marked == ["RuntimeError('crash 1')", "RuntimeError('crash 2')",
                             "RuntimeError('crash 3')"]  # fmt: skip
    assert supervisor.crashes == 0
    # Beats at least once a second while waiting (the watchdog must not fire).
    assert all(b - a <= 1.0 + 1e-9 for a, b in itertools.pairwise(beats))
    assert len(beats) >= 4
    levels: list[tuple[str, Any]] = [(e["log_level"], e["event"]) for e in logs]
    assert levels == [
        ("error", "bus task crashed; restarting it with backoff"),
        ("info", "bus task recovered"),
    ]
    assert logs[0]["error"] == "RuntimeError('crash 1')"
    assert logs[1]["crashes"] == 3
