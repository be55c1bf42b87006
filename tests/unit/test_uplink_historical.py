"""The pure parts of the historical-event channel: message packing, order claims, CONNECT."""

from __future__ import annotations

import hashlib
import json

from hypothesis import given, settings
from hypothesis import strategies as st

from gatewayd.config.models import BrokerConfig
from gatewayd.enos import messages
from gatewayd.spool.rows import SpooledEvent
from gatewayd.uplink.historical import EventClaims, behind_live, channel_endpoint, pack_events

PK = "meterPK"

entries = st.lists(
    st.builds(
        messages.IntegrationEventRecord,
        st.sampled_from(["m1", "m2", "meter-with-a-long-key"]),
        st.dictionaries(
            st.sampled_from(["alarmOn", "trip"]),
            st.dictionaries(st.sampled_from(["value", "text"]), st.text(max_size=300)),
            min_size=1,
            max_size=2,
        ),
        st.integers(min_value=10**12, max_value=2 * 10**12),
    ),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(entries, st.integers(min_value=300, max_value=5000), st.integers(min_value=1, max_value=7))
def test_packed_messages_keep_order_and_limits(
    records: list[messages.IntegrationEventRecord], max_bytes: int, max_entries: int
) -> None:
    """Messages cover every entry once, in order; each has at most `max_entries` entries
    and, unless it holds a single oversized entry, at most `max_bytes` bytes."""
    sizes = pack_events(PK, records, max_bytes, max_entries)
    assert sum(sizes) == len(records)
    assert all(1 <= n <= max_entries for n in sizes)
    start = 0
    for n in sizes:
        part = records[start : start + n]
        payload = messages.integration_event_post(PK, id="0" * 16, records=part).payload
        assert len(payload) <= max_bytes or n == 1
        decoded = json.loads(payload)["params"]
        assert [p["deviceKey"] for p in decoded] == [r.device_key for r in part]
        start += n


def test_a_real_message_fills_up_to_the_limit() -> None:
    """1000 small events in 512 KiB messages of at most 500 entries: two full messages."""
    record = messages.IntegrationEventRecord("m1", {"alarmOn": {"value": 1}}, 1_700_000_000_000)
    assert pack_events(PK, [record] * 1000, 512 * 1024 - 1024, 500) == [500, 500]


def event(row_id: int, device: str) -> SpooledEvent:
    return SpooledEvent(row_id, device, "alarmOn", {}, 1_700_000_000_000 + row_id)


def test_events_behind_one_the_live_stream_holds_wait() -> None:
    """A device's events after the oldest one the live stream holds wait; events before it
    and other devices' events go."""
    claims = EventClaims()
    claims.hold([event(5, "a"), event(9, "a"), event(7, "b")])
    claims.settle([event(7, "b")])
    taken = [event(3, "a"), event(6, "a"), event(8, "b"), event(10, "a")]
    assert behind_live(taken, claims.oldest_by_device()) == [6, 10]
    claims.settle([event(5, "a"), event(9, "a")])
    assert behind_live(taken, claims.oldest_by_device()) == []


def test_the_channel_connects_in_mode_4_with_the_product_secret() -> None:
    """clientId `{pk}|securemode=4,...|`, username `%channel%&{pk}`, password the §1.5
    sign over clientId=pk, deviceKey=%channel%, productKey=pk, timestamp, then the
    product secret (computed here by hand, not with gatewayd's sign)."""
    broker = BrokerConfig.model_validate({"host": "mqtt.example", "keepalive": "120s"})
    endpoint = channel_endpoint(PK, "ps-1", broker, "1700000000000")
    content = (
        f"clientId{PK}deviceKey%channel%productKey{PK}timestamp1700000000000ps-1"
    ).encode()
    assert endpoint.client_id == f"{PK}|securemode=4,signmethod=sha256,timestamp=1700000000000|"
    assert endpoint.username == f"%channel%&{PK}"
    assert endpoint.password.lower() == hashlib.sha256(content).hexdigest()
    assert (endpoint.host, endpoint.port, endpoint.keepalive) == ("mqtt.example", 11883, 120)
