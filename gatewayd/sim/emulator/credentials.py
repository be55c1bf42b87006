"""The cloud's side of the EnOS CONNECT credentials: read a clientId, check a sign.

A gateway only builds credentials (`gatewayd.enos.sign.mqtt_credentials`); reading and
verifying them is what EnOS does, so it lives with the emulator and shares the sign recipe
with the product.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping

from gatewayd.enos.sign import UnknownSignMethod, sign

__all__ = ["MalformedClientId", "parse_mqtt_client_id", "verify_sign"]


class MalformedClientId(ValueError):
    """An MQTT clientId does not have the ``{id}|key=value,...|`` shape."""


def verify_sign(
    params: Mapping[str, str],
    secret: str,
    method: str,
    candidate: str,
) -> bool:
    """Whether `candidate` is the sign of `params`, comparing hex case-insensitively.

    An unknown method or a non-ASCII candidate is simply "not valid" (False), because this
    runs on untrusted input (the emulator's CONNECT check). Constant-time comparison.
    """
    try:
        expected = sign(params, secret, method, uppercase=False)
    except (UnknownSignMethod, UnicodeEncodeError):  # a lone surrogate from a JSON escape
        return False
    if not candidate.isascii():
        return False
    return hmac.compare_digest(expected, candidate.strip().lower())


def parse_mqtt_client_id(mqtt_client_id: str) -> tuple[str, dict[str, str]]:
    """Split ``{id}|securemode=2,signmethod=sha256,timestamp=...|`` into id and parameters.

    Tolerant like EnOS: spaces around names/values, extra parameters, a missing trailing
    ``|`` and upper-case parameter names are accepted (names come back lower-cased, values
    stripped). Raises `MalformedClientId` when there is no ``|`` section, the identifier is
    empty, or a parameter has no ``=``. Which parameters are required is the caller's call.
    """
    ident, sep, rest = mqtt_client_id.partition("|")
    if not sep:
        raise MalformedClientId(f"clientId {mqtt_client_id!r} has no '|' parameter section")
    if not ident:
        raise MalformedClientId(f"clientId {mqtt_client_id!r} has an empty identifier")
    if rest.endswith("|"):
        rest = rest[:-1]
    if "|" in rest:
        raise MalformedClientId(f"clientId {mqtt_client_id!r} has more than two '|'")
    params: dict[str, str] = {}
    for item in rest.split(","):
        if not item.strip():
            continue  # tolerate "a=1,,b=2" and a trailing comma
        name, eq, value = item.partition("=")
        if not eq or not name.strip():
            raise MalformedClientId(f"clientId parameter {item!r} is not name=value")
        params[name.strip().lower()] = value.strip()
    return ident, params
