"""EnOS authentication checks from enos-protocol.md §1.2–1.5 and §3.1–3.2 (pure, no I/O).

The sign: sort the signed parameters by key (code points), concatenate key+value, append
the secret, hash with a plain digest (no HMAC despite the `hmac*` names). The server
compares the hex case-insensitively (§7.1) and does not check the timestamp (§7.3).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

#: `signmethod` names (matched trimmed and lower-cased, §1.5) and the digest each means.
DIGESTS = {
    "sha256": "sha256",
    "hmacsha256": "sha256",
    "sha1": "sha1",
    "hmacsha1": "sha1",
    "md5": "md5",
    "hmacmd5": "md5",
}


def sign(params: Mapping[str, str], secret: str, method: str) -> str:
    """The hex digest of the sorted key+value pairs followed by the secret (§1.5)."""
    digest = DIGESTS.get(method.strip().lower())
    if digest is None:
        raise ValueError(f"unknown signmethod {method!r}")
    content = "".join(key + params[key] for key in sorted(params)) + secret
    return hashlib.new(digest, content.encode("utf-8")).hexdigest()


def sign_matches(params: Mapping[str, str], secret: str, method: str, given: str) -> bool:
    """Whether `given` is the sign of `params`; hex case does not matter (§7.1)."""
    try:
        expected = sign(params, secret, method)
    except ValueError:
        return False
    return hmac.compare_digest(expected, given.strip().lower())


@dataclass(frozen=True)
class MqttClientId:
    """`{clientId}|securemode=2,signmethod=sha256,timestamp=...|` split into its parts."""

    client_id: str
    params: dict[str, str]


def parse_mqtt_client_id(text: str) -> MqttClientId:
    """Split the MQTT clientId (§1.3); spaces around pairs and extra keys are tolerated (§8)."""
    head, sep, rest = text.partition("|")
    if not sep or not rest.endswith("|"):
        raise ValueError(f"clientId {text!r} is not '{{id}}|k=v,...|'")
    if not head:
        raise ValueError("clientId has an empty identifier before '|'")
    params: dict[str, str] = {}
    for pair in rest[:-1].split(","):
        key, eq, value = pair.strip().partition("=")
        if not eq or not key:
            raise ValueError(f"clientId parameter {pair!r} is not k=v")
        params[key] = value
    missing = {"securemode", "signmethod", "timestamp"} - params.keys()
    if missing:
        raise ValueError(f"clientId lacks {', '.join(sorted(missing))}")
    return MqttClientId(head, params)


@dataclass(frozen=True)
class ConnectVerdict:
    """What the cloud decides about a CONNECT: accepted, or refused and why."""

    accepted: bool
    reason: str
    product_key: str = ""
    device_key: str = ""


def check_connect(
    client_id: str,
    username: str | None,
    password: bytes | None,
    secrets: Mapping[tuple[str, str], str],
    product_secrets: Mapping[str, str] | None = None,
) -> ConnectVerdict:
    """Check a CONNECT's credentials: secure mode 2 (device secret) for a gateway, or
    secure mode 4 (product secret) for a product's message-integration channel (§1.2–1.5).

    `secrets` maps (productKey, deviceKey) to the device secret of every directly
    connecting device the cloud knows; `product_secrets` productKey to the product secret
    of every product whose integration channel it opens.
    """
    try:
        parsed = parse_mqtt_client_id(client_id)
    except ValueError as exc:
        return ConnectVerdict(False, str(exc))
    mode = parsed.params["securemode"]
    if mode not in ("2", "4"):
        return ConnectVerdict(False, f"securemode {mode!r}: this cloud knows modes 2 and 4 only")
    if username is None or password is None:
        return ConnectVerdict(False, "username or password missing")
    device_key, amp, product_key = username.partition("&")
    if not amp or not device_key or not product_key:
        return ConnectVerdict(False, f"username {username!r} is not '{{dk}}&{{pk}}'")
    if mode == "4":
        # §1.2 row 4: device key is the literal %channel%, the clientId is the product key.
        if device_key != "%channel%" or parsed.client_id != product_key:
            return ConnectVerdict(False, "mode 4 needs username %channel%&{pk}, clientId {pk}")
        secret = (product_secrets or {}).get(product_key)
    else:
        secret = secrets.get((product_key, device_key))
    if secret is None:
        return ConnectVerdict(False, f"unknown device {product_key}/{device_key} (mode {mode})")
    signed = {
        "clientId": parsed.client_id,
        "deviceKey": device_key,
        "productKey": product_key,
        "timestamp": parsed.params["timestamp"],
    }
    try:
        given = password.decode("ascii")
    except UnicodeDecodeError:
        return ConnectVerdict(False, "password is not a hex string")
    if not sign_matches(signed, secret, parsed.params["signmethod"], given):
        return ConnectVerdict(False, "password is not the sign of the CONNECT parameters")
    return ConnectVerdict(True, "ok", product_key, device_key)


def login_sign_ok(
    entry: Mapping[str, object], shared: Mapping[str, object], secret: str
) -> str | None:
    """Why a sub-device's login/topo sign is wrong, or None when it is right (§3.1, §3.2).

    `entry` holds the device's own fields; `shared` the batch-wide clientId, timestamp and
    signMethod (empty for a single login, whose entry carries them). The sign covers
    exactly clientId, deviceKey, productKey and timestamp; `signMethod` or `signmethod`.
    """
    merged = {**shared, **entry}
    method = merged.get("signMethod", merged.get("signmethod"))
    fields = {k: merged.get(k) for k in ("clientId", "deviceKey", "productKey", "timestamp")}
    for key, value in {**fields, "signMethod": method, "sign": merged.get("sign")}.items():
        if not isinstance(value, str):
            return f"{key} is {type(value).__name__}, not a string"
    assert isinstance(method, str)
    given = merged["sign"]
    assert isinstance(given, str)
    strings = {k: v for k, v in fields.items() if isinstance(v, str)}
    if not sign_matches(strings, secret, method, given):
        return "sign check failed"
    return None
