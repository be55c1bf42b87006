"""KeepingCancels: a cancellation a library call drops is raised again, nothing else is."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

import pytest

from gatewayd.cancels import KeepingCancels

T = TypeVar("T")


async def dropping_call(started: asyncio.Event, outcome: BaseException | None = None) -> str:
    """Like 3.11's `wait_for` when the answer lands with the cancel: the cancel is eaten."""
    started.set()
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        if outcome is not None:
            raise outcome from None
    return "answer"


async def guarded(call: Awaitable[T]) -> T:
    with KeepingCancels():
        return await call


async def test_a_dropped_cancellation_is_raised_again() -> None:
    started = asyncio.Event()
    task = asyncio.create_task(guarded(dropping_call(started)))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert task.cancelled()


async def test_an_error_does_not_stand_in_for_a_dropped_cancellation() -> None:
    started = asyncio.Event()
    task = asyncio.create_task(guarded(dropping_call(started, ConnectionError("gone"))))
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError) as caught:
        await task
    assert isinstance(caught.value.__cause__, ConnectionError)


async def test_without_a_cancellation_result_and_errors_pass() -> None:
    async def fails() -> str:
        raise ValueError("bad")

    assert await guarded(asyncio.sleep(0, "answer")) == "answer"
    with pytest.raises(ValueError, match="bad"):
        await guarded(fails())


async def test_a_timeout_balanced_by_its_scope_is_not_a_cancellation() -> None:
    """asyncio.timeout firing as the call finishes: the scope uncancels, the result stands."""
    started = asyncio.Event()

    async def timed() -> object:
        with KeepingCancels():
            async with asyncio.timeout(0):
                return await dropping_call(started)

    assert await timed() == "answer"
    assert started.is_set()


async def test_a_cancellation_from_before_the_call_is_not_counted() -> None:
    """Only requests made during the call count: work done while cancelling still runs."""

    async def cleanup_while_cancelling() -> object:
        current = asyncio.current_task()
        assert current is not None
        current.cancel()
        try:
            await asyncio.sleep(1)
        except asyncio.CancelledError:
            return await guarded(asyncio.sleep(0, "logged out"))
        raise AssertionError("not cancelled")

    assert await cleanup_while_cancelling() == "logged out"
