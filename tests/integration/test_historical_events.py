"""Historical events over the mode-4 integration channel (`historical_events: integration`).

Real parts: the real spool (SQLite file, worker thread), the real uplink (gateway session
and one integration channel per product, both over aiomqtt), and the EnOS emulator as the
cloud on a loopback port (it checks the mode-4 sign and the events against the product's
model, and records which channel each event came by). Events are put in the spool as the
mapping stage puts them (`Spool.append`), so each test chooses their times: older than the
live window is backlog (integration.event.post), fresh while the sub-device is logged in
is live (thing.event.{id}.post).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog
import yaml

from gatewayd.clock import SystemClock
from gatewayd.config.loader import load_config
from gatewayd.config.models import Config
from gatewayd.enos.reconnect import ConnectThrottle, ReconnectPolicy
from gatewayd.samples import Event
from gatewayd.sim.emulator import EmulatorConfig, EnosEmulator
from gatewayd.sim.emulator.records import EventRecord
from gatewayd.spool.rows import Kind
from gatewayd.spool.worker import Spool
from gatewayd.uplink.subdevices import SubDeviceRegistry
from gatewayd.uplink.uplink import Uplink
from tests.support import async_wait_until, free_port

PRODUCT_SECRET = "meterProductSecret"
METER_MODEL = {
    "name": "meter",
    "points": [{"measurepoint": "alarm", "table": "coil", "address": 0, "type": "bool"}],
    "events": [{"event": "alarmOn", "rule": "bit_set", "point": "alarm"}],
}
#: An hour ago: far older than any live window, so backlog whatever the session does.
HOUR_MS = 3_600_000


def write_config(
    tmp: Path,
    mqtt_port: int,
    *,
    devices: int = 3,
    secret: str = PRODUCT_SECRET,
    reply_timeout: str = "3s",
) -> Path:
    """A gateway with `devices` meters of product meterPK and its integration channel."""
    (tmp / "models").mkdir(exist_ok=True)
    (tmp / "models" / "meter.yaml").write_text(yaml.safe_dump(METER_MODEL))
    (tmp / "meterPK.secret").write_text(secret + "\n")
    (tmp / "meterPK.secret").chmod(0o600)
    site = {
        "gateway": {
            "product_key": "gwPK",
            "device_key": "gwDK",
            "device_secret": "gwSecret",
            "broker": {"host": "127.0.0.1", "port": mqtt_port},
        },
        "spool": {"path": "spool.db", "synchronous": "normal"},
        "uplink": {"reply_timeout": reply_timeout, "historical_events": "integration"},
        "integration": {
            "mqtt": {
                "products": {"meterPK": {"product_secret_file": "meterPK.secret"}},
                "idle_close": "2s",
            }
        },
        "buses": [{"name": "plant", "type": "tcp", "host": "127.0.0.1", "port": free_port()}],
        "devices": [
            {"name": f"meter-{n}", "bus": "plant", "unit_id": n, "model": "meter",
             "product_key": "meterPK", "device_key": f"meter{n}", "device_secret": f"secret{n}"}
            for n in range(1, devices + 1)
        ],
    }  # fmt: skip
    path = tmp / "gatewayd.yaml"
    path.write_text(yaml.safe_dump(site, sort_keys=False))
    return path


def quick_policy() -> ReconnectPolicy:
    """Reconnects within a fraction of a second (a private cloud: no lock-out to fear)."""
    return ReconnectPolicy(
        rng=random.Random(7),
        base_s=0.2,
        cap_s=0.4,
        spread_s=0.4,
        refused_floor_s=0.5,
        quick_retries=1000,
        probe_base_s=0.1,
        probe_cap_s=0.3,
        throttle=ConnectThrottle(max_attempts=10_000),
    )


def cloud_of(config: Config, **options: Any) -> EmulatorConfig:
    """The emulated cloud of `config`, its connect throttle off."""
    cloud = EmulatorConfig.from_gateway_config(config)
    return cloud.model_copy(update={"options": cloud.options.model_copy(update=options)})


@dataclass
class Rig:
    """The spool, the uplink on it, and the cloud."""

    config: Config
    spool: Spool
    uplink: Uplink
    emulator: EnosEmulator

    async def put(self, events: Iterable[Event]) -> None:
        """Commit events as the mapping stage does, and wake the uplink."""
        await self.spool.append([], list(events))
        self.uplink.notify_new_data()

    def events(self, channel: str) -> list[EventRecord]:
        return [e for e in self.emulator.records.events if e.channel == channel]

    async def restart_cloud(self, emulator: EnosEmulator | None = None) -> None:
        """A new cloud on the same port (what the old one recorded stays in `archived`)."""
        await self.emulator.stop()
        self.emulator = emulator or EnosEmulator(
            self.emulator.config, port=self.config.gateway.broker.port
        )
        self.emulator.throttle.enabled = False
        await self.emulator.start()


@contextlib.asynccontextmanager
async def rig(
    tmp: Path, *, cloud: EmulatorConfig | None = None, **site: Any
) -> AsyncIterator[Rig]:
    """The uplink running against an emulator that knows the gateway and its meters."""
    port = free_port()
    config = load_config(write_config(tmp, port, **site))
    emulator = EnosEmulator(cloud or EmulatorConfig.from_gateway_config(config), port=port)
    emulator.throttle.enabled = False
    await emulator.start()
    spool = await Spool.open(config.spool)
    uplink = Uplink(
        config,
        spool,
        SubDeviceRegistry.from_config(config),
        clock=SystemClock(),
        policy=quick_policy(),
        channel_policy=quick_policy,
    )
    task = asyncio.create_task(uplink.run())
    the_rig = Rig(config, spool, uplink, emulator)
    try:
        yield the_rig
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await spool.close()
        await the_rig.emulator.stop()


def now_ms() -> int:
    return int(time.time() * 1000)


def alarm(device: str, ts_ms: int, seq: int) -> Event:
    """An alarmOn event as the event engine fires it; `value` carries a sequence number."""
    return Event(device, "alarmOn", ts_ms, {"measurepoint": "alarm", "value": seq})


def sequences(records: Iterable[EventRecord]) -> dict[str, list[int]]:
    """Per device key, the sequence numbers in arrival order."""
    seen: dict[str, list[int]] = {}
    for record in records:
        seen.setdefault(record.device_key, []).append(record.params["value"])
    return seen


async def logged_in(the_rig: Rig, count: int) -> None:
    await async_wait_until(
        lambda: sum(1 for d in the_rig.uplink.registry if d.online) == count, 20, "logins"
    )


async def spool_empty(the_rig: Rig) -> None:
    async def empty() -> bool:
        counts = await the_rig.spool.counts()
        return counts.events == 0

    await async_wait_until(empty, 30, "the spool's events all settled")


# --------------------------------------------------------------------------- tests


async def test_backlog_events_go_by_integration_live_ones_by_thing(tmp_path: Path) -> None:
    """Old events arrive once each by integration.event.post, in per-device order; a fresh
    event of a logged-in meter arrives by thing.event.post; the channel closes when idle."""
    async with rig(tmp_path) as r:
        await logged_in(r, 3)
        old = now_ms() - HOUR_MS
        backlog = [alarm(f"meter-{1 + i % 3}", old + i * 1000, i) for i in range(30)]
        await r.put(backlog)
        await async_wait_until(lambda: len(r.events("integration")) == 30, 30, "backlog")
        live_at = now_ms()
        await r.put([alarm("meter-2", live_at, 100)])
        await async_wait_until(lambda: len(r.events("thing")) == 1, 30, "the live event")
        await spool_empty(r)
        # The channel closes after idle_close (2 s) without work.
        await async_wait_until(
            lambda: not any(c.connected for c in r.uplink.historical.channels),  # type: ignore[union-attr]
            30,
            "the idle channel closed",
        )
    arrived = sequences(r.events("integration"))
    assert arrived == {
        "meter1": list(range(0, 30, 3)),
        "meter2": list(range(1, 30, 3)),
        "meter3": list(range(2, 30, 3)),
    }
    assert [(e.device_key, e.time, e.params["value"]) for e in r.events("thing")] == [
        ("meter2", live_at, 100)
    ]
    assert all(e.product_key == "meterPK" for e in r.emulator.records.events)


async def test_1204_and_1257_are_dead_lettered_with_the_reply_the_rest_delivered(
    tmp_path: Path,
) -> None:
    """An event id the cloud model lacks (1204) and a device the cloud does not know
    (1257): each such event alone is dead-lettered with EnOS' code and message, with one
    error line naming device, event and code; every other event arrives once, in order."""
    async with rig(tmp_path) as r:
        # The cloud forgets meter3: its events get 1257.
        cloud = EmulatorConfig.from_gateway_config(r.config)
        cloud = cloud.model_copy(
            update={"devices": [d for d in cloud.devices if d.device_key != "meter3"]}
        )
        await r.restart_cloud(EnosEmulator(cloud, port=r.config.gateway.broker.port))
        old = now_ms() - HOUR_MS
        events = [alarm(f"meter-{1 + i % 2}", old + i * 1000, i) for i in range(10)]
        events.insert(4, Event("meter-1", "tripped", old + 3500, {"measurepoint": "alarm"}))
        events.insert(7, alarm("meter-3", old + 5500, 99))
        with structlog.testing.capture_logs() as logs:
            await r.put(events)
            await async_wait_until(lambda: len(r.events("integration")) == 10, 30, "the rest")
            await spool_empty(r)
        letters = await r.spool.dead_letters(limit=100)
    assert sequences(r.events("integration")) == {
        "meter1": [0, 2, 4, 6, 8],
        "meter2": [1, 3, 5, 7, 9],
    }
    assert sorted((d.kind, d.device, d.name, d.code) for d in letters) == [
        (Kind.EVENTS, "meter-1", "tripped", 1204),
        (Kind.EVENTS, "meter-3", "alarmOn", 1257),
    ]
    assert all(d.message for d in letters)  # EnOS' words are kept with the row
    refused = [
        (e["device"], e["event_id"], e["code"])
        for e in logs
        if e["event"] == "EnOS refused a historical event; dead-lettered"
    ]
    assert sorted(refused) == [
        ("meter-1", "tripped", "1204 MODEL_VALIDATE_FAILED"),
        ("meter-3", "alarmOn", "1257 INTEGRATION_DEVICE_NOT_FOUND"),
    ]


async def test_a_lost_reply_is_retried_and_nothing_is_lost(tmp_path: Path) -> None:
    """The cloud takes a message but its reply never comes: after the reply timeout the
    events stay in the spool and go again; every event arrives, in order, and the only
    repeats are the events of the message whose reply was lost."""
    async with rig(tmp_path, reply_timeout="2s") as r:
        r.emulator.faults.drop_replies(1, method="integration.event.post")
        old = now_ms() - HOUR_MS
        await r.put(alarm(f"meter-{1 + i % 3}", old + i * 1000, i) for i in range(12))
        await spool_empty(r)
        assert r.uplink.historical is not None
        stats = r.uplink.historical.stats
    arrived = r.events("integration")
    assert stats.timeouts == 1
    first_message = {e.message_id for e in arrived[:1]}
    repeats = [e for e in arrived if e.message_id in first_message]
    # The first message held all 12 events (one take): all of them arrived twice, the
    # second time in the same per-device order.
    assert len(arrived) == 24
    assert len(repeats) == 12
    for device, seqs in sequences(arrived[12:]).items():
        assert seqs == sorted(seqs), device
    assert {e.params["value"] for e in arrived[12:]} == set(range(12))
