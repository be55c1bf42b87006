"""Broker settings worth a warning, for `gatewayd check` and for every start of the uplink."""

from __future__ import annotations

from gatewayd.config.models import BrokerConfig


def insecure_tls_warnings(broker: BrokerConfig) -> list[str]:
    """Warnings for a broker config that connects without checking who answers."""
    tls = broker.tls
    if tls.enabled and not tls.verify:
        return [
            f"TLS certificate verification is off (gateway.broker.tls.verify: false): the"
            f" connection to {broker.host}:{broker.port} is encrypted but not"
            f" authenticated; anyone on the path can impersonate EnOS"
        ]
    return []
