"""Cancellations that libraries drop, raised again.

`asyncio.wait_for` on Python 3.11 returns the inner result and drops a cancellation that
arrives in the same loop turn as that result (CPython gh-86296, fixed in 3.12). pymodbus
waits for every answer and for its connect with `wait_for`, aiomqtt for every SUBACK and
PUBACK. A dropped cancellation leaves the task marked as cancelling (`Task.cancelling()`
stays raised, since nothing called `uncancel`) but running: a poller or uplink being shut
down would go on polling or publishing, and shutdown would wait for it until something
else killed it.

`KeepingCancels` wraps one such library call: it compares the task's cancellation count
before and after, and raises `CancelledError` when a request arrived during the call and
did not surface, in place of the call's result or error. A count that `asyncio.timeout`
raised and then balanced with `uncancel` (a timeout that fired while the call finished)
does not count.
"""

from __future__ import annotations

import asyncio
from types import TracebackType


class KeepingCancels:
    """`with KeepingCancels(): await library_call()` re-raises a dropped cancellation.

    A plain class rather than `contextlib.contextmanager`: it wraps every Modbus request.
    """

    __slots__ = ("_before", "_task")

    def __enter__(self) -> None:
        task = asyncio.current_task()
        self._task = task
        self._before = task.cancelling() if task is not None else 0

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        task = self._task
        if task is None or task.cancelling() <= self._before:
            return
        if isinstance(exc, asyncio.CancelledError):
            return  # the cancellation itself, on its way out
        # No result and no other error may stand in for it: callers retry on errors, so
        # the cancellation would be lost all the same.
        raise asyncio.CancelledError from exc
