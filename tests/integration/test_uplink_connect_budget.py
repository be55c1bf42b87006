"""Which connects count against EnOS' CONNECT budget, against raw loopback sockets.

The peers share no code with the product: a closed port (TCP refused) and a listener
written from the MQTT spec that reads the CONNECT packet (first byte 0x10) and closes
without a CONNACK, as a TLS listener does when plain MQTT arrives. The session must report
the first as `BrokerUnreachable` (no CONNECT sent, nothing counted) and the second as a
sent CONNECT, counted and persisted before it left; the uplink logs one warning per kind
of failure, with the TLS hint for the second.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import structlog

from gatewayd.clock import SystemClock
from gatewayd.config.models import Config
from gatewayd.enos.connect_history import ConnectHistoryFile
from gatewayd.enos.reconnect import ConnectThrottle, ReconnectPolicy
from gatewayd.enos.session import (
    BrokerUnavailable,
    BrokerUnreachable,
    Endpoint,
    GatewaySession,
)
from gatewayd.uplink.subdevices import SubDeviceRegistry
from gatewayd.uplink.uplink import Uplink
from tests.support import async_wait_until, free_port


class SwallowingPeer:
    """Accepts TCP, reads the CONNECT packet, closes: counts the CONNECTs it saw and how
    many the client had already counted when each arrived."""

    def __init__(self, counted: list[int]) -> None:
        self.counted = counted
        self.connects = 0
        self.counted_on_arrival: list[int] = []
        self.server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            first = await reader.readexactly(1)
            if first == b"\x10":  # MQTT CONNECT, fixed header type 1
                self.connects += 1
                self.counted_on_arrival.append(len(self.counted))
        writer.close()

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[int]:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self.server.sockets[0].getsockname()[1]
        try:
            yield port
        finally:
            self.server.close()
            await self.server.wait_closed()


def endpoint(port: int) -> Endpoint:
    return Endpoint("127.0.0.1", port, "gwDK|securemode=2|", "gwDK&gwPK", "x", connect_timeout=5)


async def test_refused_tcp_is_unreachable_and_sends_no_connect() -> None:
    """Nothing listening: BrokerUnreachable, and the CONNECT hook never ran."""
    counted: list[int] = []
    session = GatewaySession(endpoint(free_port()), on_connect_sending=lambda: counted.append(1))
    with pytest.raises(BrokerUnreachable):
        async with session:
            pass
    assert counted == []


async def test_a_connect_without_connack_is_counted_before_it_leaves() -> None:
    """TCP up, CONNECT read, connection closed: a sent CONNECT (not 'unreachable'), and
    the hook had counted it before the peer received it."""
    counted: list[int] = []
    peer = SwallowingPeer(counted)
    async with peer.running() as port:
        session = GatewaySession(endpoint(port), on_connect_sending=lambda: counted.append(1))
        with pytest.raises(BrokerUnavailable) as raised:
            async with session:
                pass
    assert not isinstance(raised.value, BrokerUnreachable)
    assert counted == [1]
    assert peer.counted_on_arrival == [1]


def uplink_config(tmp_path: Path, port: int, tls: dict[str, Any] | None = None) -> Config:
    return Config.model_validate(
        {
            "gateway": {
                "product_key": "gwPK",
                "device_key": "gwDK",
                "device_secret": "gwSecret",
                "broker": {"host": "127.0.0.1", "port": port, "connect_timeout": "1s",
                           "tls": tls or {}},
            },
            "spool": {"path": str(tmp_path / "spool.db")},
        }
    )  # fmt: skip


def fast_policy() -> ReconnectPolicy:
    """Every backoff in tenths of a second, no throttle: many attempts in a short test."""
    return ReconnectPolicy(
        rng=random.Random(4),
        base_s=0.05,
        cap_s=0.1,
        spread_s=0.1,
        quick_retries=1000,
        probe_base_s=0.05,
        probe_cap_s=0.1,
        throttle=ConnectThrottle(max_attempts=1000),
    )


@contextlib.asynccontextmanager
async def running_uplink(uplink: Uplink) -> AsyncIterator[None]:
    task = asyncio.create_task(uplink.run())
    try:
        yield
    finally:
        task.cancel()
        await asyncio.wait({task}, timeout=20)


def warnings_of(captured: list[dict[str, Any]]) -> list[str]:
    return [e["event"] for e in captured if e["log_level"] == "warning"]


async def test_uplink_counts_no_connect_while_tcp_is_refused(tmp_path: Path) -> None:
    """Refused TCP, retried many times: no CONNECT counted or persisted, one warning."""
    policy = fast_policy()
    history = tmp_path / "connects.json"
    spool: Any = None  # never reached: no session comes up
    uplink = Uplink(
        uplink_config(tmp_path, free_port()),
        spool,
        SubDeviceRegistry([]),
        clock=SystemClock(),
        policy=policy,
        connect_history=ConnectHistoryFile(history),
    )
    with structlog.testing.capture_logs() as captured:
        async with running_uplink(uplink):
            await async_wait_until(lambda: policy.unreachable_count >= 5, 30, "5 refused connects")
    assert uplink.status.connects == 0
    assert policy.throttle.attempts_within(float("-inf"), float("inf")) == 0
    assert not history.exists()
    warnings = warnings_of(captured)
    assert len(warnings) == 1
    assert warnings[0].startswith("cannot reach the EnOS broker (no CONNECT sent)")


async def test_uplink_counts_persists_and_hints_tls_for_swallowed_connects(
    tmp_path: Path,
) -> None:
    """CONNECTs swallowed by the peer: each counted (= the peer's count), the last four
    persisted, and one warning that says TLS may be needed."""
    policy = fast_policy()
    history = tmp_path / "connects.json"
    counted: list[int] = []
    peer = SwallowingPeer(counted)
    spool: Any = None
    with structlog.testing.capture_logs() as captured:
        async with peer.running() as port:
            uplink = Uplink(
                uplink_config(tmp_path, port),
                spool,
                SubDeviceRegistry([]),
                clock=SystemClock(),
                policy=policy,
                connect_history=ConnectHistoryFile(history),
            )
            async with running_uplink(uplink):
                await async_wait_until(lambda: peer.connects >= 5, 30, "5 CONNECTs")
            seen = peer.connects
    assert uplink.status.connects == seen
    assert policy.throttle.attempts_within(float("-inf"), float("inf")) == seen
    assert len(json.loads(history.read_text())["connects"]) == 4
    assert history.stat().st_mode & 0o777 == 0o600
    warnings = warnings_of(captured)
    assert len(warnings) == 1
    assert warnings[0].startswith("EnOS did not accept CONNECT")
    assert f"if port {port} expects TLS, set gateway.broker.tls.enabled: true" in warnings[0]


async def test_uplink_warns_at_start_when_tls_is_not_verified(tmp_path: Path) -> None:
    """tls.verify: false: the uplink's start logs the warning once, before connecting."""
    policy = fast_policy()
    spool: Any = None
    config = uplink_config(tmp_path, free_port(), {"enabled": True, "verify": False})
    uplink = Uplink(config, spool, SubDeviceRegistry([]), clock=SystemClock(), policy=policy)
    with structlog.testing.capture_logs() as captured:
        async with running_uplink(uplink):
            await async_wait_until(lambda: policy.unreachable_count >= 3, 30, "3 connects")
    warnings = warnings_of(captured)
    verify_warning = "gateway.broker.tls.verify: warning: the broker's TLS certificate is not"
    assert warnings[0].startswith(verify_warning)
    assert sum(1 for w in warnings if w.startswith(verify_warning)) == 1


async def test_a_restarted_uplink_waits_for_the_persisted_window(tmp_path: Path) -> None:
    """Four CONNECTs 10 s before this start (a crash loop): the first CONNECT is planned
    for when the oldest leaves EnOS' window, and none is sent meanwhile."""
    history = tmp_path / "connects.json"
    now = time.time()
    sent = [now - 10.0, now - 8.0, now - 5.0, now - 2.0]
    history.write_text(json.dumps({"version": 1, "connects": sent}))
    counted: list[int] = []
    peer = SwallowingPeer(counted)
    spool: Any = None
    async with peer.running() as port:
        uplink = Uplink(
            uplink_config(tmp_path, port),
            spool,
            SubDeviceRegistry([]),
            clock=SystemClock(),
            policy=ReconnectPolicy(rng=random.Random(5)),
            connect_history=ConnectHistoryFile(history),
        )
        async with running_uplink(uplink):
            await async_wait_until(
                lambda: uplink.status.retry_at_ms is not None, 10, "the planned CONNECT"
            )
            planned_ms = uplink.status.retry_at_ms
            state = uplink.status.state
    assert planned_ms is not None
    assert planned_ms / 1000 == pytest.approx(sent[0] + 122.0, abs=1.0)
    assert state.startswith("reconnecting in")
    assert peer.connects == 0
    assert uplink.status.connects == 0
