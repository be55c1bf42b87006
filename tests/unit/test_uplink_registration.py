"""Registration's request entries, reply reading and the crash-safe store."""

from __future__ import annotations

from pathlib import Path

from gatewayd.config.models import DeviceConfig
from gatewayd.enos.messages import Reply
from gatewayd.uplink.registration import (
    Registered,
    RegistrationStore,
    register_params,
    registered_of,
)

DEVICE = DeviceConfig.model_validate({
    "name": "m7", "bus": "b", "model": "m", "product_key": "pk", "device_key": "m07",
    "register": {"name": "Meter 7", "timezone": "+01:00", "description": "roof",
                 "attributes": {"site": "N"}},
})  # fmt: skip


def test_register_entry_is_the_spec_shape() -> None:
    """§3.4: productKey, deviceKey, deviceName.defaultValue, timezone, desc, attributes."""
    assert register_params(DEVICE) == {
        "productKey": "pk",
        "deviceKey": "m07",
        "deviceName": {"defaultValue": "Meter 7"},
        "timezone": "+01:00",
        "deviceDesc": "roof",
        "deviceAttributes": {"site": "N"},
    }


def test_reply_gives_the_secret_of_this_device_only() -> None:
    """The entry with this device key and a non-empty secret; anything else is None."""
    data = [
        {"assetId": "a1", "productKey": "pk", "deviceKey": "other", "deviceSecret": "x"},
        {"assetId": "a7", "productKey": "pk", "deviceKey": "m07", "deviceSecret": "s7"},
    ]
    assert registered_of(Reply("1", 200, "", data), DEVICE) == Registered("pk", "m07", "s7", "a7")
    assert registered_of(Reply("1", 200, "", [{"deviceKey": "m07"}]), DEVICE) is None
    assert registered_of(Reply("1", 200), DEVICE) is None


def test_store_keeps_the_secret_0600_and_clears_the_pending_mark(tmp_path: Path) -> None:
    """A pending mark survives until the secret is saved; a second mark says 'earlier'."""
    store = RegistrationStore(tmp_path / "registered")
    assert store.mark_pending("pk", "m07") is False
    assert store.mark_pending("pk", "m07") is True  # an earlier request went unanswered
    assert store.pending("pk", "m07")
    store.save(Registered("pk", "m07", "s7", "a7"))
    assert not store.pending("pk", "m07")
    assert store.load("pk", "m07") == Registered("pk", "m07", "s7", "a7")
    path = tmp_path / "registered" / "pk&m07.json"
    assert path.stat().st_mode & 0o777 == 0o600
    path.write_text("{broken")
    assert RegistrationStore(tmp_path / "registered").load("pk", "m07") is None
