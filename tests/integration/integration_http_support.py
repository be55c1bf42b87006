"""The emulated EnOS integration channel on loopback, for the HTTP integration tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from gatewayd.sim.emulator.http_cloud import Asset, IntegrationCloud, IntegrationSpec
from gatewayd.sim.emulator.http_server import IntegrationHttpServer

ORG, ACCESS_KEY, SECRET_KEY = "o15", "ak-gateway", "sk-9f2c"
PK, DK, ASSET_ID = "subPK", "meter1", "assetMeter1"
#: tripRecord has two file-typed params; overVoltage none.
EVENTS = {"tripRecord": frozenset({"capture", "log"}), "overVoltage": frozenset()}


def integration_spec(token_lifetime: float = 7200.0) -> IntegrationSpec:
    """One OU, one service account, one asset."""
    return IntegrationSpec(
        org_id=ORG,
        accounts={ACCESS_KEY: SECRET_KEY},
        assets=(Asset(PK, DK, ASSET_ID, EVENTS),),
        token_lifetime=token_lifetime,
    )


@pytest.fixture
def integration_server() -> Iterator[IntegrationHttpServer]:
    """The emulated integration channel on a free loopback port."""
    with IntegrationHttpServer(IntegrationCloud(integration_spec())) as server:
        yield server
