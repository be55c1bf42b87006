"""Upstream requests as the cloud receives them: the emulator's decoder (never the gateway's).

A gateway only encodes requests (`gatewayd.enos.messages`); reading them back is the cloud's
job, so the decoder lives with the emulator and shares only the JSON rules (an object, a
usable id) with the product codec.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from gatewayd.enos.messages import MalformedMessage, load_object, message_id

__all__ = ["Envelope", "decode_request"]


@dataclass(frozen=True, slots=True)
class Envelope:
    """An upstream request as received. `body` is the whole object."""

    id: str
    method: str | None
    version: str | None
    params: Any
    body: dict[str, Any] = field(repr=False)


def decode_request(payload: bytes | str) -> Envelope:
    """Decode a request envelope. `MalformedMessage` (id set when readable) otherwise.

    Empty payload -> reason starts with "payload is empty" (EnOS 1251); any other problem is
    a format error (1220). `method`/`version` are returned as sent (None if absent or not
    strings); checking them against the topic is the caller's job (1260).
    """
    obj = load_object(payload)
    id = message_id(obj)
    if id is None:
        raise MalformedMessage(f"request has no usable id: {obj.get('id')!r}")
    method, version = obj.get("method"), obj.get("version")
    return Envelope(
        id=id,
        method=method if isinstance(method, str) else None,
        version=version if isinstance(version, str) else None,
        params=obj.get("params"),
        body=obj,
    )
