"""The integration HTTP client against the emulated cloud over real loopback HTTP."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from pathlib import Path

import pytest

from gatewayd.integration.http import HttpSettings, IntegrationClient
from gatewayd.integration.message import AssetRef, EventRecord, local_value
from gatewayd.integration.replies import (
    Accepted,
    IntegrationNotFound,
    IntegrationRefused,
    Rejected,
    Retryable,
)
from gatewayd.integration.stream import FileChanged, describe_file
from gatewayd.sim.emulator.http_server import IntegrationHttpServer
from tests.integration.integration_http_support import (
    ACCESS_KEY,
    ASSET_ID,
    DK,
    ORG,
    PK,
    SECRET_KEY,
    integration_server,
)
from tests.support import free_port

__all__ = ["integration_server"]

ASSET = AssetRef(product_key=PK, device_key=DK)
TIME_MS = 1_764_928_800_000


def _settings(url: str, **overrides: object) -> HttpSettings:
    values: dict[str, object] = {
        "address": url,
        "apigw": url,
        "org_id": ORG,
        "access_key": ACCESS_KEY,
        "secret_key": SECRET_KEY,
        "connect_timeout": 10.0,
        "timeout": 30.0,
    }
    values.update(overrides)
    return HttpSettings(**values)  # type: ignore[arg-type]


def _trip(tmp_path: Path, data: bytes = b"t,v\n1,2\n") -> tuple[EventRecord, list]:
    """A tripRecord event with one CSV capture attached."""
    path = tmp_path / "trip.csv"
    path.write_bytes(data)
    attachment = describe_file(path, "f1", "tripRecord", ASSET)
    record = EventRecord(
        ASSET, TIME_MS, {"tripRecord": {"reason": 7, "capture": local_value("f1")}}
    )
    return record, [attachment]


async def test_event_with_two_files_arrives_intact(
    integration_server: IntegrationHttpServer, tmp_path: Path
) -> None:
    """Two files (binary with CRLFs and boundary-like bytes, and a CSV) parsed by `email` match."""
    binary = os.urandom(300_000) + b"\r\n--gatewayd-\r\n\r\r\n" + bytes(range(256))
    (tmp_path / "wave.bin").write_bytes(binary)
    (tmp_path / "log.csv").write_bytes(b"t,v\r\n1,2\r\n")
    files = [
        describe_file(tmp_path / "wave.bin", "f1", "tripRecord", ASSET, "wave-10h00.bin"),
        describe_file(tmp_path / "log.csv", "f2", "tripRecord", ASSET),
    ]
    record = EventRecord(
        ASSET,
        TIME_MS,
        {"tripRecord": {"reason": 7, "capture": local_value("f1"), "log": local_value("f2")}},
    )
    async with IntegrationClient(_settings(integration_server.url)) as client:
        outcome = await client.post_event([record], files, realtime=False)
    cloud = integration_server.cloud
    assert isinstance(outcome, Accepted), cloud.rejections
    assert len(cloud.events) == 1
    event = cloud.events[0]
    assert (event.asset.asset_id, event.time_ms, event.event_id, event.realtime) == (
        ASSET_ID,
        TIME_MS,
        "tripRecord",
        False,
    )
    assert event.params["reason"] == 7
    stored = {f.original_filename: f for f in cloud.files.values()}
    assert set(stored) == {"wave-10h00.bin", "log.csv"}
    assert stored["wave-10h00.bin"].data == binary
    assert stored["log.csv"].data == b"t,v\r\n1,2\r\n"
    assert event.params["capture"] == stored["wave-10h00.bin"].uri
    assert event.params["log"] == stored["log.csv"].uri
    assert files[0].md5 == hashlib.md5(binary).hexdigest()
    assert cloud.rejections == []


async def test_token_is_cached_across_calls(
    integration_server: IntegrationHttpServer, tmp_path: Path
) -> None:
    """Three uploads ask the token service once."""
    record, files = _trip(tmp_path)
    async with IntegrationClient(_settings(integration_server.url)) as client:
        outcomes = [await client.post_event([record], files) for _ in range(3)]
    assert all(isinstance(o, Accepted) for o in outcomes)
    assert integration_server.cloud.calls["token"] == 1
    assert integration_server.cloud.calls["postEvent"] == 3


async def test_concurrent_uploads_share_one_token_request(
    integration_server: IntegrationHttpServer, tmp_path: Path
) -> None:
    """Four uploads started together wait for one token request, then all are accepted."""
    record, files = _trip(tmp_path)
    async with IntegrationClient(_settings(integration_server.url)) as client:
        outcomes = await asyncio.gather(*(client.post_event([record], files) for _ in range(4)))
    assert [type(o) for o in outcomes] == [Accepted] * 4
    assert integration_server.cloud.calls["token"] == 1
    assert len(integration_server.cloud.files) == 4


async def test_token_is_refreshed_shortly_before_expiry(
    integration_server: IntegrationHttpServer, tmp_path: Path
) -> None:
    """Once the client's clock is 700 s from the token's 7200 s expiry, it asks again."""
    now = [1000.0]
    record, files = _trip(tmp_path)
    settings = _settings(integration_server.url)
    async with IntegrationClient(settings, clock=lambda: now[0]) as client:
        assert isinstance(await client.post_event([record], files), Accepted)
        now[0] += 7200 - 730  # still outside the 720 s margin
        assert isinstance(await client.post_event([record], files), Accepted)
        assert integration_server.cloud.calls["token"] == 1
        now[0] += 30
        assert isinstance(await client.post_event([record], files), Accepted)
    assert integration_server.cloud.calls["token"] == 2
    # The service had not expired it: asked again before expiry, it gave the same token.
    assert integration_server.cloud.tokens_issued == 1


async def test_expired_token_is_refreshed_once_and_the_upload_resent(
    integration_server: IntegrationHttpServer, tmp_path: Path
) -> None:
    """A 401 for an expired token: one new token, the files streamed again, accepted.

    The wall clock is frozen: both token requests fall in one millisecond, and the service
    refuses a repeated encryption (1001), so the client must not reuse a timestamp.
    """
    record, files = _trip(tmp_path)
    cloud = integration_server.cloud
    settings = _settings(integration_server.url)
    async with IntegrationClient(settings, wall_ms=lambda: TIME_MS) as client:
        await client.token()
        cloud.expire_tokens()
        outcome = await client.post_event([record], files)
    assert isinstance(outcome, Accepted)
    assert (cloud.calls["token"], cloud.calls["postEvent"], cloud.tokens_issued) == (2, 2, 2)
    assert [f.data for f in cloud.files.values()] == [b"t,v\n1,2\n"]


async def test_auth_refused_after_refresh_is_retryable_and_tried_only_twice(
    integration_server: IntegrationHttpServer, tmp_path: Path
) -> None:
    """Two 401s in a row: Retryable(auth) after exactly two tries, nothing stored."""
    record, files = _trip(tmp_path)
    cloud = integration_server.cloud
    cloud.faults.fail_next(2, status=401, endpoint="postEvent")
    async with IntegrationClient(_settings(integration_server.url)) as client:
        outcome = await client.post_event([record], files)
    assert isinstance(outcome, Retryable)
    assert outcome.auth is True
    assert "refused after a token refresh" in outcome.reason
    assert cloud.calls["postEvent"] == 2
    assert cloud.files == {}


async def test_model_mismatch_is_a_permanent_rejection(
    integration_server: IntegrationHttpServer, tmp_path: Path
) -> None:
    """A file for an event without file-typed params is rejected with 1204 and its msg."""
    path = tmp_path / "x.csv"
    path.write_bytes(b"x")
    files = [describe_file(path, "f1", "overVoltage", ASSET)]
    record = EventRecord(ASSET, TIME_MS, {"overVoltage": {"capture": local_value("f1")}})
    async with IntegrationClient(_settings(integration_server.url)) as client:
        outcome = await client.post_event([record], files)
    assert isinstance(outcome, Rejected)
    assert outcome.code == 1204
    assert "overVoltage" in outcome.msg
    assert integration_server.cloud.files == {}


async def test_server_error_and_slow_reply_are_retryable(
    integration_server: IntegrationHttpServer, tmp_path: Path
) -> None:
    """An injected 503 and a reply slower than the timeout are Retryable, not rejections."""
    record, files = _trip(tmp_path)
    cloud = integration_server.cloud
    cloud.faults.fail_next(1, status=503, endpoint="postEvent")
    async with IntegrationClient(_settings(integration_server.url)) as client:
        failed = await client.post_event([record], files)
    assert failed == Retryable("HTTP 503: injected fault")
    # Generous for a loaded machine: the token comes in well under 5 s, the upload's
    # reply 60 s late (the server thread sleeps; the test does not wait for it).
    cloud.faults.delay_next(1, 60.0, endpoint="postEvent")
    async with IntegrationClient(_settings(integration_server.url, timeout=5.0)) as client:
        slow = await client.post_event([record], files)
    assert isinstance(slow, Retryable)
    assert "timed out waiting for the reply" in slow.reason
    assert slow.auth is False


async def test_connection_refused_is_retryable(tmp_path: Path) -> None:
    """Nothing listening: a Retryable naming the failed connection."""
    record, files = _trip(tmp_path)
    async with IntegrationClient(_settings(f"http://127.0.0.1:{free_port()}")) as client:
        outcome = await client.post_event([record], files)
    assert isinstance(outcome, Retryable)
    assert "connection failed" in outcome.reason


async def test_wrong_secret_key_is_retryable_auth_with_the_service_status(
    integration_server: IntegrationHttpServer, tmp_path: Path
) -> None:
    """The token service's 1003 (bad encryption) surfaces; no upload is attempted."""
    record, files = _trip(tmp_path)
    settings = _settings(integration_server.url, secret_key="wrong")
    async with IntegrationClient(settings) as client:
        outcome = await client.post_event([record], files)
    assert isinstance(outcome, Retryable)
    assert outcome.auth is True
    assert "status 1003" in outcome.reason
    assert "wrong" not in outcome.reason
    assert "postEvent" not in integration_server.cloud.calls


async def test_file_changed_after_describe_aborts_the_upload(
    integration_server: IntegrationHttpServer, tmp_path: Path
) -> None:
    """Same length, other bytes: FileChanged, and the cloud stores nothing."""
    record, files = _trip(tmp_path, b"A" * 1000)
    (tmp_path / "trip.csv").write_bytes(b"B" * 1000)
    async with IntegrationClient(_settings(integration_server.url)) as client:
        with pytest.raises(FileChanged, match="md5 differs"):
            await client.post_event([record], files)
    assert integration_server.cloud.files == {}
    assert integration_server.cloud.events == []


async def test_download_then_delete_a_stored_file(
    integration_server: IntegrationHttpServer, tmp_path: Path
) -> None:
    """A stored file downloads byte for byte in chunks; after delete it is not found."""
    data = os.urandom(200_000)
    record, files = _trip(tmp_path, data)
    async with IntegrationClient(_settings(integration_server.url)) as client:
        assert isinstance(await client.post_event([record], files), Accepted)
        (uri,) = integration_server.cloud.files
        chunks: list[bytes] = []
        assert await client.download(uri, ASSET, chunks.append) == len(data)
        assert b"".join(chunks) == data
        assert len(chunks) > 1
        await client.delete(uri, ASSET)
        with pytest.raises(IntegrationNotFound, match="not found"):
            await client.download(uri, ASSET, chunks.append)
    assert integration_server.cloud.files == {}


def test_emulator_refuses_a_chunked_upload_and_a_bad_content_length(
    integration_server: IntegrationHttpServer,
) -> None:
    """The emulator checks what the client must do: a body length up front, part lengths right."""
    import http.client

    cloud = integration_server.cloud
    conn = http.client.HTTPConnection("127.0.0.1", integration_server.port, timeout=30)
    conn.request(
        "POST",
        "/apim-token-service/v2.0/token/get",
        body=json.dumps(
            {
                "appKey": ACCESS_KEY,
                "timestamp": 5,
                "encryption": hashlib.sha256(f"{ACCESS_KEY}5{SECRET_KEY}".encode()).hexdigest(),
            }
        ),
    )
    token = json.loads(conn.getresponse().read())["data"]["accessToken"]
    message = json.dumps(
        {
            "method": "integration.event.post",
            "id": "1",
            "version": "1.1",
            "params": [
                {
                    "productKey": PK,
                    "deviceKey": DK,
                    "time": 1,
                    "events": {"tripRecord": {"capture": "local://f1"}},
                }
            ],
            "files": {"f1": {"featureId": "tripRecord", "productKey": PK, "deviceKey": DK}},
        }
    )
    body = (
        '--B\r\nContent-Disposition: form-data; name="enos-message"\r\n\r\n'
        f"{message}\r\n"
        '--B\r\nContent-Disposition: form-data; name="enos-file"; filename="f1"\r\n'
        "Content-Length: 4\r\n\r\nabc\r\n--B--\r\n"
    ).encode()
    headers = {"apim-accesstoken": token, "Content-Type": "multipart/form-data; boundary=B"}
    conn.request(
        "POST",
        f"/connect-service/v2.1/integration?action=postEvent&orgId={ORG}",
        body=body,
        headers=headers,
    )
    reply = conn.getresponse()
    assert (reply.status, json.loads(reply.read())["msg"]) == (
        400,
        "file part 'f1': Content-Length 4 != 3 bytes",
    )
    conn.request(
        "POST",
        f"/connect-service/v2.1/integration?action=postEvent&orgId={ORG}",
        body=iter([body]),
        headers=headers,
        encode_chunked=True,
    )
    chunked = conn.getresponse()
    chunked.read()
    assert chunked.status == 411
    assert cloud.files == {}


async def test_a_stored_json_file_downloads_and_a_200_error_envelope_raises(
    integration_server: IntegrationHttpServer, tmp_path: Path
) -> None:
    """A .json file served as application/json is the file; a 200 {code, msg} is an error."""
    document = json.dumps({"samples": list(range(20_000))}).encode()  # > 64 KiB
    small = b'{"phase": "L1", "values": [1, 2]}'
    cloud = integration_server.cloud
    async with IntegrationClient(_settings(integration_server.url)) as client:
        for index, data in enumerate((document, small)):
            path = tmp_path / f"capture{index}.json"
            path.write_bytes(data)
            files = [describe_file(path, "f1", "tripRecord", ASSET)]
            record = EventRecord(ASSET, TIME_MS, {"tripRecord": {"capture": local_value("f1")}})
            assert isinstance(await client.post_event([record], files), Accepted)
        for uri, stored in cloud.files.items():
            chunks: list[bytes] = []
            assert await client.download(uri, ASSET, chunks.append) == len(stored.data)
            assert b"".join(chunks) == stored.data
        stranger = AssetRef(product_key=PK, device_key="nobody")
        with pytest.raises(IntegrationRefused) as refused:
            await client.download(next(iter(cloud.files)), stranger, chunks.append)
    assert refused.value.code == 1257
    assert sorted(len(f.data) for f in cloud.files.values()) == [len(small), len(document)]
