"""Where and as whom the gateway connects: the broker endpoint with the signed CONNECT.

Shared by the daemon's uplink and the one-shot commands (`gatewayd topo`, `check --cloud`),
so both sign the same way and a mode-3 gateway uses its persisted secret once activated.
"""

from __future__ import annotations

from pathlib import Path

from gatewayd.config.models import Config
from gatewayd.enos.session import Endpoint
from gatewayd.enos.sign import mqtt_credentials


def gateway_secret(config: Config, secret_path: Path | None) -> tuple[str, int]:
    """(secret, secure mode): mode 3 activates once, then the persisted secret rules."""
    gateway = config.gateway
    if gateway.secure_mode == 3:
        if secret_path is not None and secret_path.exists():
            return secret_path.read_text().strip(), 2
        assert gateway.product_secret is not None  # the loader insists on it
        return gateway.product_secret.get_secret_value(), 3
    assert gateway.device_secret is not None  # the loader insists on it
    return gateway.device_secret.get_secret_value(), 2


def gateway_endpoint(config: Config, secret_path: Path | None, timestamp: str) -> Endpoint:
    """The gateway's CONNECT to its broker, signed with `timestamp`."""
    gateway = config.gateway
    secret, mode = gateway_secret(config, secret_path)
    credentials = mqtt_credentials(
        gateway.product_key,
        gateway.device_key,
        secret,
        timestamp=timestamp,
        secure_mode=mode,
        method=gateway.sign_method,
    )
    return Endpoint(
        host=gateway.broker.host,
        port=gateway.broker.port,
        client_id=credentials.client_id,
        username=credentials.username,
        password=credentials.password,
        keepalive=int(gateway.broker.keepalive),
        connect_timeout=gateway.broker.connect_timeout,
    )
