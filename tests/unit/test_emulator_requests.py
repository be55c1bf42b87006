"""The emulator's decoder of upstream requests reads what the gateway's encoders write."""

from __future__ import annotations

import pytest

from gatewayd.enos import messages as m
from gatewayd.enos.messages import MalformedMessage, MeasurepointRecord
from gatewayd.sim.emulator.requests import decode_request


def test_decode_request_round_trip_and_errors() -> None:
    """Our own requests decode to their id/method/params; junk raises with a reason."""
    req = m.measurepoint_batch(
        "g", "w", id="77", records=[MeasurepointRecord(None, None, 1, {"a": 1})], resume=False
    )
    env = decode_request(req.payload)
    assert (env.id, env.method, env.version) == ("77", "thing.measurepoint.post.batch", "1.0")
    assert env.params == [{"measurepoints": {"a": 1}, "time": 1}]
    assert env.body["allowOfflineSubDevice"] is False
    env = decode_request(b'{"id":5,"method":7,"params":[]}')
    assert (env.id, env.method, env.version) == ("5", None, None)
    with pytest.raises(MalformedMessage, match="payload is empty"):
        decode_request(b"")
    with pytest.raises(MalformedMessage, match="no usable id"):
        decode_request(b'{"method":"x"}')


def test_the_product_codec_has_no_request_decoder() -> None:
    """decode_request and Envelope left gatewayd.enos.messages (the cloud's side)."""
    assert not hasattr(m, "decode_request")
    assert not hasattr(m, "Envelope")
