"""The daemon's capture rules: per-device capture state, and the task that writes the files.

The mapping stage calls a device's hook (`Captures.hook`) with each poll's output; the
hook runs the pure core (`capture.py`) on the event loop, which only does in-memory work
(the ring, CSV text of one poll's rows) and queues file actions. The writer task (`run`)
carries them out in order through `asyncio.to_thread` (`capture_store.py`), so a slow
disk never delays a poll. The state is the daemon's, not a poller's: a reload builds new
pollers, and running captures and the rings carry over.

A capture whose file cannot be started (disk full, directory not writable) hands its
event back (`on_unwritten`): it then goes by `thing.event.post` without its file, with one
warning per episode, so no event is lost to a disk problem.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

import structlog

from gatewayd.clock import Clock
from gatewayd.config.models import Config
from gatewayd.episodes import Episodes
from gatewayd.mapping.capture import (
    Action,
    Append,
    Begin,
    DeviceCaptures,
    Finish,
    capture_dir,
    capture_specs,
    point_intervals_ms,
)
from gatewayd.mapping.capture_store import CaptureStore, Completed
from gatewayd.samples import Event, Sample, SampleBlock

__all__ = ["CaptureHook", "Captures", "capture_dir"]

log = structlog.get_logger(__name__)

#: How often the writer looks for captures whose `after` ran out without a reading.
TICK_S = 1.0


class CaptureHook:
    """One device's capture rules as the mapping stage sees them."""

    def __init__(self, owner: Captures, device: str) -> None:
        self._owner = owner
        self._device = device

    def take(
        self,
        samples: Sequence[Sample],
        blocks: Sequence[SampleBlock],
        events: list[Event],
        *,
        publishing: bool,
    ) -> list[Event]:
        """Feed one poll's output; the events that still go by `thing.event.post`."""
        state = self._owner.devices.get(self._device)
        if state is None:
            return events
        kept, actions = state.take(samples, blocks, events, publishing=publishing)
        if actions:
            self._owner.queue(actions)
        return kept


class Captures:
    """Capture state of every device with capture rules, and the file writer."""

    def __init__(
        self,
        directory: Path,
        config: Config,
        *,
        clock: Clock,
        on_unwritten: Callable[[Event], Awaitable[None]] | None = None,
    ) -> None:
        self.directory = directory
        self.store = CaptureStore(directory)
        self._clock = clock
        self._on_unwritten = on_unwritten
        self._counter = [0]
        self.devices: dict[str, DeviceCaptures] = {}
        self._pending: deque[Action] = deque()
        self._wake = asyncio.Event()
        self._episodes = Episodes(log)
        self.completed: list[Completed] = []
        self._stopping = False
        self.configure(config)

    def configure(self, config: Config) -> None:
        """(Re)build the devices' capture rules; running captures and rings carry over, a
        device that no longer captures finishes its running captures now."""
        devices: dict[str, DeviceCaptures] = {}
        for device in config.devices:
            model = config.models.get(device.model)
            specs = capture_specs(model) if model is not None else {}
            if model is None or not specs:
                continue
            state = DeviceCaptures(
                device.name, specs, point_intervals_ms(device, model), counter=self._counter
            )
            old = self.devices.get(device.name)
            if old is not None:
                state.adopt(old)
            devices[device.name] = state
        for name, old in self.devices.items():
            if name not in devices:
                self.queue(old.finish_all())
        self.devices = devices

    def hook(self, device: str) -> CaptureHook | None:
        """The stage's hook for `device`, or None if it captures nothing."""
        return CaptureHook(self, device) if device in self.devices else None

    def queue(self, actions: Sequence[Action]) -> None:
        """File actions for the writer, in order."""
        self._pending.extend(actions)
        self._wake.set()

    async def recover(self) -> list[Completed]:
        """Complete the captures a crash left running (one warning each). A directory
        that cannot be read is logged and left for the next start: polling goes first."""
        try:
            completed = await asyncio.to_thread(self.store.recover)
        except OSError as exc:
            log.error(
                "captures left by a crash cannot be completed; they stay for the next start",
                directory=str(self.directory),
                error=str(exc),
            )
            return []
        for drop in completed:
            log.warning(
                "capture completed after a restart: it holds what was written before "
                "the daemon stopped",
                file=drop.name,
                rows=drop.rows,
                directory=str(self.directory),
            )
        self.completed += completed
        return completed

    def stop(self) -> None:
        """Make `run` return once what it is writing is written (then call `close`)."""
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        """Write queued actions; finish captures whose `after` ran out by the clock.
        Ends after `stop` (not by cancelling: a write in its thread would outlive it)."""
        while True:
            await self._flush()
            if self._stopping:
                return
            now_ms = round(self._clock.time() * 1000)
            expired = [a for state in self.devices.values() for a in state.expire(now_ms)]
            if expired:
                self.queue(expired)
                continue
            self._wake.clear()
            # The daemon's clock, not the loop's: a test's virtual clock drives expiry.
            tick = asyncio.ensure_future(self._clock.sleep(TICK_S))
            wake = asyncio.ensure_future(self._wake.wait())
            try:
                await asyncio.wait({tick, wake}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                tick.cancel()
                wake.cancel()

    async def close(self) -> None:
        """Finish every running capture as it is (the daemon stops) and write it all."""
        for state in self.devices.values():
            finished = state.finish_all()
            if finished:
                log.warning(
                    "captures cut short: the daemon stops", device=state.device, count=len(finished)
                )
            self.queue(finished)
        await self._flush()
        await asyncio.to_thread(self.store.close)

    async def _flush(self) -> None:
        while self._pending:
            batch = list(self._pending)
            self._pending.clear()
            unwritten = await asyncio.to_thread(self._apply, batch)
            for event in unwritten:
                if self._on_unwritten is not None:
                    await self._on_unwritten(event)

    def _apply(self, actions: list[Action]) -> list[Event]:
        """Carry out `actions` (in the writer thread); the events whose capture could not
        be started."""
        unwritten: list[Event] = []
        for action in actions:
            try:
                if isinstance(action, Begin):
                    name = self.store.begin(action)
                    log.info("capture started", file=name, event_id=action.sidecar["event"],
                             device=action.sidecar["device"])  # fmt: skip
                elif isinstance(action, Append):
                    self.store.append(action)
                elif isinstance(action, Finish):
                    done = self.store.finish(action)
                    if done is not None:
                        self.completed.append(done)
                        log.info("capture complete", file=done.name, rows=done.rows,
                                 bytes=done.size)  # fmt: skip
                self._episodes.end("write", "capture files written again")
            except Exception as exc:  # a bug here must not stop the daemon: logged, counted
                if not isinstance(exc, OSError):
                    log.error("capture action failed", action=repr(action), exc_info=exc)
                self._episodes.failed(
                    "write",
                    "capture file cannot be written (a capture that cannot start sends "
                    "its event without the file)",
                    directory=str(self.directory),
                    error=str(exc),
                )
                if isinstance(action, Begin):
                    sidecar = action.sidecar
                    unwritten.append(
                        Event(sidecar["device"], sidecar["event"], sidecar["time"],
                              dict(sidecar["params"]))
                    )  # fmt: skip
        return unwritten
