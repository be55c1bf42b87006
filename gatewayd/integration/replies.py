"""What an integration reply means: typed outcomes for uploads, errors for file calls.

Pure. Success is `code` 200 or 0 (services differ; gatewayd/integration/PROTOCOL.md
§3.6, §6.1). Transport errors, HTTP 5xx/429/408 and auth failures are worth retrying; any
other code (a model mismatch such as 1204, a malformed request) is a permanent rejection
of that request. File calls: §4.3; an error envelope inside a 200 download: §6.5.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

SUCCESS_CODES = frozenset({0, 200})
#: HTTP statuses (and equal JSON codes) that mean "the token is not (or no longer) good".
AUTH_STATUSES = frozenset({401, 403})
#: HTTP statuses that say "not now" rather than "never".
RETRYABLE_STATUSES = frozenset({408, 425, 429})
NOT_FOUND_STATUSES = frozenset({404})


@dataclass(frozen=True, slots=True)
class Accepted:
    """EnOS stored the request (and its files)."""

    request_id: str | None


@dataclass(frozen=True, slots=True)
class Rejected:
    """EnOS refused the request for good (e.g. 1204 model validation): do not resend it."""

    code: int | None
    msg: str
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Retryable:
    """Not delivered, for a reason that may pass (network, 5xx, auth): send it again later."""

    reason: str
    auth: bool = False


UploadOutcome = Accepted | Rejected | Retryable


@dataclass(frozen=True, slots=True)
class AuthFailure:
    """The call was refused for its token: refresh the token and try once more."""

    reason: str


# -- errors of the file calls (download, delete) and of the token service ------------------


class IntegrationError(Exception):
    """An integration call failed; the message is one line for the engineer."""


class IntegrationAuthError(IntegrationError):
    """The service account was refused (token service or endpoint), after one refresh."""


class IntegrationNotFound(IntegrationError):
    """The file (or asset) does not exist in EnOS."""


class IntegrationUnavailable(IntegrationError):
    """EnOS could not be reached or answered with a server error or garbage."""


class IntegrationRefused(IntegrationError):
    """EnOS answered with a failure code that is none of the above."""

    def __init__(self, code: int | None, msg: str) -> None:
        self.code = code
        self.msg = msg
        super().__init__(f"EnOS refused: code {code}: {msg}")


def _json_object(body: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _code(reply: dict[str, Any]) -> int | None:
    code = reply.get("code")
    if isinstance(code, bool):
        return None
    if isinstance(code, int):
        return code
    if isinstance(code, str) and code.strip().lstrip("-").isdigit():
        return int(code)
    return None


def _excerpt(body: bytes) -> str:
    text = body[:200].decode("utf-8", "replace").replace("\n", " ").strip()
    return text or "(empty body)"


def classify_upload_reply(http_status: int, body: bytes) -> UploadOutcome | AuthFailure:
    """The outcome of an upload from its HTTP status and body."""
    reply = _json_object(body)
    code = _code(reply) if reply is not None else None
    msg = str(reply.get("msg", "")) if reply is not None else _excerpt(body)
    request_id = reply.get("requestId") if reply is not None else None
    request_id = request_id if isinstance(request_id, str) else None
    if http_status in AUTH_STATUSES or code in AUTH_STATUSES:
        return AuthFailure(f"HTTP {http_status}, code {code}: {msg}")
    if http_status >= 500 or http_status in RETRYABLE_STATUSES:
        return Retryable(f"HTTP {http_status}: {msg}")
    if reply is None:
        # A proxy's HTML page or a cut-off body: nothing says EnOS refused the data.
        return Retryable(f"HTTP {http_status}: reply is not JSON: {msg}")
    if http_status == 200 and code in SUCCESS_CODES:
        return Accepted(request_id)
    if code is not None and (500 <= code < 600 or code in RETRYABLE_STATUSES):
        return Retryable(f"code {code}: {msg}")
    return Rejected(code if code is not None else http_status, msg, request_id)


def file_call_error(http_status: int, body: bytes) -> IntegrationError | AuthFailure | None:
    """The error a download/delete reply stands for; None when it is a success."""
    reply = _json_object(body)
    code = _code(reply) if reply is not None else None
    msg = str(reply.get("msg", "")) if reply is not None else _excerpt(body)
    if http_status in AUTH_STATUSES or code in AUTH_STATUSES:
        return AuthFailure(f"HTTP {http_status}, code {code}: {msg}")
    if http_status in NOT_FOUND_STATUSES or code in NOT_FOUND_STATUSES:
        return IntegrationNotFound(f"not found: {msg}")
    if http_status >= 500 or http_status in RETRYABLE_STATUSES:
        return IntegrationUnavailable(f"EnOS answered HTTP {http_status}: {msg}")
    if reply is None:
        return IntegrationUnavailable(f"EnOS answered HTTP {http_status}, not JSON: {msg}")
    if http_status == 200 and code in SUCCESS_CODES:
        return None
    return IntegrationRefused(code if code is not None else http_status, msg)


def is_error_envelope(body: bytes) -> bool:
    """Whether a JSON body is an EnOS reply envelope (an integer `code` and a `msg`)."""
    reply = _json_object(body)
    return reply is not None and _code(reply) is not None and "msg" in reply
