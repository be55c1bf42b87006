"""Reconnect delay after a cloud outage: how long after the broker is back the first CONNECT
comes, with the daemon's default reconnect policy.

    python -m tests.bench reconnect_delay [--outages 13,30] [--repeats 3] [--lived 5]

Real parts on loopback: the EnOS emulator (connect throttle on: 4 CONNECTs per 2 minutes,
5-minute lock-out) and gatewayd's `Uplink` (no buses, an empty spool, the system clock).
Per run: a fresh emulator and uplink; the session lives `--lived` seconds, the emulator is
stopped (TCP refused) for the outage, then started again on the same port. Measured: from
the emulator accepting TCP again to its next CONNECT (the emulator's own hook), and whether
EnOS' throttle refused anything. The figure the issue asks for: <= 10 s whenever the budget
allows; the issue saw 77 s (30 s outage) and > 45 s (13 s outage).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from gatewayd.clock import SystemClock
from gatewayd.config.models import Config
from gatewayd.sim.emulator import EmulatorConfig, EnosEmulator
from gatewayd.spool.worker import Spool
from gatewayd.uplink.subdevices import SubDeviceRegistry
from gatewayd.uplink.uplink import Uplink
from tests.support import async_wait_until, free_port


class ConnectClock:
    """Wraps an emulator's CONNECT hook to note when each CONNECT arrived (monotonic)."""

    def __init__(self, emulator: EnosEmulator) -> None:
        self.times: list[float] = []
        decide = emulator.decide_connect

        def noted(session: Any) -> int:
            self.times.append(time.monotonic())
            return decide(session)

        emulator.decide_connect = noted  # type: ignore[method-assign]


def site_config(workdir: Path, port: int) -> Config:
    return Config.model_validate(
        {
            "gateway": {
                "product_key": "gwPK",
                "device_key": "gwDK",
                "device_secret": "gwSecret",
                "broker": {"host": "127.0.0.1", "port": port},
            },
            "spool": {"path": str(workdir / "spool.db"), "synchronous": "normal"},
        }
    )


async def one_outage(outage_s: float, lived_s: float, seed: int) -> dict[str, float]:
    """One run: connect, live `lived_s`, cut for `outage_s`, measure the way back."""
    with tempfile.TemporaryDirectory() as tmp:
        config = site_config(Path(tmp), free_port())
        cloud = EmulatorConfig.from_gateway_config(config)
        emulator = EnosEmulator(cloud, port=config.gateway.broker.port)
        await emulator.start()
        async with await Spool.open(config.spool) as spool:
            uplink = Uplink(
                config,
                spool,
                SubDeviceRegistry([]),
                clock=SystemClock(),
                rng=random.Random(seed),
            )
            task = asyncio.create_task(uplink.run())
            try:
                await async_wait_until(lambda: uplink.status.state == "connected", 30, "up")
                await asyncio.sleep(lived_s)
                await emulator.stop()
                await async_wait_until(lambda: uplink.status.state != "connected", 30, "down")
                await asyncio.sleep(outage_s)
                emulator = EnosEmulator(cloud, port=config.gateway.broker.port)
                connects = ConnectClock(emulator)
                await emulator.start()
                back = time.monotonic()
                await async_wait_until(lambda: connects.times, 400, "the next CONNECT")
                delay = connects.times[0] - back
                await async_wait_until(
                    lambda: uplink.status.state == "connected", 400, "connected again"
                )
                refused = emulator.stats.refused_connects
            finally:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
                await emulator.stop()
    return {"delay_s": delay, "refused": refused}


async def main(outages: list[float], repeats: int, lived_s: float) -> None:
    print(f"session lived {lived_s:g} s before each outage; {repeats} run(s) per outage")
    for outage in outages:
        runs = [await one_outage(outage, lived_s, seed) for seed in range(repeats)]
        delays = [r["delay_s"] for r in runs]
        refused = sum(int(r["refused"]) for r in runs)
        print(
            f"outage {outage:4.0f} s: first CONNECT {statistics.mean(delays):5.1f} s after the"
            f" broker was back (min {min(delays):.1f}, max {max(delays):.1f});"
            f" CONNECTs refused by the throttle: {refused};"
            f" max delay / 10 s target = {max(delays) / 10:.2f}",
            flush=True,
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outages", default="13,30", help="outage lengths in seconds")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--lived", type=float, default=5.0, help="session age at the cut (s)")
    args = parser.parse_args()
    asyncio.run(main([float(o) for o in args.outages.split(",")], args.repeats, args.lived))
