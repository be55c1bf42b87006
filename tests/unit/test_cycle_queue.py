"""The poller → spool writer queue is bounded by points as well as by cycles."""

from __future__ import annotations

import asyncio

import pytest

from gatewayd.modbus.cyclequeue import CycleQueue
from gatewayd.modbus.poller import CycleResult
from gatewayd.samples import SampleBlock


def cycle(points: int, tick_ms: int = 0) -> CycleResult:
    """A cycle of one good block of `points` values."""
    names = tuple(f"p{i}" for i in range(points))
    block = SampleBlock("dev", names, [1.0] * points, tick_ms)
    return CycleResult("bus", [], [], tick_ms, 0.0, ("dev",), 1, 0, [block])


def test_full_at_max_points_and_free_again_when_the_writer_takes_a_cycle() -> None:
    """Cycles are admitted while fewer than max_points wait; then put waits (put_nowait
    refuses) until the writer takes one, and the count follows every put and get."""
    queue = CycleQueue(max_cycles=64, max_points=10)
    queue.put_nowait(cycle(6, 1))
    queue.put_nowait(cycle(6, 2))  # 6 < 10 waiting: admitted, now 12
    assert (queue.points, queue.full()) == (12, True)
    with pytest.raises(asyncio.QueueFull):
        queue.put_nowait(cycle(1, 3))
    assert queue.get_nowait().tick_ms == 1
    assert (queue.points, queue.full()) == (6, False)
    queue.put_nowait(cycle(1, 3))
    assert [queue.get_nowait().tick_ms for _ in range(2)] == [2, 3]
    assert (queue.points, queue.empty()) == (0, True)


def test_an_empty_queue_takes_one_cycle_however_large() -> None:
    """A bus whose single cycle exceeds the bound is not blocked forever."""
    queue = CycleQueue(max_cycles=64, max_points=10)
    queue.put_nowait(cycle(500))
    assert queue.full()
    with pytest.raises(asyncio.QueueFull):
        queue.put_nowait(cycle(1))


def test_the_cycle_count_still_bounds_small_cycles() -> None:
    """Tiny cycles stop at max_cycles, as the plain queue did."""
    queue = CycleQueue(max_cycles=3, max_points=1_000)
    for tick in range(3):
        queue.put_nowait(cycle(1, tick))
    with pytest.raises(asyncio.QueueFull):
        queue.put_nowait(cycle(1, 3))


async def test_a_waiting_put_resumes_when_the_writer_catches_up() -> None:
    """`await put` blocks on a points-full queue and completes after a get, in order."""
    queue = CycleQueue(max_cycles=64, max_points=10)
    await queue.put(cycle(10, 1))
    waiting = asyncio.ensure_future(queue.put(cycle(3, 2)))
    await asyncio.sleep(0)
    assert not waiting.done()
    assert (await queue.get()).tick_ms == 1
    await asyncio.wait_for(waiting, 5)
    assert ((await queue.get()).tick_ms, queue.points) == (2, 0)
