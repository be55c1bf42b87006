"""`Spool`: the asyncio face of the store, which runs on ONE dedicated worker thread.

Why a thread: sqlite3 blocks, and an append with `synchronous=FULL` waits for an fsync,
which takes 0.2 ms on this VM's disk but tens of milliseconds on the SD cards and eMMC
of small ARM gateways; run inline it would stall every poller and the MQTT session for
that long. sqlite3 objects must stay on the thread that made them, so one
single-thread executor owns the connection for its whole life (opened, used and closed
there) and calls run one after another, in submission order. sqlite3 releases the GIL
while SQLite works, so the event loop keeps running meanwhile. The cost is one
thread hop per call (tens of microseconds), paid per batch, not per row.

Cancelling a `take_*` call never strands rows: if the caller is cancelled after the
worker took them, they are released again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from types import TracebackType
from typing import ParamSpec, TypeVar

from gatewayd.config.models import SpoolConfig
from gatewayd.samples import Event, Sample, SampleBlock
from gatewayd.spool.frames import ValueShapes
from gatewayd.spool.rows import DeadLetter, Kind, SpooledEvent, SpooledFrame
from gatewayd.spool.stats import SpoolStats
from gatewayd.spool.store import Counts, SpoolStore

_P = ParamSpec("_P")
_T = TypeVar("_T")
_Row = TypeVar("_Row", SpooledFrame, SpooledEvent)


class Spool:
    """Async facade over `SpoolStore`; every method mirrors the store's (see there)."""

    def __init__(self, store: SpoolStore, executor: ThreadPoolExecutor) -> None:
        """Use `Spool.open`; this wraps a store already opened on `executor`'s thread."""
        self._store = store
        self._executor = executor

    @classmethod
    async def open(
        cls,
        config: SpoolConfig,
        *,
        check: bool = True,
        shapes: ValueShapes | None = None,
    ) -> Spool:
        """Open the configured spool on a fresh worker thread (see `SpoolStore.open`)."""
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="gatewayd-spool")
        loop = asyncio.get_running_loop()
        try:
            store = await loop.run_in_executor(
                executor,
                functools.partial(
                    SpoolStore.from_config, config, check=check, shapes=shapes
                ),
            )
        except BaseException:
            executor.shutdown(wait=False)
            raise
        return cls(store, executor)

    async def _call(self, func: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(func, *args, **kwargs))

    async def close(self) -> None:
        """Close the store on its thread, then stop the thread."""
        try:
            await self._call(self._store.close)
        finally:
            self._executor.shutdown(wait=True)

    async def __aenter__(self) -> Spool:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @property
    def path(self) -> Path:
        """The spool file."""
        return self._store.path

    async def append(
        self,
        samples: Sequence[Sample],
        events: Sequence[Event] = (),
        now_ms: int | None = None,
        blocks: Sequence[SampleBlock] = (),
    ) -> None:
        """Commit one poll cycle's rows in one transaction (never raises sqlite errors)."""
        await self._call(self._store.append, samples, events, now_ms, blocks)

    async def set_shapes(self, shapes: ValueShapes) -> None:
        """Shape later appends with new quality settings; see `SpoolStore`."""
        await self._call(self._store.set_shapes, shapes)

    async def take_frames(
        self,
        limit: int,
        *,
        older_than_ms: int | None = None,
        newer_than_ms: int | None = None,
        exclude_devices: Collection[str] = (),
    ) -> list[SpooledFrame]:
        """Begin: see `SpoolStore.take_frames`."""
        func = functools.partial(
            self._store.take_frames,
            limit,
            older_than_ms=older_than_ms,
            newer_than_ms=newer_than_ms,
            exclude_devices=exclude_devices,
        )
        return await self._take(Kind.SAMPLES, func)

    async def take_events(
        self,
        limit: int,
        *,
        older_than_ms: int | None = None,
        newer_than_ms: int | None = None,
        exclude_devices: Collection[str] = (),
    ) -> list[SpooledEvent]:
        """Begin: see `SpoolStore.take_events`."""
        func = functools.partial(
            self._store.take_events,
            limit,
            older_than_ms=older_than_ms,
            newer_than_ms=newer_than_ms,
            exclude_devices=exclude_devices,
        )
        return await self._take(Kind.EVENTS, func)

    async def _take(self, kind: Kind, func: Callable[[], list[_Row]]) -> list[_Row]:
        job = self._executor.submit(func)
        try:
            return await asyncio.shield(asyncio.wrap_future(job))
        except asyncio.CancelledError:
            # Nobody will ack what the worker takes: queue the release right behind the
            # take (the worker runs jobs in order), so any later call sees the rows back.
            with contextlib.suppress(RuntimeError):  # closing: a restart brings them back
                self._executor.submit(self._release_taken, kind, job)
            raise

    def _release_taken(self, kind: Kind, job: Future[list[_Row]]) -> None:
        """On the worker: give back the rows of a take whose caller was cancelled."""
        if job.cancelled() or job.exception() is not None:
            return
        ids = [row.id for row in job.result()]
        if ids:
            self._store.release(kind, ids)

    async def ack(self, kind: Kind, ids: Sequence[int]) -> int:
        """Commit: delete delivered rows; see `SpoolStore.ack`."""
        return await self._call(self._store.ack, kind, ids)

    async def release(self, kind: Kind, ids: Sequence[int]) -> int:
        """Rollback: rows go back to the pool; see `SpoolStore.release`."""
        return await self._call(self._store.release, kind, ids)

    async def release_all(self, keep_backlog_events: bool = False) -> int:
        """Every row in flight goes back to the pool; see `SpoolStore.release_all`."""
        return await self._call(self._store.release_all, keep_backlog_events)

    async def dead_letter(
        self, kind: Kind, ids: Sequence[int], code: int, message: str, now_ms: int
    ) -> int:
        """Move permanently rejected rows aside; see `SpoolStore.dead_letter`."""
        return await self._call(self._store.dead_letter, kind, ids, code, message, now_ms)

    async def rewrite_frame(
        self,
        frame_id: int,
        delivered: Collection[str],
        dead: Mapping[str, tuple[int, str]],
        now_ms: int,
    ) -> SpooledFrame | None:
        """Settle some points of a frame; see `SpoolStore.rewrite_frame`."""
        return await self._call(self._store.rewrite_frame, frame_id, delivered, dead, now_ms)

    async def counts(self) -> Counts:
        """Cheap figures from memory."""
        return await self._call(self._store.counts)

    async def stats(self) -> SpoolStats:
        """A full snapshot (scans the file)."""
        return await self._call(self._store.stats)

    async def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        """The newest dead letters, newest first."""
        return await self._call(self._store.dead_letters, limit)

    async def get_meta(self, key: str) -> str | None:
        """A small persisted value."""
        return await self._call(self._store.get_meta, key)

    async def set_meta(self, key: str, value: str) -> None:
        """Persist a small value durably."""
        await self._call(self._store.set_meta, key, value)
