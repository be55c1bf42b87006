"""One upstream request whose successful reply data a caller needs, or why it has none.

Session-start lookups (`thing.topo.get`, `thing.tsltemplate.get`) stand between a new
session and its first login and data: a cloud that never answers them would hold both back
for `uplink.reply_timeout` (30 s by default, per request). They only refine what the
gateway does (bind missing devices, withhold points the cloud model lacks), so they are
given up after `lookup_timeout` and the session goes on as configured.
"""

from __future__ import annotations

from typing import Any

from gatewayd.enos import messages
from gatewayd.enos.session import GatewaySession, ReplyTimeout

#: Longest wait for a session-start lookup's reply; EnOS answers one in well under a second.
LOOKUP_TIMEOUT_S = 5.0


def lookup_timeout(reply_timeout: float) -> float:
    """The reply timeout of a session-start lookup: never longer than `reply_timeout`."""
    return min(reply_timeout, LOOKUP_TIMEOUT_S)


async def reply_data(
    session: GatewaySession, request: messages.Request, *, timeout: float | None = None
) -> tuple[Any, str]:
    """(the reply's `data`, "") after a 200, or (None, why not: no reply, unreadable, refused).

    `timeout` overrides the session's reply timeout for this request (None: the session's).
    """
    try:
        raw = await session.request(request.topic, request.id, request.payload, timeout=timeout)
        reply = messages.decode_reply(raw.payload)
    except ReplyTimeout:
        waited = f" within {timeout:g}s" if timeout is not None else ""
        return None, f"no reply to {request.method}{waited}"
    except messages.MalformedMessage as exc:
        return None, f"unreadable {request.method} reply: {exc}"
    if not reply.ok:
        return None, f"{request.method} refused: {reply.code} {reply.message}".strip()
    return reply.data, ""
