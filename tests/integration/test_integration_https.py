"""The integration client over real loopback HTTPS: verification on by default, ca_file, off."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from gatewayd.integration.http import HttpSettings, IntegrationClient
from gatewayd.integration.message import AssetRef, EventRecord, local_value
from gatewayd.integration.replies import Accepted, Retryable
from gatewayd.integration.stream import describe_file
from gatewayd.sim.emulator.http_cloud import IntegrationCloud
from gatewayd.sim.emulator.http_server import IntegrationHttpServer
from tests.integration.integration_http_support import (
    ACCESS_KEY,
    DK,
    ORG,
    PK,
    SECRET_KEY,
    integration_spec,
)
from tests.integration.test_uplink_tls import Pki, make_pki

ASSET = AssetRef(product_key=PK, device_key=DK)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Throwaway CA and a server certificate for 127.0.0.1, made with openssl."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def https_server(pki: Pki) -> Iterator[IntegrationHttpServer]:
    """The emulated integration channel behind TLS with the test CA's certificate."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.server_cert, pki.server_key)
    with IntegrationHttpServer(IntegrationCloud(integration_spec()), ssl_context=context) as server:
        yield server


async def _post(url: str, tmp_path: Path, **tls: object) -> object:
    path = tmp_path / "trip.csv"
    path.write_bytes(b"t,v\n1,2\n")
    files = [describe_file(path, "f1", "tripRecord", ASSET)]
    record = EventRecord(ASSET, 1, {"tripRecord": {"capture": local_value("f1")}})
    settings = HttpSettings(url, url, ORG, ACCESS_KEY, SECRET_KEY, **tls)  # type: ignore[arg-type]
    async with IntegrationClient(settings) as client:
        return await client.post_event([record], files)


async def test_https_with_the_ca_file_is_accepted(
    https_server: IntegrationHttpServer, pki: Pki, tmp_path: Path
) -> None:
    """ca_file names the private CA: the certificate verifies and the upload is accepted."""
    assert https_server.url.startswith("https://")
    assert isinstance(await _post(https_server.url, tmp_path, ca_file=pki.ca), Accepted)
    assert len(https_server.cloud.files) == 1


async def test_unknown_ca_is_refused_by_default(
    https_server: IntegrationHttpServer, pki: Pki, tmp_path: Path
) -> None:
    """Verification is on by default: the system store and another CA both refuse; nothing sent."""
    for ca in (None, pki.other_ca):
        outcome = await _post(https_server.url, tmp_path, ca_file=ca)
        assert isinstance(outcome, Retryable)
        assert "CERTIFICATE_VERIFY_FAILED" in outcome.reason
    assert "token" not in https_server.cloud.calls


async def test_verify_false_accepts_the_unknown_certificate(
    https_server: IntegrationHttpServer, tmp_path: Path
) -> None:
    """verify: false (warned about by check) does connect to the self-signed server."""
    assert isinstance(await _post(https_server.url, tmp_path, verify=False), Accepted)
