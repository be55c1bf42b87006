"""EnOS CONNECT verification (PROTOCOL.md §1.2-1.8) and the connect throttle (§5).

`check_connect` is pure: given the CONNECT's clientId/username/password, the cloud state and
the current time it returns a `ConnectDecision` with the CONNACK return code EnOS-style:

- 4 (bad user name or password): malformed clientId or username, unknown securemode, unknown
  device or product, sign mismatch (hex compared case-insensitively, every signmethod alias).
- 5 (not authorized): disabled device, ssl-only product on the plain port, sub-device-only
  product connecting directly, a second dynamic activation (mode 3 on an activated device or
  a product without dynamic activation), connect throttle.

The amqtt plumbing that turns a decision into a CONNACK lives in `broker.py`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from gatewayd.enos.sign import (
    INTEGRATION_DEVICE_KEY,
    SECURE_MODE_DEVICE_SECRET,
    SECURE_MODE_INTEGRATION,
    SECURE_MODE_PRODUCT_SECRET,
    login_sign_params,
)
from gatewayd.sim.emulator.credentials import (
    MalformedClientId,
    parse_mqtt_client_id,
    verify_sign,
)
from gatewayd.sim.emulator.state import CloudState, Key

CONNACK_ACCEPTED = 0
CONNACK_BAD_CREDENTIALS = 4
CONNACK_NOT_AUTHORIZED = 5


@dataclass(frozen=True, slots=True)
class ConnectDecision:
    """The verdict on one CONNECT."""

    return_code: int
    reason: str
    device: Key | None = None  # the device the CONNECT identified (even when refused)
    secure_mode: int | None = None
    integration: bool = False  # mode 4: the product's message-integration channel

    @property
    def accepted(self) -> bool:
        return self.return_code == CONNACK_ACCEPTED


class ConnectThrottle:
    """More than `max_connects` CONNECTs of one device within `window` s block it `block` s.

    Times are whatever clock the caller uses (seconds); nothing here reads a clock.
    """

    def __init__(
        self, *, max_connects: int = 4, window: float = 120.0, block: float = 300.0
    ) -> None:
        self.enabled = True
        self.max_connects = max_connects
        self.window = window
        self.block = block
        self._attempts: dict[Key, deque[float]] = {}
        self._blocked_until: dict[Key, float] = {}

    def admit(self, key: Key, now: float) -> bool:
        """Count one CONNECT attempt of `key` at `now`; False if it must be refused."""
        if not self.enabled:
            return True
        if self._blocked_until.get(key, float("-inf")) > now:
            return False
        attempts = self._attempts.setdefault(key, deque())
        while attempts and attempts[0] <= now - self.window:
            attempts.popleft()
        if len(attempts) >= self.max_connects:
            self._blocked_until[key] = now + self.block
            attempts.clear()
            return False
        attempts.append(now)
        return True

    def blocked_until(self, key: Key) -> float | None:
        return self._blocked_until.get(key)

    def reset(self) -> None:
        self._attempts.clear()
        self._blocked_until.clear()


def _refuse(code: int, reason: str, device: Key | None = None) -> ConnectDecision:
    return ConnectDecision(code, reason, device)


def check_connect(
    state: CloudState,
    throttle: ConnectThrottle,
    *,
    client_id: str | None,
    username: str | None,
    password: str | None,
    over_tls: bool,
    now: float,
) -> ConnectDecision:
    """Verify one CONNECT exactly as EnOS does; see the module docstring for the codes."""
    try:
        ident, params = parse_mqtt_client_id(client_id or "")
    except MalformedClientId as exc:
        return _refuse(CONNACK_BAD_CREDENTIALS, str(exc))
    dk, sep, pk = (username or "").partition("&")
    if not sep or not dk or not pk:
        return _refuse(
            CONNACK_BAD_CREDENTIALS, f"username {username!r} is not 'deviceKey&productKey'"
        )
    mode_text = params.get("securemode", "")
    timestamp = params.get("timestamp")
    method = params.get("signmethod")
    if mode_text not in ("2", "3", "4") or timestamp is None or method is None:
        return _refuse(
            CONNACK_BAD_CREDENTIALS,
            "clientId needs securemode=2|3|4, signmethod and timestamp",
        )
    mode = int(mode_text)
    key = (pk, dk)
    product = state.product(pk)
    if product is None:
        return _refuse(CONNACK_BAD_CREDENTIALS, f"unknown product {pk}")

    if mode == SECURE_MODE_INTEGRATION:
        if dk != INTEGRATION_DEVICE_KEY or product.secret is None:
            return _refuse(CONNACK_BAD_CREDENTIALS, "bad integration-channel login")
        if ident != pk:
            # §1.2: the clientId the channel signs is its product key.
            return _refuse(CONNACK_BAD_CREDENTIALS, "integration clientId must be the product key")
        if not throttle.admit(key, now):
            return _refuse(CONNACK_NOT_AUTHORIZED, "connect throttle", key)
        signed = login_sign_params(pk, dk, ident, timestamp)
        if not verify_sign(signed, product.secret, method, password or ""):
            return _refuse(CONNACK_BAD_CREDENTIALS, "sign check failed", key)
        return ConnectDecision(CONNACK_ACCEPTED, "ok", key, mode, integration=True)

    device = state.device(key)
    if device is None:
        return _refuse(CONNACK_BAD_CREDENTIALS, f"unknown device {pk}/{dk}")
    if not throttle.admit(key, now):
        return _refuse(CONNACK_NOT_AUTHORIZED, "connect throttle: too many connects", key)
    if product.kind == "sub_device":
        return _refuse(CONNACK_NOT_AUTHORIZED, "sub-device product cannot connect directly", key)
    if product.ssl_only and not over_tls:
        return _refuse(CONNACK_NOT_AUTHORIZED, "product requires certificate login (ssl)", key)
    if mode == SECURE_MODE_PRODUCT_SECRET:
        if not product.dynamic_activation or product.secret is None:
            return _refuse(CONNACK_NOT_AUTHORIZED, "dynamic activation is not enabled", key)
        if device.activated:
            return _refuse(CONNACK_NOT_AUTHORIZED, "device is already activated: use mode 2", key)
        secret = product.secret
    else:
        if device.secret is None:
            return _refuse(CONNACK_BAD_CREDENTIALS, "device is not activated yet", key)
        secret = device.secret
    signed = login_sign_params(pk, dk, ident, timestamp)
    if not verify_sign(signed, secret, method, password or ""):
        return _refuse(CONNACK_BAD_CREDENTIALS, "sign check failed", key)
    if not device.enabled:
        return _refuse(CONNACK_NOT_AUTHORIZED, "device is disabled", key)
    assert mode in (SECURE_MODE_DEVICE_SECRET, SECURE_MODE_PRODUCT_SECRET)
    return ConnectDecision(CONNACK_ACCEPTED, "ok", key, mode)
