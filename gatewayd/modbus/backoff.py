"""The Modbus backoff settings (the policy itself is `gatewayd.backoff.Backoff`)."""

from __future__ import annotations

from gatewayd.backoff import Backoff

#: Retrying a device that stopped answering: 1 s up to 5 min.
DEVICE_BACKOFF = Backoff(initial=1.0, maximum=300.0)


def bus_backoff(reconnect_max: float) -> Backoff:
    """Reconnecting a bus: 0.5 s doubling up to the bus' `reconnect_max`."""
    return Backoff(initial=min(0.5, reconnect_max), maximum=reconnect_max)
