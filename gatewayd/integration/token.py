"""APIM access tokens: the sha256 rule and when to refresh.

The token service and its rules: gatewayd/integration/PROTOCOL.md §2 (the repeated
request refusal, 1001: §6.6).

Pure: the caller supplies the time. `TokenCache` answers "is the held token still good
enough to use now?"; the HTTP seam asks the token service when it is not.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

TOKEN_PATH = "/apim-token-service/v2.0/token/get"  # noqa: S105 (a URL path)

#: Refresh this long before the token's expiry at the latest (clock skew, a slow upload).
MIN_REFRESH_MARGIN = 60.0
#: ... or this share of its lifetime, whichever is longer (short-lived tokens in tests).
REFRESH_SHARE = 0.1


class TokenRefused(Exception):
    """The token service answered, but gave no token (unknown key, bad encryption, ...)."""

    def __init__(self, status: object, msg: str) -> None:
        self.status = status
        self.msg = msg
        super().__init__(f"token service refused: status {status}: {msg}")


def token_encryption(access_key: str, timestamp_ms: int, secret_key: str) -> str:
    """Lowercase hex sha256 of access key + decimal timestamp + secret key (UTF-8)."""
    text = f"{access_key}{timestamp_ms}{secret_key}"
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def token_request_body(access_key: str, timestamp_ms: int, secret_key: str) -> bytes:
    """The JSON body of a token request; carries the encryption, never the secret."""
    body = {
        "appKey": access_key,
        "encryption": token_encryption(access_key, timestamp_ms, secret_key),
        "timestamp": timestamp_ms,
    }
    return json.dumps(body, separators=(",", ":")).encode()


@dataclass(frozen=True, slots=True)
class TokenGrant:
    """A token and its lifetime in seconds, as the token service gave them."""

    token: str
    expire: float


def parse_token_reply(body: bytes) -> TokenGrant:
    """The grant in a token reply; `TokenRefused` for a refusal or a malformed reply."""
    try:
        reply = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise TokenRefused(None, "reply is not JSON") from None
    if not isinstance(reply, dict):
        raise TokenRefused(None, "reply is not a JSON object")
    status = reply.get("status")
    if status != 0:
        raise TokenRefused(status, str(reply.get("msg", "")))
    data = reply.get("data")
    token = data.get("accessToken") if isinstance(data, dict) else None
    expire = data.get("expire") if isinstance(data, dict) else None
    if not isinstance(token, str) or not token:
        raise TokenRefused(status, "reply has no data.accessToken")
    if isinstance(expire, bool) or not isinstance(expire, int | float) or expire <= 0:
        raise TokenRefused(status, f"reply has no usable data.expire ({expire!r})")
    return TokenGrant(token, float(expire))


class TokenCache:
    """The current token and the time (caller's clock) it should be replaced at."""

    def __init__(self) -> None:
        self._token: str | None = None
        self._refresh_at = 0.0

    def current(self, now: float) -> str | None:
        """The held token if it is not due for refresh at `now`, else None."""
        if self._token is not None and now < self._refresh_at:
            return self._token
        return None

    def store(self, grant: TokenGrant, received_at: float) -> None:
        """Keep `grant`, obtained at `received_at`, until shortly before it expires."""
        margin = max(MIN_REFRESH_MARGIN, grant.expire * REFRESH_SHARE)
        # A lifetime shorter than the margin: use it for half its life rather than never.
        margin = min(margin, grant.expire / 2)
        self._token = grant.token
        self._refresh_at = received_at + grant.expire - margin

    def invalidate(self, token: str) -> None:
        """Forget `token` after an auth failure (unless a newer one replaced it meanwhile)."""
        if self._token == token:
            self._token = None
