"""FineTimer: sub-millisecond sleeps to a monotonic deadline, never early."""

from __future__ import annotations

import asyncio
import sys
import time

import pytest

from gatewayd.modbus.finetimer import FineTimer


async def test_never_returns_before_the_deadline() -> None:
    """Each of 50 short sleeps returns at or after its deadline."""
    timer = FineTimer()
    try:
        early = []
        for step in range(50):
            deadline = time.monotonic() + 0.0001 * (step % 20 + 1)
            await timer.sleep_until(deadline)
            if time.monotonic() < deadline:
                early.append(step)
        assert early == []
    finally:
        timer.close()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="timerfd is Linux-only")
async def test_uses_a_timerfd_on_linux() -> None:
    """On Linux the timer is precise (timerfd) and opens its fd only when it must wait."""
    timer = FineTimer()
    assert timer.precise
    await timer.sleep_until(time.monotonic() - 1)  # already past: no fd needed
    assert timer._fd is None
    await timer.sleep_until(time.monotonic() + 0.001)
    assert timer._fd is not None
    timer.close()
    assert timer._fd is None
    timer.close()  # idempotent


async def test_cancelled_sleep_leaves_the_timer_usable() -> None:
    """A sleep cancelled midway does not wake the next sleep early."""
    timer = FineTimer()
    try:
        task = asyncio.create_task(timer.sleep_until(time.monotonic() + 0.002))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # The cancelled deadline passes while nobody waits; a later, longer sleep must
        # not be woken by that stale expiry.
        deadline = time.monotonic() + 0.02
        await timer.sleep_until(deadline)
        assert time.monotonic() >= deadline
    finally:
        timer.close()


async def test_fallback_without_timerfd_is_never_early() -> None:
    """Without a timerfd the timer falls back to asyncio.sleep, still never early."""
    timer = FineTimer()
    timer._usable = False
    deadline = time.monotonic() + 0.003
    await timer.sleep_until(deadline)
    assert time.monotonic() >= deadline
    assert timer._fd is None
