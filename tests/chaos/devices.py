"""Misbehaving devices: only their own points go bad, the daemon never crashes.

- A rogue Modbus TCP device on its own bus answers every request with one of: random
  bytes, a truncated MBAP frame, a header announcing more bytes than follow, a reply with
  a wrong transaction id, a closed connection, or silence.
- A noisy RTU line: 4 devices on one emulated RS-485 line (socat ptys + the timing-faithful
  `LineEmulator`); every reply of unit 2 is damaged on its way back (bytes flipped,
  truncated, garbage appended or replaced by noise).

Figures: the healthy devices' completeness (distinct values accepted ÷ devices × points ×
seconds of the window), good values of the bad device accepted (must be 0: its data is
garbage), the daemon alive throughout, and the usual offered/delivered/duplicated/lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import struct
import tempfile
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import yaml

from gatewayd.config.loader import load_config
from tests.bench.b1_fleet import Cloud, SimProcess, Site
from tests.bench.common import Report, write_site
from tests.bench.line_emulator import LineEmulator
from tests.chaos.delivery import Ledger, add_outcome, drain, start_gatewayd, stop_gatewayd, tally
from tests.integration.modbus_fixtures import SocatPair
from tests.support import free_port

WINDOW_S = 20


class RogueDevice:
    """A TCP server answering Modbus requests with garbage of many kinds."""

    def __init__(self, seed: int = 13) -> None:
        self.rng = random.Random(seed)
        self.server: asyncio.Server | None = None
        self.port = 0
        self.requests = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.server is not None:
            self.server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.server.wait_closed(), 5)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        rng = self.rng
        try:
            while request := await reader.read(260):
                self.requests += 1
                tid = request[:2] if len(request) >= 2 else b"\0\0"
                kind = rng.randrange(6)
                if kind == 0:
                    writer.write(rng.randbytes(rng.randint(1, 300)))
                elif kind == 1:  # a valid-looking header, then nothing of the body
                    writer.write(tid + b"\0\0" + struct.pack(">H", 253) + b"\x01\x03")
                elif kind == 2:  # length says 7, five bytes follow
                    writer.write(tid + b"\0\0\0\x07\x01\x03\x04\0\0")
                elif kind == 3:  # a well-formed reply to somebody else's request
                    other = struct.pack(">H", (int.from_bytes(tid, "big") + 7) & 0xFFFF)
                    writer.write(other + b"\0\0\0\x07\x01\x03\x04\x41\x20\0\0")
                elif kind == 4:
                    writer.close()
                    return
                # kind 5: silence
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()


class NoisyLine(LineEmulator):
    """The emulated RS-485 line, damaging every reply that starts with `bad_unit`."""

    def __init__(self, gateway_end: str, device_end: str, *, baudrate: int, bad_unit: int) -> None:
        super().__init__(gateway_end, device_end, baudrate=baudrate)
        self.bad_unit = bad_unit
        self.damaged = 0
        self.rng = random.Random(5)
        self._device_fd = -1

    async def start(self) -> None:
        await super().start()
        self._device_fd = self._fds[1]

    def _on_readable(self, fd: int, direction: Any) -> None:
        if fd != self._device_fd:
            super()._on_readable(fd, direction)
            return
        try:
            data = os.read(fd, 4096)
        except (BlockingIOError, OSError):
            return
        if data and data[0] == self.bad_unit:
            data = self._damage(data)
            self.damaged += 1
        times = self.timing.release_times(time.monotonic(), len(data), sender=fd)
        direction.pending.extend(zip(times, data, strict=True))
        direction.wake.set()

    def _damage(self, frame: bytes) -> bytes:
        rng = self.rng
        kind = rng.randrange(4)
        if kind == 0 and len(frame) > 1:
            i = rng.randrange(len(frame))
            return frame[:i] + bytes([frame[i] ^ (1 << rng.randrange(8))]) + frame[i + 1 :]
        if kind == 1:
            return frame[: rng.randrange(1, max(2, len(frame)))]
        if kind == 2:
            return frame + rng.randbytes(rng.randint(1, 20))
        return rng.randbytes(len(frame))


def _healthy_completeness(
    keys: list[tuple[str, str, int]], healthy: set[str], points: int, start: float, end: float
) -> float:
    window = {k for k in keys if k[0] in healthy and start * 1000 <= k[2] < end * 1000}
    return len(window) / (len(healthy) * points * (end - start))


async def _run_window(site: Site, ledger: Ledger) -> tuple[bool, float, float, int]:
    """Run `gatewayd run` for the window; (alive throughout, window start, end, exit)."""
    proc = start_gatewayd(site.config_path, site.workdir / "gatewayd.log")
    await asyncio.sleep(5)  # start-up and login before the window (chaos timing)
    start = float(int(time.time()) + 1)
    alive = True
    for _ in range(WINDOW_S + 1):
        await asyncio.sleep(1)  # sampling liveness once a second
        alive &= proc.poll() is None
    end = start + WINDOW_S - 1
    status = await stop_gatewayd(proc)
    return alive, start, end, status


@contextlib.asynccontextmanager
async def _cloud(config_path: Path) -> AsyncIterator[Cloud]:
    cloud = Cloud(load_config(config_path))
    cloud.emulator.throttle.enabled = False
    await cloud.start()
    try:
        yield cloud
    finally:
        await cloud.stop()


async def misbehaving_tcp_device(report: Report, quick: bool) -> None:
    """5 healthy TCP devices + 1 rogue device on its own bus."""
    rogue = RogueDevice()
    await rogue.start()
    with tempfile.TemporaryDirectory(prefix="gwchaos-") as tmp:
        workdir = Path(tmp)
        path = write_site(workdir, modbus_port=free_port(), mqtt_port=free_port(), devices=5)
        data = yaml.safe_load(path.read_text())
        data["buses"].append({"name": "rogue", "type": "tcp", "host": "127.0.0.1",
                              "port": rogue.port, "timeout": "300ms"})  # fmt: skip
        data["devices"].append({**data["devices"][0], "name": "rogue", "bus": "rogue",
                                "device_key": "rogue", "unit_id": 1})  # fmt: skip
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        config = load_config(path)
        sim = await asyncio.to_thread(SimProcess, path, "plant")
        try:
            async with _cloud(path) as cloud:
                site = Site(workdir, path, config, sim, cloud, 0)
                ledger = Ledger()
                alive, start, end, status = await _run_window(site, ledger)
                counts = await drain(site, ledger, workdir / "spool.db")
                keys = ledger.keys(site.cloud)
        finally:
            sim.close()
            await rogue.stop()
    healthy = {f"dev{u}" for u in range(1, 6)}
    completeness = _healthy_completeness(keys, healthy, 100, start, end)
    rogue_good = sum(1 for k in set(keys) if k[0] == "rogue")
    outcome = tally(counts, keys)
    outcome.extra.update(alive=alive, exit=status, rogue_requests=rogue.requests)
    add_outcome(report, "rogue-tcp", outcome)
    report.add("rogue-tcp", "healthy devices completeness", 100 * completeness, "%",
               target="100 %", ok=completeness >= 0.999)  # fmt: skip
    report.add("rogue-tcp", "rogue device values accepted", rogue_good, target="0",
               ok=rogue_good == 0, note=f"{rogue.requests} garbage answers")  # fmt: skip
    report.add("rogue-tcp", "daemon alive throughout", str(alive), target="True", ok=alive,
               note=f"exit {status}")  # fmt: skip


async def noisy_rtu_line(report: Report, quick: bool) -> None:
    """4 devices on an RTU line at 38400 baud; unit 2's replies are damaged."""
    with tempfile.TemporaryDirectory(prefix="gwchaos-") as tmp:
        workdir = Path(tmp)
        gateway_pair, device_pair = SocatPair(workdir / "gw"), SocatPair(workdir / "dev")
        try:
            line = NoisyLine(gateway_pair.b, device_pair.a, baudrate=38400, bad_unit=2)
            await line.start()
            bus = {"name": "line", "type": "rtu", "device": gateway_pair.a, "baudrate": 38400,
                   "timeout": "200ms"}  # fmt: skip
            path = write_site(workdir, modbus_port=1, mqtt_port=free_port(), devices=4,
                              points=20, bus=bus)  # fmt: skip
            config = load_config(path)
            sim = await asyncio.to_thread(SimProcess, path, "line", device_pair.b)
            try:
                async with _cloud(path) as cloud:
                    site = Site(workdir, path, config, sim, cloud, 0)
                    ledger = Ledger()
                    alive, start, end, status = await _run_window(site, ledger)
                    counts = await drain(site, ledger, workdir / "spool.db")
                    keys = ledger.keys(site.cloud)
            finally:
                sim.close()
                await line.stop()
        finally:
            gateway_pair.stop()
            device_pair.stop()
    healthy = {"dev1", "dev3", "dev4"}
    completeness = _healthy_completeness(keys, healthy, 20, start, end)
    bad_good = sum(1 for k in set(keys) if k[0] == "dev2")
    outcome = tally(counts, keys)
    outcome.extra.update(alive=alive, exit=status, damaged_frames=line.damaged)
    add_outcome(report, "noisy-rtu", outcome)
    report.add("noisy-rtu", "healthy devices completeness", 100 * completeness, "%",
               target="100 %", ok=completeness >= 0.999)  # fmt: skip
    report.add("noisy-rtu", "damaged device values accepted", bad_good,
               note=f"{line.damaged} replies damaged; values pass only from frames left "
               "intact (noise after the CRC, or a frame split across reads)")  # fmt: skip
    report.add("noisy-rtu", "daemon alive throughout", str(alive), target="True", ok=alive,
               note=f"exit {status}")  # fmt: skip
