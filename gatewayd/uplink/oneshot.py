"""One short gateway session for a command (`gatewayd topo`, `check --cloud`).

It signs in as the gateway, so it spends EnOS' CONNECT budget like the daemon does (at
most 4 in 2 minutes, or the gateway is locked out for 5): the CONNECT is counted in the
same `connects.json` the daemon keeps, and refused here, before it leaves, when the
budget is spent. EnOS allows one connection per device: a running daemon loses its
session for a moment and reconnects.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path

from gatewayd.config.models import Config
from gatewayd.enos.connect_history import FILE_NAME as CONNECTS_FILE
from gatewayd.enos.connect_history import ConnectHistoryFile
from gatewayd.enos.reconnect import ConnectThrottle
from gatewayd.enos.session import GatewaySession, tls_context
from gatewayd.uplink.endpoint import gateway_endpoint

#: The daemon keeps the gateway's persisted mode-3 secret under this name.
SECRET_FILE = "gateway.secret"  # noqa: S105 (a file name, not a secret)


class BudgetSpent(Exception):
    """Another CONNECT now would break EnOS' throttle; `wait_s` until one may go out."""

    def __init__(self, wait_s: float) -> None:
        self.wait_s = wait_s
        super().__init__(
            f"EnOS' connect budget (4 CONNECTs in 2 minutes) is spent; try again in {wait_s:.0f} s"
        )


@contextlib.asynccontextmanager
async def gateway_session(config: Config, state_dir: Path) -> AsyncIterator[GatewaySession]:
    """A connected session as the gateway; `BudgetSpent`, or the session's connect errors."""
    history = ConnectHistoryFile(state_dir / CONNECTS_FILE)
    throttle = ConnectThrottle()
    now_mono, now_wall = time.monotonic(), time.time()
    throttle.restore(history.load(now_wall), now_mono, now_wall)
    earliest = throttle.earliest(now_mono)
    if earliest > now_mono:
        raise BudgetSpent(earliest - now_mono)

    def sending() -> None:
        mono = time.monotonic()
        throttle.record(mono)
        history.save(throttle.wall_times(mono, time.time()))

    endpoint = gateway_endpoint(config, state_dir / SECRET_FILE, str(int(now_wall * 1000)))
    session = GatewaySession(
        endpoint,
        tls=tls_context(config.gateway.broker.tls),
        reply_timeout=config.uplink.reply_timeout,
        on_connect_sending=sending,
    )
    async with session:
        yield session
