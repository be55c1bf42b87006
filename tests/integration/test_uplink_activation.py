"""Mode-3 dynamic activation end to end: product secret once, then the persisted device secret.

The emulator registers the gateway un-activated (`from_gateway_config` with secure_mode 3)
and issues a fixed secret (`secret_factory`); spies on its CONNECT hook and responder record
the client ids and the gateway's replies without changing what the emulator does.
"""

from __future__ import annotations

import json
import stat
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from amqtt.session import Session

from gatewayd.app import SECRET_FILE, state_dir
from gatewayd.config.loader import load_config
from gatewayd.config.models import DeviceModel
from gatewayd.sim.device import DeviceSimulator
from gatewayd.sim.emulator import EmulatorConfig, EnosEmulator
from gatewayd.sim.emulator.responder import Connection, Outcome
from tests.integration.modbus_fixtures import still_units
from tests.integration.test_run_e2e import METER_MODEL, Site, running, write_site
from tests.support import async_wait_until, free_port

ISSUED = "issued-gw-secret-0001"
ACTIVATE_REPLY = "/ext/session/gwPK/gwDK/thing/activate/info_reply"


class Spy:
    """What the emulator saw: CONNECT client ids (with verdict) and every PUBLISH."""

    def __init__(self, emulator: EnosEmulator) -> None:
        self.connects: list[tuple[str, int]] = []
        self.published: list[tuple[str, bytes]] = []
        decide, handle = emulator.decide_connect, emulator.responder.handle

        def decide_connect(session: Session) -> int:
            code = decide(session)
            self.connects.append((session.client_id or "", code))
            return code

        def responder_handle(
            conn: Connection, topic: str, payload: bytes, *args: Any, **kwargs: Any
        ) -> Outcome:
            self.published.append((topic, payload))
            return handle(conn, topic, payload, *args, **kwargs)

        emulator.decide_connect = decide_connect  # type: ignore[method-assign]
        emulator.responder.handle = responder_handle  # type: ignore[method-assign]

    def modes(self) -> list[tuple[str, int]]:
        """(securemode, CONNACK code) of every CONNECT so far."""
        return [(cid.split("securemode=")[1].split(",")[0], code) for cid, code in self.connects]

    def replies_to(self, topic: str) -> list[dict[str, Any]]:
        """Decoded payloads the gateway published on `topic`, in order."""
        return [json.loads(p) for t, p in self.published if t == topic]


@pytest.fixture
async def mode3_site(tmp_path: Path) -> AsyncIterator[Site]:
    """Two meters and a cloud where the gateway product allows dynamic activation."""
    model = DeviceModel.model_validate(METER_MODEL)
    async with DeviceSimulator(still_units(model, 1, 2)) as sim:
        for unit in (1, 2):
            sim.set_value(unit, "voltage", 230.0 + unit)
        path = write_site(tmp_path, sim.port, free_port())
        data = yaml.safe_load(path.read_text())
        gateway = data["gateway"]
        del gateway["device_secret"]
        gateway.update(secure_mode=3, product_secret="gwProductSecret")
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        config = load_config(path)
        emulator = EnosEmulator(
            EmulatorConfig.from_gateway_config(config),
            port=config.gateway.broker.port,
            secret_factory=lambda key: ISSUED,
        )
        await emulator.start()
        try:
            yield Site(path, config, sim, emulator)
        finally:
            await emulator.stop()


def live_points_after(site: Site, received_at_ms: int) -> int:
    return sum(1 for r in site.emulator.values(channel="post") if r.received_at > received_at_ms)


async def test_mode3_activates_once_then_uses_the_persisted_secret(mode3_site: Site) -> None:
    """Mode 3 once: secret persisted (0600, exact) and acked; reconnect and restart use mode 2."""
    site = mode3_site
    spy = Spy(site.emulator)
    gateway = site.emulator.state.devices[("gwPK", "gwDK")]
    assert gateway.secret is None  # registered, never activated
    secret_file = state_dir(site.config) / SECRET_FILE
    async with running(site) as daemon:
        await async_wait_until(secret_file.exists, 15, "the persisted secret")
        assert secret_file.read_text() == ISSUED
        assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
        assert gateway.secret == ISSUED
        await async_wait_until(lambda: spy.replies_to(ACTIVATE_REPLY), 10, "activation reply")
        [reply] = spy.replies_to(ACTIVATE_REPLY)
        assert (reply["code"], reply["message"]) == (200, "device activate success")
        await async_wait_until(lambda: live_points_after(site, 0) >= 4, 15, "data, first CONNECT")

        # A network fault: the uplink reconnects, now with mode 2 and the issued secret.
        assert await site.emulator.disconnect("gwPK", "gwDK")
        assert daemon.uplink is not None
        status = daemon.uplink.status
        await async_wait_until(lambda: status.connects == 2 and status.state == "connected", 15)
        assert spy.modes() == [("3", 0), ("2", 0)]
        mark = site.emulator.wall_ms()
        await async_wait_until(lambda: live_points_after(site, mark) >= 4, 15, "data again")
    assert len(spy.replies_to(ACTIVATE_REPLY)) == 1  # activated exactly once

    # A restart reads the file: mode 2 again; a mode-3 CONNECT would be refused now.
    async with running(site):
        await async_wait_until(lambda: len(spy.connects) == 3, 15, "the CONNECT after restart")
        mark = site.emulator.wall_ms()
        await async_wait_until(lambda: live_points_after(site, mark) >= 4, 15, "data again")
    assert spy.modes() == [("3", 0), ("2", 0), ("2", 0)]
    assert site.emulator.stats.refused_connects == 0
    assert secret_file.read_text() == ISSUED
