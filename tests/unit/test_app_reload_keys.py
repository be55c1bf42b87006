"""Which reloaded changes need a restart (the daemon names them in one warning)."""

from __future__ import annotations

from pathlib import Path

from gatewayd.app import restart_needed
from gatewayd.config.models import Config
from gatewayd.config.models import HistoricalEvents as HistoricalEventsMode


def _config(**extra: object) -> Config:
    document: dict[str, object] = {
        "gateway": {"product_key": "gwPK", "device_key": "gwDK", "device_secret": "s",
                    "broker": {"host": "127.0.0.1", "port": 11883}},
    }  # fmt: skip
    document.update(extra)
    return Config.model_validate(document)


def test_devices_and_delivery_settings_apply_without_a_restart() -> None:
    """Changing the batch size or live window is applied by the reload itself."""
    old = _config()
    new = old.model_copy(update={"uplink": old.uplink.model_copy(update={"batch_size": 9})})
    assert restart_needed(old, new) == []


def test_identity_spool_integration_and_event_route_need_a_restart() -> None:
    """Each such key is named, in a stable order."""
    old = _config()
    new = old.model_copy(
        update={
            "gateway": old.gateway.model_copy(update={"device_key": "other"}),
            "spool": old.spool.model_copy(update={"path": Path("/tmp/other.db")}),
            "integration": old.integration.model_copy(update={"max_bytes": 2 << 20}),
            "uplink": old.uplink.model_copy(
                update={"historical_events": HistoricalEventsMode.INTEGRATION}
            ),
        }
    )
    assert restart_needed(old, new) == [
        "gateway",
        "spool",
        "integration",
        "uplink.historical_events",
    ]
