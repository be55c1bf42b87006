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

import pytest
import structlog
import yaml

from gatewayd.app import Daemon
from gatewayd.clock import SystemClock
from gatewayd.config.loader import load_config
from gatewayd.config.models import Config, DeviceModel
from gatewayd.enos.connect_history import ConnectHistoryFile, channel_connects_file
from gatewayd.enos.reconnect import ConnectThrottle, ReconnectPolicy
from gatewayd.modbus.poller import CycleResult
from gatewayd.samples import Event
from gatewayd.sim.device import DeviceSimulator
from gatewayd.sim.emulator import EmulatorConfig, EnosEmulator
from gatewayd.sim.emulator.records import EventRecord
from gatewayd.spool.rows import Kind
from gatewayd.spool.worker import Spool
from gatewayd.systemd import Notifier
from gatewayd.uplink.subdevices import SubDeviceRegistry
from gatewayd.uplink.uplink import Uplink
from tests.integration.modbus_fixtures import still_units
from tests.integration.mosquitto_fixtures import start_mosquitto
from tests.peers.spec_cloud import SpecCloud
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
    live_window: str = "30s",
    historical: str = "integration",
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
        "uplink": {
            "reply_timeout": reply_timeout,
            "live_window": live_window,
            "historical_events": historical,
        },
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


def cloud_of(config: Config, product_secret: str | None = None) -> EmulatorConfig:
    """The emulated cloud of `config`; `product_secret` replaces meterPK's."""
    cloud = EmulatorConfig.from_gateway_config(config)
    if product_secret is None:
        return cloud
    products = [
        p.model_copy(update={"product_secret": product_secret}) if p.product_key == "meterPK"
        else p
        for p in cloud.products
    ]  # fmt: skip
    return cloud.model_copy(update={"products": products})


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


@contextlib.asynccontextmanager
async def uplink_on(config: Config) -> AsyncIterator[tuple[Spool, Uplink]]:
    """The real spool of `config` and the uplink running on it (quick reconnects)."""
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
    try:
        yield spool, uplink
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        await spool.close()


@contextlib.asynccontextmanager
async def rig(
    tmp: Path,
    *,
    cloud_secret: str | None = None,
    without: str | None = None,
    **site: Any,
) -> AsyncIterator[Rig]:
    """The uplink running against an emulator that knows the gateway and its meters;
    `cloud_secret` gives the cloud another product secret than the gateway's, `without`
    is a device key the cloud does not know."""
    port = free_port()
    config = load_config(write_config(tmp, port, **site))
    cloud = cloud_of(config, cloud_secret)
    if without is not None:
        devices = [d for d in cloud.devices if d.device_key != without]
        cloud = cloud.model_copy(update={"devices": devices})
    emulator = EnosEmulator(cloud, port=port)
    emulator.throttle.enabled = False
    await emulator.start()
    try:
        async with uplink_on(config) as (spool, uplink):
            the_rig = Rig(config, spool, uplink, emulator)
            try:
                yield the_rig
            finally:
                emulator = the_rig.emulator
    finally:
        await emulator.stop()


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
    # The cloud does not know meter3: its events get 1257.
    async with rig(tmp_path, without="meter3") as r:
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


async def test_a_retryable_code_leaves_the_events_in_the_spool_until_accepted(
    tmp_path: Path,
) -> None:
    """EnOS answers 500 (internal error) twice without storing: the events stay in the
    spool and go again after a pause; each arrives exactly once, in order."""
    async with rig(tmp_path) as r:
        r.emulator.faults.answer_code(500, 2, method="integration.event.post")
        old = now_ms() - HOUR_MS
        await r.put(alarm(f"meter-{1 + i % 3}", old + i * 1000, i) for i in range(9))
        await spool_empty(r)
        assert r.uplink.historical is not None
        assert r.uplink.historical.stats.by_code == {500: 2, 200: 1}
    assert sequences(r.events("integration")) == {
        "meter1": [0, 3, 6],
        "meter2": [1, 4, 7],
        "meter3": [2, 5, 8],
    }


async def test_a_wrong_product_secret_is_one_clear_error_and_loses_nothing(
    tmp_path: Path,
) -> None:
    """The cloud refuses the channel's CONNECT (another product secret): one error line
    naming the product and what to check, however often it is retried; the backlog stays
    in the spool while live events keep going by thing.event.post; once the cloud takes
    the secret, every backlog event arrives, once and in order."""
    with structlog.testing.capture_logs() as logs:
        async with rig(tmp_path, cloud_secret="the-cloud-knows-another") as r:
            await logged_in(r, 3)
            old = now_ms() - HOUR_MS
            await r.put(alarm(f"meter-{1 + i % 3}", old + i * 1000, i) for i in range(9))
            await async_wait_until(
                lambda: r.emulator.stats.refused_connects >= 3, 30, "three refused CONNECTs"
            )
            live_at = now_ms()
            await r.put([alarm("meter-1", live_at, 50)])
            await async_wait_until(lambda: len(r.events("thing")) == 1, 30, "the live event")

            # The cloud's record is not the gateway's ack: wait for its reply to be heard.
            async def live_row_deleted() -> bool:
                return (await r.spool.counts()).events <= 9

            await async_wait_until(live_row_deleted, 30, "the live event's reply")
            counts = await r.spool.counts()
            assert counts.events == 9  # nothing lost, nothing dead-lettered
            assert counts.dead_letters == 0
            assert r.events("integration") == []
            # The operator fixes the product secret in the cloud.
            product = r.emulator.state.product("meterPK")
            assert product is not None
            product.secret = PRODUCT_SECRET
            await async_wait_until(lambda: len(r.events("integration")) == 9, 30, "the backlog")
            await spool_empty(r)
    assert sequences(r.events("integration")) == {
        "meter1": [0, 3, 6],
        "meter2": [1, 4, 7],
        "meter3": [2, 5, 8],
    }
    refused = [e for e in logs if e["event"].startswith("EnOS refused the integration channel")]
    assert len(refused) == 1
    assert refused[0]["log_level"] == "error"
    assert refused[0]["product"] == "meterPK"
    assert refused[0]["return_code"] in (4, 5)
    assert refused[0]["hint"] == "check integration.mqtt.products.meterPK's product secret"
    assert [e["event"] for e in logs if e["event"].startswith("integration channel connected")] == [
        "integration channel connected again"
    ]
    assert all("meterProductSecret" not in repr(e) for e in logs)  # never logged


@pytest.mark.parametrize("seed", [11, 23, 37])
async def test_per_device_order_across_an_outage(tmp_path: Path, seed: int) -> None:
    """Events of three meters in a random interleaving, committed in random bursts before,
    during and after a cloud outage: the ones of the outage arrive by integration.event.post
    only, the others by thing.event.post; each exactly once; per device and channel in
    the order they were committed."""
    rng = random.Random(seed)
    plan = [f"meter-{rng.randint(1, 3)}" for _ in range(60)]
    before, during, after = range(20), range(20, 45), range(45, 60)
    last_ts = 0

    def stamp() -> int:
        nonlocal last_ts
        last_ts = max(now_ms(), last_ts + 1)
        return last_ts

    async def commit(the_rig: Rig, seqs: range) -> None:
        index = seqs.start
        while index < seqs.stop:
            burst = range(index, min(seqs.stop, index + rng.randint(1, 6)))
            await the_rig.put(alarm(plan[i], stamp(), i) for i in burst)
            index = burst.stop
            if rng.random() < 0.5:
                await asyncio.sleep(0)  # let the streams interleave with the next burst

    async with rig(tmp_path, live_window="10s") as r:
        await logged_in(r, 3)
        await commit(r, before)
        await async_wait_until(lambda: len(r.events("thing")) == 20, 30, "live events")
        # The cloud's record is not the gateway's ack: a row whose reply the cut loses is
        # rightly sent again (at least once), so cut only when every reply has been heard.
        await spool_empty(r)
        # The outage: the gateway's connection drops and every CONNECT is refused (the
        # integration channel's too) until the cloud comes back.
        r.emulator.faults.refuse_connects(None)
        assert await r.emulator.disconnect("gwPK", "gwDK")
        await async_wait_until(
            lambda: all(not d.online for d in r.uplink.registry), 30, "the loss noticed"
        )
        await commit(r, during)
        r.emulator.faults.clear()
        await logged_in(r, 3)
        await commit(r, after)
        await async_wait_until(lambda: len(r.emulator.records.events) >= 60, 60, "all events")
        await spool_empty(r)
    arrived = r.emulator.records.events
    seen = [e.params["value"] for e in arrived]
    assert sorted(seen) == list(range(60))  # each exactly once
    by_channel = {
        channel: {e.params["value"] for e in arrived if e.channel == channel}
        for channel in ("thing", "integration")
    }
    assert by_channel["integration"] == set(during)
    assert by_channel["thing"] == set(before) | set(after)
    for channel in ("thing", "integration"):
        for device, seqs in sequences(e for e in arrived if e.channel == channel).items():
            assert seqs == sorted(seqs), (channel, device)


async def test_a_gateway_reconnect_leaves_the_channels_events_alone(tmp_path: Path) -> None:
    """The gateway session drops and comes back while the channel waits for a (slow) reply:
    the new session returns the rows the last one left in flight to the spool, but not the
    events the channel is sending, so they are acknowledged once and never sent twice."""
    async with rig(tmp_path, reply_timeout="10s") as r:
        await logged_in(r, 3)
        r.emulator.faults.delay_replies(3.0, 1, method="integration.event.post")
        old = now_ms() - HOUR_MS
        await r.put(alarm(f"meter-{1 + i % 3}", old + i * 1000, i) for i in range(6))
        await async_wait_until(
            lambda: r.emulator.stats.requests_by_method["integration.event.post"] >= 1,
            30,
            "the first historical message",
        )
        connects = r.uplink.status.connects
        assert await r.emulator.disconnect("gwPK", "gwDK")
        await async_wait_until(
            lambda: r.uplink.status.connects > connects and r.uplink.status.state == "connected",
            30,
            "the gateway session back",
        )
        await logged_in(r, 3)
        await spool_empty(r)
    assert r.emulator.stats.requests_by_method["integration.event.post"] == 1
    assert sorted(e.params["value"] for e in r.events("integration")) == list(range(6))


# --------------------------------------------------------------------------- spec peer


async def test_historical_events_on_mosquitto_and_a_cloud_written_from_the_spec(
    tmp_path: Path,
) -> None:
    """Debian's mosquitto behind a gate that checks the mode-4 CONNECT as §1.2-1.5 say, and
    a responder written from seed 001 / §3.8 (no gatewayd code on the cloud side): backlog
    events arrive by integration.event.post on /sys/meterPK/integration/event/post, in
    per-device order, once; an event id the model lacks is dead-lettered with 1204; a fresh
    event goes by thing.event.post; nothing strays from the spec."""
    (tmp_path / "mosquitto").mkdir()
    server = start_mosquitto(tmp_path / "mosquitto")
    try:
        meters = {("meterPK", f"meter{n}"): f"secret{n}" for n in (1, 2, 3)}
        cloud = SpecCloud(
            server.port, ("gwPK", "gwDK"), "gwSecret", meters,
            integration={"meterPK": PRODUCT_SECRET}, event_model={"alarmOn"},
        )  # fmt: skip
        async with cloud:
            config = load_config(write_config(tmp_path, cloud.port))
            async with uplink_on(config) as (spool, uplink):
                await async_wait_until(
                    lambda: sum(1 for d in uplink.registry if d.online) == 3, 30, "logins"
                )
                old = now_ms() - HOUR_MS
                events = [alarm(f"meter-{1 + i % 3}", old + i * 1000, i) for i in range(12)]
                events.insert(5, Event("meter-2", "tripped", old + 4500, {"measurepoint": "x"}))
                await spool.append([], events)
                live_at = now_ms()
                await spool.append([], [alarm("meter-3", live_at, 40)])
                uplink.notify_new_data()

                async def settled() -> bool:
                    counts = await spool.counts()
                    return counts.events == 0 and len(cloud.records.events) == 13

                await async_wait_until(settled, 30, "every event settled")
                letters = await spool.dead_letters()
    finally:
        server.stop()
    assert cloud.records.problems == []
    historical = [e for e in cloud.records.events if e.channel == "integration"]
    per_device: dict[str, list[int]] = {}
    for event in historical:
        per_device.setdefault(event.device_key, []).append(event.params["value"])
    assert per_device == {
        "meter1": [0, 3, 6, 9],
        "meter2": [1, 4, 7, 10],
        "meter3": [2, 5, 8, 11],
    }
    live = [e for e in cloud.records.events if e.channel != "integration"]
    assert [(e.channel, e.device_key, e.time) for e in live] == [("thing", "meter3", live_at)]
    assert [(d.device, d.name, d.code) for d in letters] == [("meter-2", "tripped", 1204)]
    topics = {r.topic for r in cloud.records.requests if r.method == "integration.event.post"}
    assert topics == {"/sys/meterPK/integration/event/post"}
    channel_connects = [a for a in cloud.gate.attempts if a.username == "%channel%&meterPK"]
    assert channel_connects
    assert all(a.accepted for a in channel_connects)
    assert channel_connects[0].client_id.startswith("meterPK|securemode=4,")


# --------------------------------------------------------------------------- the daemon


async def test_the_daemon_imports_alarms_of_an_outage_as_history(tmp_path: Path) -> None:
    """The whole daemon on a Modbus simulator: an alarm raised while the cloud refuses the
    gateway arrives by integration.event.post once the cloud is back, one raised while
    online by thing.event.post; per meter in the order raised; the channel's CONNECT
    window is kept in its own 0600 file next to the spool."""
    model = DeviceModel.model_validate(METER_MODEL)
    fired: list[Event] = []
    cycles: list[int] = []

    def observe(result: CycleResult) -> None:
        cycles.append(result.tick_ms)
        fired.extend(result.events)

    async with DeviceSimulator(still_units(model, 1, 2)) as sim:
        for unit in (1, 2):
            sim.set_value(unit, "alarm", False)
        path = write_config(tmp_path, free_port(), devices=2)
        document = yaml.safe_load(path.read_text())
        document["buses"][0]["port"] = sim.port
        for device in document["devices"]:
            device["poll_interval"] = "200ms"
        path.write_text(yaml.safe_dump(document, sort_keys=False))
        config = load_config(path)
        emulator = EnosEmulator(cloud_of(config), port=config.gateway.broker.port)
        emulator.throttle.enabled = False
        await emulator.start()
        daemon = Daemon(
            path,
            config,
            notifier=Notifier(environ={}),
            observer=observe,
            reconnect=quick_policy(),
            channel_reconnect=quick_policy,
        )
        task = asyncio.create_task(daemon.run())
        try:
            await asyncio.wait_for(daemon.ready.wait(), 20)
            assert daemon.uplink is not None
            uplink = daemon.uplink
            await async_wait_until(
                lambda: sum(1 for d in uplink.registry if d.online) == 2, 30, "logins"
            )

            async def raise_alarm(unit: int) -> None:
                """Alarm on until its event is committed, then off for three bus cycles
                (bit_set fires once per transition: the off reading must be polled)."""
                count = len(fired)
                sim.set_value(unit, "alarm", True)
                await async_wait_until(lambda: len(fired) > count, 20, "the alarm event")
                sim.set_value(unit, "alarm", False)
                seen = len(cycles)
                await async_wait_until(lambda: len(cycles) >= seen + 3, 20, "three cycles")

            await raise_alarm(1)
            await async_wait_until(lambda: len(emulator.records.events) == 1, 30, "live alarm")
            # A reply the cut loses is rightly sent again: cut once the gateway heard it.
            spool = daemon.spool
            assert spool is not None

            async def events_settled() -> bool:
                return (await spool.counts()).events == 0

            await async_wait_until(events_settled, 30, "the live alarm's reply")
            emulator.faults.refuse_connects(None)
            assert await emulator.disconnect("gwPK", "gwDK")
            await async_wait_until(
                lambda: all(not d.online for d in uplink.registry), 30, "the loss noticed"
            )
            for unit in (2, 1, 2, 1):
                await raise_alarm(unit)
            emulator.faults.clear()
            await async_wait_until(
                lambda: len(emulator.records.events) == 5, 60, "the outage's alarms"
            )
            assert daemon.spool is not None
            report = await daemon.report(daemon.spool)
            channel = report.historical_events
            assert channel is not None
            assert (channel["events"], channel["dead_lettered"]) == (4, 0)
            assert channel["connects"] >= 1
            assert report.file_events is None  # no integration.http here
        finally:
            daemon.request_stop()
            assert await asyncio.wait_for(task, 20) == 0
            await emulator.stop()
    assert [e.device for e in fired] == ["meter-1", "meter-2", "meter-1", "meter-2", "meter-1"]
    live, *history = emulator.records.events
    assert (live.channel, live.device_key, live.time) == ("thing", "meter1", fired[0].ts_ms)
    assert [(e.channel, e.device_key, e.time) for e in history] == [
        ("integration", f"meter{e.device[-1]}", e.ts_ms) for e in fired[1:]
    ]
    window = config.spool.path.parent / "connects-integration-meterPK.json"
    assert window.stat().st_mode & 0o777 == 0o600


async def test_the_channels_connects_keep_the_budget_across_a_restart(tmp_path: Path) -> None:
    """EnOS allows 4 CONNECTs in 2 minutes per connection identity: a channel whose CONNECT
    is refused again and again sends 4, then waits for the window; its window is persisted,
    so a restarted uplink sends none either (the gateway's own CONNECTs count apart)."""
    port = free_port()
    config = load_config(write_config(tmp_path, port))
    emulator = EnosEmulator(cloud_of(config, "the-cloud-knows-another"), port=port)
    emulator.throttle.enabled = False
    await emulator.start()
    window = tmp_path / channel_connects_file("meterPK")
    policies: list[ReconnectPolicy] = []

    def fast_but_throttled() -> ReconnectPolicy:
        # Retries at once after a refusal; only EnOS' throttle (the default) holds it back.
        policy = ReconnectPolicy(
            rng=random.Random(3), base_s=0.05, cap_s=0.1, spread_s=0.1, refused_floor_s=0.05
        )
        policies.append(policy)
        return policy

    def blocked(policy: ReconnectPolicy) -> bool:
        now = time.monotonic()
        return policy.next_attempt(now) - now > 60

    try:
        for run in (1, 2):
            async with await Spool.open(config.spool) as spool:
                uplink = Uplink(
                    config, spool, SubDeviceRegistry.from_config(config), clock=SystemClock(),
                    policy=quick_policy(), channel_policy=fast_but_throttled,
                    channel_history=lambda _pk: ConnectHistoryFile(window),
                )  # fmt: skip
                task = asyncio.create_task(uplink.run())
                try:
                    if run == 1:
                        old = now_ms() - HOUR_MS
                        await spool.append([], [alarm("meter-1", old, 0)])
                        uplink.notify_new_data()
                    await async_wait_until(
                        lambda n=run: len(policies) == n and blocked(policies[-1]),  # type: ignore[misc]
                        30,
                        "the throttle holding the channel back",
                    )
                finally:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task
    finally:
        await emulator.stop()
    assert emulator.stats.refused_connects == 4
    assert len(ConnectHistoryFile(window).load()) == 4


async def test_a_session_start_keeps_the_events_a_channel_take_queued_just_before(
    tmp_path: Path,
) -> None:
    """The race that sent a whole backlog twice under load: the channel's take is queued on
    the spool's worker, then a new gateway session's `release_all` runs before the channel
    has heard which events it took. The spool keeps them by how they were taken, so none
    goes back to the pool to be taken and sent a second time."""
    config = load_config(write_config(tmp_path, free_port()))
    old = now_ms() - HOUR_MS
    async with await Spool.open(config.spool) as spool:
        await spool.append([], [alarm("meter-1", old + i, i) for i in range(6)])
        channel_take = asyncio.ensure_future(spool.take_events(4, older_than_ms=now_ms()))
        session_start = asyncio.ensure_future(spool.release_all(keep_backlog_events=True))
        taken, released = await channel_take, await session_start
        assert [e.params["value"] for e in taken] == [0, 1, 2, 3]
        assert released == 0
        again = await spool.take_events(10, older_than_ms=now_ms())
        assert [e.params["value"] for e in again] == [4, 5]
        # Without a channel (historical_events: thing) a session start returns them all.
        assert await spool.release_all() == 6
