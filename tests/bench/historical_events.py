"""Backlog events: how fast a backlog drains by integration.event.post (batched, one message
in flight per product) against thing.event.post (one message per event, 16 in flight).

    python -m tests.bench historical_events [--events 20000] [--devices 3]

Real parts on loopback: the real spool, gatewayd's `Uplink` and the EnOS emulator (which
checks every event against the product model). Per mode: a fresh site, every sub-device
logged in, then `--events` events an hour old committed at once; measured from the commit
to the spool holding no event. Printed: events/s per mode and the ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path

from tests.integration.test_historical_events import alarm, logged_in, now_ms, rig, spool_empty

HOUR_MS = 3_600_000


async def drain(mode: str, events: int, devices: int) -> tuple[float, int]:
    """(seconds to drain `events` backlog events, messages the cloud received)."""
    with tempfile.TemporaryDirectory() as tmp:
        async with rig(Path(tmp), devices=devices, historical=mode) as r:
            await logged_in(r, devices)
            old = now_ms() - HOUR_MS
            batch = [alarm(f"meter-{1 + i % devices}", old + i, i) for i in range(events)]
            start = time.perf_counter()
            await r.put(batch)
            await spool_empty(r)
            elapsed = time.perf_counter() - start
            channel = "integration" if mode == "integration" else "thing"
            assert len(r.events(channel)) == events, (mode, len(r.events(channel)))
            method = "integration.event.post" if mode == "integration" else None
            sent = r.emulator.stats.requests_by_method
            messages = sent[method] if method else sum(
                n for m, n in sent.items() if m.startswith("thing.event.")
            )
            return elapsed, messages


async def main(events: int, devices: int) -> None:
    results = {}
    for mode in ("thing", "integration"):
        elapsed, messages = await drain(mode, events, devices)
        results[mode] = events / elapsed
        print(f"{mode:12s} {events} events in {elapsed:6.2f} s = {results[mode]:8.0f} events/s"
              f" in {messages} messages")  # fmt: skip
    print(f"integration / thing: {results['integration'] / results['thing']:.1f}x")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--devices", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.events, args.devices))
