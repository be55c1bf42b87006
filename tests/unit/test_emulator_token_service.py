"""The emulated APIM token service: the sha256 rule, refusals, one token until expiry."""

from __future__ import annotations

import json

from gatewayd.sim.emulator.http_cloud import HttpRequest, IntegrationCloud
from tests.integration.integration_http_support import ACCESS_KEY, ORG, integration_spec

TOKEN_PATH = "/apim-token-service/v2.0/token/get"
# sha256("ak-gateway" + "1579580182824" + "sk-9f2c"), computed with sha256sum.
GOOD = "9720be2c426c4e087cb44fad20d2381af5be12f11291b40e0dd152fbaf196b40"
# ... and with timestamp 1579580182825.
GOOD_NEXT = "fdf4d7fe3ad8347ae2767fc93914196f866662505244dc7faed72235263aca6b"


def _ask(cloud: IntegrationCloud, app_key: str, stamp: int, encryption: str) -> dict[str, object]:
    body = json.dumps({"appKey": app_key, "timestamp": stamp, "encryption": encryption}).encode()
    response = cloud.handle(HttpRequest("POST", TOKEN_PATH, {}, body))
    assert isinstance(response.body, bytes)
    reply: dict[str, object] = json.loads(response.body)
    return reply


def _upload_status(cloud: IntegrationCloud, token: str) -> int:
    target = f"/connect-service/v2.1/integration?action=postEvent&orgId={ORG}"
    return cloud.handle(HttpRequest("POST", target, {"apim-accesstoken": token}, b"")).status


def test_token_service_checks_the_sha256_rule() -> None:
    """Unknown key 1002, wrong encryption 1003, a hand-computed one succeeds, its replay 1001."""
    cloud = IntegrationCloud(integration_spec())
    assert _ask(cloud, "nobody", 1579580182824, GOOD)["status"] == 1002
    assert _ask(cloud, ACCESS_KEY, 1579580182825, GOOD)["status"] == 1003
    granted = _ask(cloud, ACCESS_KEY, 1579580182824, GOOD)
    assert (granted["status"], granted["msg"]) == (0, "SUCCESS")
    assert _ask(cloud, ACCESS_KEY, 1579580182824, GOOD)["status"] == 1001


def test_same_token_until_expiry_then_a_new_one_and_401() -> None:
    """Asked again before expiry: the same token with the time left; after it: 401, new token."""
    now = [0.0]
    cloud = IntegrationCloud(integration_spec(token_lifetime=100.0), clock=lambda: now[0])
    first = _ask(cloud, ACCESS_KEY, 1579580182824, GOOD)["data"]
    assert isinstance(first, dict)
    assert first["expire"] == 100
    assert _upload_status(cloud, first["accessToken"]) == 400  # authorised; empty body refused
    now[0] = 60.0
    again = _ask(cloud, ACCESS_KEY, 1579580182825, GOOD_NEXT)["data"]
    assert again == {"accessToken": first["accessToken"], "expire": 40}
    now[0] = 100.0
    assert _upload_status(cloud, first["accessToken"]) == 401
    assert cloud.tokens_issued == 1
