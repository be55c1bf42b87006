"""Keeps one bus task alive: a poller that crashes is restarted with the bus backoff.

`BusPoller.run()` handles every failure it knows (a port that cannot be opened, a device
that stops answering, a connection that drops) and never returns. An exception that
escapes it anyway is a bug or a failure nobody foresaw; without a supervisor the bus's
devices would stay frozen in whatever state they had while the daemon kept running, until
the systemd watchdog noticed the missing heartbeat. The supervisor logs the crash once
per episode (with its traceback), marks the bus's devices DOWN with the reason, keeps the
bus's heartbeat going while it waits, runs the
same poller again (it keeps what its devices taught it: holes, read limits, last values)
after the bus backoff (0.5 s doubling up to the bus' `reconnect_max`), and logs one
"recovered" line once a restarted poller completes a poll cycle.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import structlog

from gatewayd.clock import Clock
from gatewayd.episodes import Episodes
from gatewayd.modbus.backoff import bus_backoff
from gatewayd.modbus.poller import BusPoller

log = structlog.get_logger(__name__)

#: Longest sleep between heartbeats while waiting to restart (the watchdog's silence
#: limit is far longer, but a waiting supervisor is alive and must say so).
_BEAT_EVERY_S = 1.0


class BusSupervisor:
    """Runs one `BusPoller` until cancelled, restarting it after a crash."""

    def __init__(
        self,
        poller: BusPoller,
        clock: Clock,
        *,
        heartbeat: Callable[[], None] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        """Wire `cycle_done` to the poller's `on_cycle` so recoveries are noticed."""
        self.poller = poller
        self._clock = clock
        self._heartbeat = heartbeat
        self._rng = rng if rng is not None else random.Random()
        self._backoff = bus_backoff(poller.bus.reconnect_max)
        self._log = log.bind(bus=poller.bus.name)
        self._episodes = Episodes(self._log)  # one key: "crash"
        #: Restarts over the supervisor's life (status, tests).
        self.restarts = 0

    @property
    def crashes(self) -> int:
        """Crashes since the poller last completed a cycle (0: healthy)."""
        return self._episodes.count("crash")

    def cycle_done(self) -> None:
        """The poller completed a poll cycle: a crash episode, if any, is over."""
        self._episodes.end("crash", "bus task recovered", count_as="crashes")

    async def run(self) -> None:
        """Run the poller; after a crash wait the backoff and run it again. Never returns."""
        while True:
            try:
                await self.poller.run()
            except Exception as exc:  # anything but a cancellation: restart, don't die
                error: BaseException = exc
            else:
                error = RuntimeError("the bus task returned by itself")
            self.poller.mark_crashed(repr(error))
            delay = self._backoff.delay(self.crashes + 1, self._rng)
            self._episodes.failed(
                "crash",
                "bus task crashed; restarting it with backoff",
                level="error",
                error=repr(error),
                retry_in_s=round(delay, 2),
                exc_info=error,
            )
            await self._wait(delay)
            self.restarts += 1

    async def _wait(self, delay: float) -> None:
        deadline = self._clock.monotonic() + delay
        while (remaining := deadline - self._clock.monotonic()) > 0:
            if self._heartbeat is not None:
                self._heartbeat()
            await self._clock.sleep(min(remaining, _BEAT_EVERY_S))
