"""Capture rules: the stage hook's CPU at B1 load, and the ring's memory.

    python -m tests.bench capture_hook [--cycles 300]

Pure and in virtual time (no sockets, no files): prints figures, asserts nothing.

1. **CPU**: 50 devices x 100 float32 points @ 1 s (B1's load), `DeviceMapping.read` on
   one block per device as the poller hands it over, without capture rules, then with one
   capture rule per device (10 of its points, `before: 60s`): the ring is fed every
   cycle, no capture is running (the steady state). The difference per second of plant
   time as % of one core, and the ratio of the two.
2. **Memory**: one device's ring with 10 points polled every second and `before: 60s`,
   filled for 10 minutes (full, trimming), summed with `sys.getsizeof`.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from dataclasses import dataclass

from gatewayd.config.models import PointConfig
from gatewayd.mapping.capture import CaptureSpec, DeviceCaptures
from gatewayd.mapping.muting import Muting
from gatewayd.mapping.stage import DeviceMapping
from gatewayd.samples import Event, Sample, SampleBlock, Value

DEVICES = 50
POINTS = 100
CAPTURED = 10
T0 = 1_764_928_800_000


@dataclass
class Block:
    """A decoded response as the poller hands it over."""

    indices: tuple[int, ...]
    measurepoints: tuple[str, ...]
    values: list[Value]
    nonfinite: tuple[int, ...]
    ts_ms: int
    ascending: bool = True


class Hook:
    """The capture core behind the stage's hook (file actions dropped: no I/O here)."""

    def __init__(self, core: DeviceCaptures) -> None:
        self.core = core

    def take(
        self,
        samples: list[Sample],
        blocks: list[SampleBlock],
        events: list[Event],
        *,
        publishing: bool,
    ) -> list[Event]:
        return self.core.take(samples, blocks, events, publishing=publishing)[0]


def points() -> list[PointConfig]:
    return [
        PointConfig.model_validate(
            {"measurepoint": f"p{i}", "table": "holding", "address": 2 * i, "type": "float32"}
        )
        for i in range(POINTS)
    ]


def stage(name: str, *, capture: bool) -> DeviceMapping:
    hook = None
    if capture:
        names = tuple(f"p{i}" for i in range(CAPTURED))
        spec = CaptureSpec("trip", names, before_ms=60_000, after_ms=10_000, param="record")
        hook = Hook(DeviceCaptures(name, {"trip": spec}, dict.fromkeys(names, 1000)))
    return DeviceMapping(name, points(), [], Muting(), default_interval=1.0, capture=hook)


def cpu_seconds(cycles: int, *, capture: bool) -> float:
    rng = random.Random(1)
    stages = [stage(f"d{i}", capture=capture) for i in range(DEVICES)]
    indices = tuple(range(POINTS))
    names = tuple(f"p{i}" for i in range(POINTS))
    started = time.process_time()
    for cycle in range(cycles):
        ts = T0 + cycle * 1000
        for s in stages:
            values: list[Value] = [rng.random() for _ in indices]
            s.read([Block(indices, names, values, (), ts)], [])
    return time.process_time() - started


def ring_bytes() -> int:
    """The full ring's size: its deques, entry tuples, values and (distinct) times."""
    names = tuple(f"p{i}" for i in range(CAPTURED))
    spec = CaptureSpec("trip", names, before_ms=60_000, after_ms=10_000, param="record")
    core = DeviceCaptures("d", {"trip": spec}, dict.fromkeys(names, 1000))
    for second in range(600):
        # A fresh float per value, as decoding makes them.
        core.observe({T0 + second * 1000: {n: second + i / 100 for i, n in enumerate(names)}})
    ring = core.ring
    total = sys.getsizeof(ring._points) + sum(sys.getsizeof(d) for d in ring._points.values())
    times: set[int] = set()
    for name in names:
        for entry in ring.entries(name):
            total += sys.getsizeof(entry) + sys.getsizeof(entry[1])
            times.add(entry[0])
    return total + sum(sys.getsizeof(t) for t in times)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.bench capture_hook")
    parser.add_argument("--cycles", type=int, default=300)
    args = parser.parse_args()
    plain = cpu_seconds(args.cycles, capture=False)
    captured = cpu_seconds(args.cycles, capture=True)
    extra = (captured - plain) / args.cycles * 100  # % of a core per second of plant time
    print(f"mapping stage, {DEVICES} devices x {POINTS} points @ 1 s, {args.cycles} cycles")
    print(f"  without captures: {plain:.2f} s CPU; with a {CAPTURED}-point capture each: "
          f"{captured:.2f} s (x{captured / plain:.2f})")  # fmt: skip
    print(f"  the hook's cost: {extra:.2f} % of one core")
    print(f"ring, {CAPTURED} points @ 1 s, before 60 s, full: {ring_bytes() / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
