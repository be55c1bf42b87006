"""The EnOS sign (PROTOCOL.md §1.5) and the MQTT CONNECT credentials built on it (§1.2-1.4).

One recipe serves CONNECT, sub-device login, batch login and topo add: sort the parameter
names (plain code-point order), concatenate ``name + value`` pairs, append the secret, and
hash the UTF-8 bytes with a *plain* digest. The ``hmac*`` method names are historical aliases;
no HMAC is involved.

Hex case: EnOS compares the sign case-insensitively (§7.1), so either case works. By default
`sign` produces what the Python/Java SDKs produce -- uppercase for SHA-1 ("historical
compatibility"), lowercase for SHA-256 and MD5 -- so our output matches the spec's test
vectors byte for byte. Pass ``uppercase=True``/``False`` to force a case.

The cloud's side (reading a CONNECT's clientId, checking its sign) is the emulator's:
`gatewayd.sim.emulator.credentials`.

Pure functions only: the timestamp is always an argument (EnOS treats it as an opaque string
that must be identical in the clientId and in the sign; it is never checked for freshness).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

#: Every ``signmethod`` name seen in SDKs and docs (after trim + lower-case) -> hashlib name.
SIGN_METHOD_DIGESTS: Mapping[str, str] = {
    "sha256": "sha256",
    "hmacsha256": "sha256",
    "sha1": "sha1",
    "hmacsha1": "sha1",
    "md5": "md5",
    "hmacmd5": "md5",
}

#: Secure modes of the MQTT CONNECT (§1.2).
SECURE_MODE_DEVICE_SECRET = 2
SECURE_MODE_PRODUCT_SECRET = 3
SECURE_MODE_INTEGRATION = 4

#: The literal device key of the message-integration channel (secure mode 4).
INTEGRATION_DEVICE_KEY = "%channel%"


class UnknownSignMethod(ValueError):
    """The ``signmethod`` name is none of the aliases EnOS accepts."""

    def __init__(self, method: str) -> None:
        self.method = method
        known = ", ".join(sorted(SIGN_METHOD_DIGESTS))
        super().__init__(f"unknown EnOS sign method {method!r} (known: {known})")


def digest_name(method: str) -> str:
    """The hashlib digest behind a ``signmethod`` name (trimmed, case-insensitive)."""
    try:
        return SIGN_METHOD_DIGESTS[method.strip().lower()]
    except KeyError:
        raise UnknownSignMethod(method) from None


def sign_content(params: Mapping[str, str], secret: str) -> str:
    """The string that gets hashed: sorted ``name + value`` pairs, then the secret."""
    return "".join(name + str(params[name]) for name in sorted(params)) + secret


def sign(
    params: Mapping[str, str],
    secret: str,
    method: str = "sha256",
    *,
    uppercase: bool | None = None,
) -> str:
    """The EnOS sign of `params` with `secret`, as a hex string.

    `uppercase=None` follows the SDK convention (SHA-1 uppercase, SHA-256/MD5 lowercase).
    Raises `UnknownSignMethod` for a method name EnOS does not know.
    """
    algo = digest_name(method)
    hex_digest = hashlib.new(algo, sign_content(params, secret).encode("utf-8")).hexdigest()
    if uppercase is None:
        uppercase = algo == "sha1"
    return hex_digest.upper() if uppercase else hex_digest


def login_sign_params(
    product_key: str, device_key: str, client_id: str, timestamp: str
) -> dict[str, str]:
    """Exactly the four signed parameters of CONNECT / login / batch login / topo add."""
    return {
        "clientId": client_id,
        "deviceKey": device_key,
        "productKey": product_key,
        "timestamp": timestamp,
    }


@dataclass(frozen=True, slots=True)
class MqttCredentials:
    """What goes into the MQTT CONNECT packet."""

    client_id: str
    username: str
    password: str


def mqtt_credentials(
    product_key: str,
    device_key: str,
    secret: str,
    *,
    timestamp: str,
    secure_mode: int = SECURE_MODE_DEVICE_SECRET,
    method: str = "sha256",
    client_id: str | None = None,
    uppercase: bool | None = None,
) -> MqttCredentials:
    """The MQTT clientId / username / password for a direct connection (§1.2-1.5).

    `secret` is the device secret (mode 2) or the product secret (modes 3 and 4).
    `client_id` is the free identifier before the first ``|``; it defaults to the device key
    (modes 2/3) or the product key (mode 4), as the SDKs do. Mode 4 requires the device key
    to be the literal ``%channel%``. `method` is sent verbatim as ``signmethod``.
    """
    if secure_mode not in (
        SECURE_MODE_DEVICE_SECRET,
        SECURE_MODE_PRODUCT_SECRET,
        SECURE_MODE_INTEGRATION,
    ):
        raise ValueError(f"EnOS secure mode must be 2, 3 or 4, not {secure_mode}")
    if secure_mode == SECURE_MODE_INTEGRATION and device_key != INTEGRATION_DEVICE_KEY:
        raise ValueError(
            f"secure mode 4 (integration channel) needs device key {INTEGRATION_DEVICE_KEY!r}"
        )
    if client_id is None:
        client_id = product_key if secure_mode == SECURE_MODE_INTEGRATION else device_key
    if "|" in client_id:
        raise ValueError(f"MQTT client identifier {client_id!r} must not contain '|'")
    password = sign(
        login_sign_params(product_key, device_key, client_id, timestamp),
        secret,
        method,
        uppercase=uppercase,
    )
    return MqttCredentials(
        client_id=f"{client_id}|securemode={secure_mode},signmethod={method},timestamp={timestamp}|",
        username=f"{device_key}&{product_key}",
        password=password,
    )
