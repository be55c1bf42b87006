"""Benchmark: cost of splitting + encoding an uplink batch vs. plain JSON encoding.

Run: ``.venv/bin/python -m tests.bench.enos_batching``

Figures are ratios against baselines measured in the same run (never absolute times):

- ``split/plain``: `encode_batches` (size-bounded split, exact sizing, final payloads) versus
  one `json.dumps` of the same records as a single (possibly oversized) message -- the least
  work any encoder could do. Close to 1 means splitting is nearly free.
- ``naive/split``: a naive splitter that re-serialises the whole open message after each
  added record to check its size, versus ours (measured on a smaller batch, it is quadratic).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from gatewayd.enos.batching import DEFAULT_MAX_BATCH_BYTES, encode_batches
from gatewayd.enos.ids import IdGenerator
from gatewayd.enos.messages import MeasurepointRecord, point_value, record_params


def make_records(n: int, points: int) -> list[MeasurepointRecord]:
    """n records of `points` float points with quality, over 50 devices."""
    return [
        MeasurepointRecord(
            "subPK",
            f"device{i % 50:03d}",
            1_700_000_000_000 + i * 1000,
            {f"point_{j:02d}": point_value(i * 0.25 + j, 0) for j in range(points)},
        )
        for i in range(n)
    ]


def plain(records: list[MeasurepointRecord]) -> int:
    """Baseline: one compact json.dumps of everything."""
    body: dict[str, Any] = {
        "id": "1",
        "version": "1.0",
        "method": "thing.measurepoint.post.batch",
        "params": [record_params(r) for r in records],
    }
    return len(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode())


def ours(records: list[MeasurepointRecord]) -> int:
    """encode_batches at the real limit."""
    result = encode_batches("gwPK", "gwDK", records, next_id=IdGenerator(1), resume=False)
    return sum(len(m.request.payload) for m in result.messages)


def naive(records: list[MeasurepointRecord]) -> int:
    """Re-serialise the open message after each record to test its size."""
    total, open_batch = 0, []
    for record in records:
        candidate = [*open_batch, record_params(record)]
        size = len(json.dumps({"params": candidate}, separators=(",", ":")).encode())
        if size > DEFAULT_MAX_BATCH_BYTES and open_batch:
            total += 1
            open_batch = [record_params(record)]
        else:
            open_batch = candidate
    return total


def best_of(
    fn: Callable[[list[MeasurepointRecord]], int], arg: list[MeasurepointRecord], repeat: int = 5
) -> float:
    """Best of `repeat` runs, in seconds (only used for ratios)."""
    runs = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn(arg)
        runs.append(time.perf_counter() - start)
    return min(runs)


def main() -> None:
    """Print the ratios."""
    big = make_records(20_000, 20)  # ~16 MB of JSON, ~32 messages
    t_plain, t_ours = best_of(plain, big), best_of(ours, big)
    messages = len(
        encode_batches("gwPK", "gwDK", big, next_id=IdGenerator(1), resume=False).messages
    )
    print(f"records=20000 points/record=20 bytes={plain(big)} messages={messages}")
    print(f"split/plain  = {t_ours / t_plain:.2f}x  (encode_batches vs one json.dumps)")
    small = make_records(800, 20)
    t_naive, t_ours_small = best_of(naive, small, repeat=2), best_of(ours, small)
    print(f"naive/split  = {t_naive / t_ours_small:.1f}x  (800 records; naive re-serialises)")


if __name__ == "__main__":
    main()
