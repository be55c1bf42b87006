"""One upstream request whose successful reply data a caller needs, or why it has none."""

from __future__ import annotations

from typing import Any

from gatewayd.enos import messages
from gatewayd.enos.session import GatewaySession, ReplyTimeout


async def reply_data(session: GatewaySession, request: messages.Request) -> tuple[Any, str]:
    """(the reply's `data`, "") after a 200, or (None, why not: no reply, unreadable, refused)."""
    try:
        raw = await session.request(request.topic, request.id, request.payload)
        reply = messages.decode_reply(raw.payload)
    except ReplyTimeout:
        return None, f"no reply to {request.method}"
    except messages.MalformedMessage as exc:
        return None, f"unreadable {request.method} reply: {exc}"
    if not reply.ok:
        return None, f"{request.method} refused: {reply.code} {reply.message}".strip()
    return reply.data, ""
