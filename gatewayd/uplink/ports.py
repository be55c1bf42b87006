"""The two things delivery talks to, as small protocols: the spool and the EnOS session.

Delivery depends on these shapes, not on classes, so its logic can be exercised against
the real spool and a real broker in integration tests, and the seams stay one method deep.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Protocol

from gatewayd.enos.session import RawReply
from gatewayd.spool.rows import Kind, SpooledEvent, SpooledFrame


class SpoolPort(Protocol):
    """The spool's begin/commit API, awaited (the SQLite work runs off the event loop)."""

    async def take_frames(
        self,
        limit: int,
        *,
        older_than_ms: int | None = None,
        newer_than_ms: int | None = None,
        exclude_devices: Collection[str] = (),
    ) -> list[SpooledFrame]: ...

    async def take_events(
        self,
        limit: int,
        *,
        older_than_ms: int | None = None,
        newer_than_ms: int | None = None,
        exclude_devices: Collection[str] = (),
    ) -> list[SpooledEvent]: ...

    async def ack(self, kind: Kind, ids: Sequence[int]) -> int: ...

    async def release(self, kind: Kind, ids: Sequence[int]) -> int: ...

    async def release_all(self, keep_backlog_events: bool = False) -> int: ...

    async def dead_letter(
        self, kind: Kind, ids: Sequence[int], code: int, message: str, now_ms: int
    ) -> int: ...

    async def rewrite_frame(
        self,
        frame_id: int,
        delivered: Collection[str],
        dead: Mapping[str, tuple[int, str]],
        now_ms: int,
    ) -> SpooledFrame | None: ...


class SessionPort(Protocol):
    """Request/reply over the gateway's MQTT session."""

    async def request(
        self, topic: str, msg_id: str, payload: bytes, *, timeout: float | None = None
    ) -> RawReply: ...

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None: ...
