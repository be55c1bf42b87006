"""A timing-faithful RS-485 line between two pty pairs, for RTU benchmarks (issue 8, B4).

A bare pty delivers a whole frame instantly, so a benchmark over it measures nothing about
the wire. This emulator sits between two socat pty pairs::

    gateway ── ttyG ═socat═ ttyG' ── LineEmulator ── ttyD' ═socat═ ttyD ── device simulator

and releases each byte when it would have finished arriving on a real half-duplex line:
one character takes 11 bits at the configured baud rate, characters of one burst follow
back to back, and a new frame (in either direction) starts no sooner than the inter-frame
silence (3.5 characters, 1.75 ms above 19200 baud) after the last character on the line.

The timing core (`LineTiming`) is pure and takes arrival times as arguments; `LineEmulator`
does the I/O on the event loop (reader callbacks on the pty fds, one writer task per
direction sleeping until each byte's release time: timing, not synchronisation). Sleeps go
through `FineTimer` (timerfd, microseconds): asyncio's own timers round up to whole
milliseconds, which released the last byte of each frame up to 1 ms late and charged
that to every master that keeps the inter-frame silence. Bytes inside a burst go out in
batches of at most `BATCH` seconds (fewer wake-ups at 115200 baud); the last byte received
so far is always released on time.

Run standalone to get a line for manual experiments::

    python -m tests.bench.line_emulator --baud 9600
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import tempfile
import termios
import time
import tty
from collections import Counter, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from gatewayd.modbus.finetimer import FineTimer
from tests.integration.modbus_fixtures import SocatPair

#: Bits per RTU character on the wire (start, 8 data, parity or 2nd stop, stop).
BITS_PER_CHAR = 11
#: A pause longer than this many characters inside a burst ends the frame (Modbus t1.5).
INTER_CHAR_LIMIT = 1.5
#: Longest a byte inside a burst may wait for the batch it goes out with (seconds).
BATCH = 0.001


def frame_gap(baudrate: int) -> float:
    """The inter-frame silence: 3.5 characters, fixed at 1.75 ms above 19200 baud."""
    return 0.00175 if baudrate > 19200 else 3.5 * BITS_PER_CHAR / baudrate


@dataclass
class LineTiming:
    """When each byte offered to a half-duplex line finishes arriving at the far end."""

    baudrate: int
    char_time: float = 0.0
    gap: float = 0.0
    idle_at: float = float("-inf")  # when the last character on the line ended
    frames: int = 0
    #: Sizes (bytes) of the frames finished so far; the current one is `frame_bytes`.
    frame_sizes: Counter[int] = field(default_factory=Counter)
    frame_bytes: int = 0
    last_sender: object = None  # who sent the burst on the line now

    def __post_init__(self) -> None:
        self.char_time = BITS_PER_CHAR / self.baudrate
        self.gap = frame_gap(self.baudrate)

    def release_times(self, arrival: float, count: int, sender: object = None) -> list[float]:
        """Release times of `count` bytes `sender` handed to the line at `arrival` (s).

        Bytes continue the current frame only when the same side sends them within 1.5
        characters of its last one; the other side's bytes always start a new frame (a
        half-duplex line turns around: a device answering faster than the silence still
        waits for it, as the spec requires).
        """
        if count <= 0:
            return []
        same_sender = sender == self.last_sender
        self.last_sender = sender
        if same_sender and arrival - self.idle_at <= INTER_CHAR_LIMIT * self.char_time:
            start = max(arrival, self.idle_at)  # continues the burst on the line
        else:
            start = max(arrival, self.idle_at + self.gap)  # a new frame: keep the silence
            self.frames += 1
            if self.frame_bytes:
                self.frame_sizes[self.frame_bytes] += 1
            self.frame_bytes = 0
        self.frame_bytes += count
        times = [start + (i + 1) * self.char_time for i in range(count)]
        self.idle_at = times[-1]
        return times


@dataclass
class _Direction:
    """Bytes waiting to be released towards one side, with their release times."""

    out_fd: int
    pending: deque[tuple[float, int]] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    timer: FineTimer = field(default_factory=FineTimer)
    delivered: int = 0


class LineEmulator:
    """Joins pty `gateway_end` and pty `device_end` through one emulated RS-485 line."""

    def __init__(self, gateway_end: str, device_end: str, *, baudrate: int) -> None:
        self.timing = LineTiming(baudrate)
        self._paths = (gateway_end, device_end)
        self._fds: list[int] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._to_device: _Direction | None = None
        self._to_gateway: _Direction | None = None

    @property
    def bytes_delivered(self) -> tuple[int, int]:
        """(bytes released towards the device, bytes released towards the gateway)."""
        return (
            self._to_device.delivered if self._to_device else 0,
            self._to_gateway.delivered if self._to_gateway else 0,
        )

    async def start(self) -> None:
        """Open both pty ends and start moving bytes."""
        loop = asyncio.get_running_loop()
        for path in self._paths:
            fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
            tty.setraw(fd, termios.TCSANOW)
            self._fds.append(fd)
        gateway_fd, device_fd = self._fds
        self._to_device = _Direction(device_fd)
        self._to_gateway = _Direction(gateway_fd)
        loop.add_reader(gateway_fd, self._on_readable, gateway_fd, self._to_device)
        loop.add_reader(device_fd, self._on_readable, device_fd, self._to_gateway)
        self._tasks = [
            loop.create_task(self._release(self._to_device)),
            loop.create_task(self._release(self._to_gateway)),
        ]

    async def stop(self) -> None:
        """Stop moving bytes and close the pty ends."""
        loop = asyncio.get_running_loop()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for direction in (self._to_device, self._to_gateway):
            if direction is not None:
                direction.timer.close()
        for fd in self._fds:
            loop.remove_reader(fd)
            os.close(fd)
        self._fds, self._tasks = [], []

    async def __aenter__(self) -> LineEmulator:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _on_readable(self, fd: int, direction: _Direction) -> None:
        try:
            data = os.read(fd, 4096)
        except BlockingIOError:
            return
        except OSError:  # the far side of the pty went away
            asyncio.get_running_loop().remove_reader(fd)
            return
        times = self.timing.release_times(time.monotonic(), len(data), sender=fd)
        direction.pending.extend(zip(times, data, strict=True))
        direction.wake.set()

    async def _release(self, direction: _Direction) -> None:
        while True:
            await direction.wake.wait()
            direction.wake.clear()
            while direction.pending:
                due = min(direction.pending[0][0] + BATCH, direction.pending[-1][0])
                await direction.timer.sleep_until(due)  # wire timing, not synchronisation
                now = time.monotonic()
                batch = bytearray()
                while direction.pending and direction.pending[0][0] <= now:
                    batch.append(direction.pending.popleft()[1])
                await self._write_all(direction.out_fd, bytes(batch))
                direction.delivered += len(batch)

    @staticmethod
    async def _write_all(fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            try:
                view = view[os.write(fd, view) :]
            except BlockingIOError:
                await _writable(fd)  # pty buffer full: wait until the far side drains it


async def _writable(fd: int) -> None:
    loop = asyncio.get_running_loop()
    ready: asyncio.Future[None] = loop.create_future()

    def on_writable() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_writer(fd, on_writable)
    try:
        await ready
    finally:
        loop.remove_writer(fd)


@contextlib.asynccontextmanager
async def emulated_line(workdir: Path, baudrate: int) -> AsyncIterator[tuple[str, str]]:
    """Two socat pty pairs joined by a `LineEmulator`: yields (gateway_tty, device_tty)."""
    gateway_pair = SocatPair(workdir / "gateway")
    device_pair = SocatPair(workdir / "device")
    try:
        async with LineEmulator(gateway_pair.b, device_pair.a, baudrate=baudrate):
            yield gateway_pair.a, device_pair.b
    finally:
        gateway_pair.stop()
        device_pair.stop()


async def _main(baudrate: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        async with emulated_line(Path(tmp), baudrate) as (gateway_tty, device_tty):
            print(f"gateway side: {gateway_tty}\ndevice side:  {device_tty}\n(Ctrl-C to stop)")
            await asyncio.Event().wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baud", type=int, default=9600)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(parser.parse_args().baud))
