"""Pure cores of the HTTP integration: token rule and cache, request message, multipart, replies."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gatewayd.integration.message import (
    AssetRef,
    BadEventRequest,
    EventRecord,
    FileAttachment,
    build_event_message,
    local_value,
)
from gatewayd.integration.multipart import MultipartLayout
from gatewayd.integration.replies import (
    Accepted,
    AuthFailure,
    IntegrationNotFound,
    IntegrationRefused,
    IntegrationUnavailable,
    Rejected,
    Retryable,
    classify_upload_reply,
    file_call_error,
    is_error_envelope,
)
from gatewayd.integration.token import (
    TokenCache,
    TokenGrant,
    TokenRefused,
    parse_token_reply,
    token_encryption,
    token_request_body,
)

PK_DK = AssetRef(product_key="pk", device_key="dk")


def _attachment(name: str = "f1", length: int = 5, md5: str = "5d41402abc4b2a76b9719d911017c592"):
    return FileAttachment(
        local_name=name,
        path=Path(f"/tmp/{name}"),
        feature_id="tripRecord",
        asset=PK_DK,
        length=length,
        md5=md5,
        original_filename="trip-1.csv",
    )


# -- token ------------------------------------------------------------------------------


def test_token_encryption_matches_a_hand_computed_vector() -> None:
    """sha256('myAccessKey' + '1579580182824' + 'mySecretKey'), computed with sha256sum."""
    assert (
        token_encryption("myAccessKey", 1579580182824, "mySecretKey")
        == "8a6d7b4465dd67992588ea7929084e2a09a53881731ce53fb62f934d2173d4ca"
    )


def test_token_request_body_carries_the_encryption_and_never_the_secret() -> None:
    """The body is appKey, encryption, timestamp; the secret key is not in it."""
    body = token_request_body("myAccessKey", 1579580182824, "mySecretKey")
    assert json.loads(body) == {
        "appKey": "myAccessKey",
        "encryption": "8a6d7b4465dd67992588ea7929084e2a09a53881731ce53fb62f934d2173d4ca",
        "timestamp": 1579580182824,
    }
    assert b"mySecretKey" not in body


def test_token_reply_parses_the_grant_and_refusals() -> None:
    """status 0 gives token and expire; any other status or shape is TokenRefused."""
    ok = b'{"status":0,"msg":"SUCCESS","data":{"accessToken":"T1","expire":7200}}'
    assert parse_token_reply(ok) == TokenGrant("T1", 7200.0)
    with pytest.raises(TokenRefused) as refused:
        parse_token_reply(b'{"status":1003,"msg":"encryption is invalid"}')
    assert (refused.value.status, refused.value.msg) == (1003, "encryption is invalid")
    for bad in (b"<html>", b"[]", b'{"status":0,"data":{"accessToken":"T"}}'):
        with pytest.raises(TokenRefused):
            parse_token_reply(bad)


def test_token_cache_refreshes_shortly_before_expiry_and_after_invalidate() -> None:
    """A 7200 s token is used until 720 s before expiry (10%), then not; invalidate forgets it."""
    cache = TokenCache()
    assert cache.current(0.0) is None
    cache.store(TokenGrant("T1", 7200.0), received_at=100.0)
    assert cache.current(100.0 + 6479.0) == "T1"
    assert cache.current(100.0 + 6480.0) is None
    cache.invalidate("other")  # a stale refusal does not drop a newer token
    assert cache.current(200.0) == "T1"
    cache.invalidate("T1")
    assert cache.current(200.0) is None


def test_token_cache_uses_a_short_token_for_half_its_life() -> None:
    """A token living 10 s (shorter than the 60 s margin) is used for 5 s."""
    cache = TokenCache()
    cache.store(TokenGrant("T", 10.0), received_at=0.0)
    assert cache.current(4.9) == "T"
    assert cache.current(5.0) is None


# -- message ----------------------------------------------------------------------------


def test_event_message_has_params_files_map_and_realtime_flag() -> None:
    """The message matches the documented shape, with md5, length, ext and original name."""
    record = EventRecord(
        PK_DK, 1579580182824, {"tripRecord": {"reason": 7, "capture": "local://f1"}}
    )
    body = build_event_message("123", [record], [_attachment()], realtime=False)
    assert json.loads(body) == {
        "method": "integration.event.post",
        "id": "123",
        "version": "1.1",
        "params": [
            {
                "productKey": "pk",
                "deviceKey": "dk",
                "time": 1579580182824,
                "events": {"tripRecord": {"reason": 7, "capture": "local://f1"}},
            }
        ],
        "files": {
            "f1": {
                "featureId": "tripRecord",
                "productKey": "pk",
                "deviceKey": "dk",
                "originalFilename": "trip-1.csv",
                "fileExt": ".csv",
                "md5": "5d41402abc4b2a76b9719d911017c592",
                "fileLength": 5,
            }
        },
        "isRealtimeIntegration": False,
    }


def test_event_message_refuses_dangling_and_unused_files() -> None:
    """A local:// value without its file, or a file nothing refers to, is the caller's bug."""
    referring = EventRecord(PK_DK, 1, {"e": {"capture": local_value("f2")}})
    with pytest.raises(BadEventRequest, match="not attached: \\['f2'\\]"):
        build_event_message("1", [referring], [], realtime=True)
    plain = EventRecord(PK_DK, 1, {"e": {"x": 1}})
    with pytest.raises(BadEventRequest, match="refers to: \\['f1'\\]"):
        build_event_message("1", [plain], [_attachment()], realtime=True)
    bad = _attachment(name='a"b')
    with pytest.raises(BadEventRequest, match="must match"):
        build_event_message(
            "1", [EventRecord(PK_DK, 1, {"e": {"c": 'local://a"b'}})], [bad], realtime=True
        )


def test_asset_needs_keys_or_asset_id() -> None:
    """An asset is productKey+deviceKey or assetId, not both, not half."""
    assert AssetRef(asset_id="a1").fields() == {"assetId": "a1"}
    for bad in (
        {},
        {"product_key": "pk"},
        {"product_key": "pk", "device_key": "d", "asset_id": "a"},
    ):
        with pytest.raises(BadEventRequest):
            AssetRef(**bad)


def test_message_over_512_kb_is_refused() -> None:
    """A request message over EnOS' 512 KB limit is refused before sending."""
    big = EventRecord(PK_DK, 1, {"e": {"text": "x" * (512 * 1024)}})
    with pytest.raises(BadEventRequest, match="over EnOS"):
        build_event_message("1", [big], [], realtime=True)


# -- multipart --------------------------------------------------------------------------


def test_multipart_layout_bytes_and_content_length() -> None:
    """Parts are laid out per RFC 7578 with a Content-Length per file; the total adds up."""
    layout = MultipartLayout("BND", b'{"m":1}', [_attachment()])
    body = b"".join(s if isinstance(s, bytes) else b"hello" for s in layout.segments())
    assert body == (
        b'--BND\r\nContent-Disposition: form-data; name="enos-message"\r\n'
        b"Content-Type: application/json; charset=utf-8\r\n\r\n"
        b'{"m":1}\r\n'
        b'--BND\r\nContent-Disposition: form-data; name="enos-file"; filename="f1"\r\n'
        b"Content-Type: application/octet-stream\r\nContent-Length: 5\r\n\r\n"
        b"hello\r\n--BND--\r\n"
    )
    assert layout.content_length() == len(body)
    assert layout.content_type == "multipart/form-data; boundary=BND"


# -- replies ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (200, b'{"code":200,"msg":"OK","requestId":"r1","data":{}}', Accepted("r1")),
        (200, b'{"code":0,"msg":"OK"}', Accepted(None)),
        (
            200,
            b'{"code":1204,"msg":"model validate failed","requestId":"r2"}',
            Rejected(1204, "model validate failed", "r2"),
        ),
        (400, b'{"code":400,"msg":"bad"}', Rejected(400, "bad")),
        (503, b"<html>busy</html>", Retryable("HTTP 503: <html>busy</html>")),
        (429, b'{"code":429,"msg":"slow down"}', Retryable("HTTP 429: slow down")),
        (200, b'{"code":500,"msg":"internal"}', Retryable("code 500: internal")),
        (200, b"", Retryable("HTTP 200: reply is not JSON: (empty body)")),
        (401, b'{"code":401,"msg":"expired"}', AuthFailure("HTTP 401, code 401: expired")),
        (200, b'{"code":403,"msg":"denied"}', AuthFailure("HTTP 200, code 403: denied")),
    ],
)
def test_upload_reply_outcomes(status: int, body: bytes, expected: object) -> None:
    """Success codes 200/0 accept; 5xx, 429 and garbage retry; auth codes refresh; else reject."""
    assert classify_upload_reply(status, body) == expected


def test_file_call_errors() -> None:
    """404 is not-found, 5xx unavailable, 401 an auth failure, other codes refusals, code 0 ok."""
    assert file_call_error(200, b'{"code":0,"msg":"OK"}') is None
    assert isinstance(file_call_error(404, b'{"code":404,"msg":"gone"}'), IntegrationNotFound)
    assert isinstance(file_call_error(502, b"bad gateway"), IntegrationUnavailable)
    assert isinstance(file_call_error(401, b"{}"), AuthFailure)
    refused = file_call_error(200, b'{"code":1257,"msg":"device not found"}')
    assert isinstance(refused, IntegrationRefused)
    assert (refused.code, refused.msg) == (1257, "device not found")


def test_error_envelope_needs_an_integer_code_and_a_msg() -> None:
    """{code, msg} is an envelope; a JSON file of another shape (or not JSON) is not."""
    assert is_error_envelope(b'{"code": 1257, "msg": "device not found", "data": null}')
    assert is_error_envelope(b'{"code": "404", "msg": "gone"}')
    assert not is_error_envelope(b'{"code": 7}')
    assert not is_error_envelope(b'{"samples": [1, 2]}')
    assert not is_error_envelope(b"[1, 2]")
    assert not is_error_envelope(b"\x89PNG")
