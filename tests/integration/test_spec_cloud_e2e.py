"""End to end against Debian's mosquitto and an EnOS cloud written from the spec alone.

The daemon runs as a subprocess (`python -m gatewayd run`), polls a Modbus TCP device
written by hand (tests/peers/modbus_device.py) and connects through a gate that checks its
CONNECT the way enos-protocol.md §1.5 says; a responder subscribed to `#` on mosquitto
answers per §3 (tests/peers/spec_cloud.py). Nothing on the cloud side imports `gatewayd`,
so a misreading of the spec shared by the daemon and the project's emulator shows up here.
(The test itself reads the daemon's spool file with gatewayd's code, to count what is left.)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from gatewayd.config.loader import load_config
from tests.integration.mosquitto_fixtures import Mosquitto, start_mosquitto
from tests.integration.test_delivery_faults import spooled_samples
from tests.peers import mqtt_wire
from tests.peers.enos_auth import parse_mqtt_client_id
from tests.peers.modbus_device import ModbusTcpDevice
from tests.peers.spec_cloud import Point, Records, SpecCloud
from tests.support import async_wait_until

GATEWAY = ("gwPK", "gwDK")
METERS = {("meterPK", "meter1"): "secret1", ("meterPK", "meter2"): "secret2"}
POST_BATCH = "thing.measurepoint.post.batch"

MODEL = {
    "name": "meter",
    "points": [
        {"measurepoint": "voltage", "table": "input", "address": 0, "type": "float32",
         "quality": True},
        {"measurepoint": "energy", "table": "input", "address": 2, "type": "uint32"},
        {"measurepoint": "temp", "table": "holding", "address": 10, "type": "int16",
         "scale": 0.5},
        {"measurepoint": "setpoint", "table": "holding", "address": 20, "type": "int16",
         "writable": True, "min": -1000, "max": 1000},
    ],
    "events": [{"event": "overTemp", "rule": "threshold", "point": "temp", "above": 30}],
    "services": [
        {"id": "nudge", "params": {"value": {"type": "int", "min": -1000, "max": 1000}},
         "writes": [{"point": "setpoint", "value": "$value"}], "outputs": ["setpoint"]},
    ],
}  # fmt: skip

#: What each meter's registers hold, and what EnOS must receive for them (exact in binary).
EXPECTED: dict[str, dict[str, Any]] = {
    "meter1": {"voltage": {"value": 231.5, "quality": 0}, "energy": 100_000, "temp": 21.5,
               "setpoint": 7},
    "meter2": {"voltage": {"value": 229.25, "quality": 0}, "energy": 70_000, "temp": -5.5,
               "setpoint": -3},
}  # fmt: skip


def load_registers(device: ModbusTcpDevice) -> None:
    """Raw register contents giving EXPECTED (temp is raw × 0.5)."""
    for unit, volts, energy, temp_raw, setpoint in (
        (1, 231.5, 100_000, 43, 7),
        (2, 229.25, 70_000, -11, -3),
    ):
        device.set_float32(unit, "inputs", 0, volts)
        device.set_uint32(unit, "inputs", 2, energy)
        device.set_int16(unit, "holding", 10, temp_raw)
        device.set_int16(unit, "holding", 20, setpoint)


@dataclass
class Site:
    """The hand-written device, the spec cloud and the daemon's config and log."""

    path: Path
    device: ModbusTcpDevice
    cloud: SpecCloud
    log: Path

    def points_of(self, dk: str) -> list[Point]:
        return [p for p in self.cloud.records.points if p.device_key == dk]


def write_config(
    tmp: Path, modbus_port: int, cloud_port: int, gateway_secret: str, uplink: dict[str, Any]
) -> Path:
    (tmp / "models").mkdir(exist_ok=True)
    (tmp / "models" / "meter.yaml").write_text(yaml.safe_dump(MODEL))
    doc = {
        "gateway": {"product_key": GATEWAY[0], "device_key": GATEWAY[1],
                    "device_secret": gateway_secret,
                    "broker": {"host": "127.0.0.1", "port": cloud_port}},
        "spool": {"path": "spool.db", "synchronous": "normal"},
        "uplink": {"reply_timeout": "5s", **uplink},
        "logging": {"format": "json"},
        "buses": [{"name": "plant", "type": "tcp", "host": "127.0.0.1", "port": modbus_port,
                   "timeout": "1s"}],
        "devices": [
            {"name": f"meter-{unit}", "bus": "plant", "unit_id": unit, "model": "meter",
             "product_key": "meterPK", "device_key": f"meter{unit}",
             "device_secret": f"secret{unit}", "poll_interval": "200ms"}
            for unit in (1, 2)
        ],
    }  # fmt: skip
    path = tmp / "gatewayd.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mosquitto]:
    """One Debian mosquitto for the module (anonymous, loopback only)."""
    server = start_mosquitto(tmp_path_factory.mktemp("mosquitto"))
    yield server
    if server.process.poll() is None:
        server.stop()


@contextlib.asynccontextmanager
async def make_site(
    tmp: Path,
    broker: Mosquitto,
    gateway_secret: str = "gwSecret",
    *,
    topology: set[tuple[str, str]] | None = None,
    uplink: dict[str, Any] | None = None,
) -> AsyncIterator[Site]:
    """Device and cloud running, config written; `topology` None = both meters bound to the
    gateway in the cloud; `uplink` adds settings to the config's uplink section."""
    async with (
        ModbusTcpDevice([1, 2]) as device,
        SpecCloud(broker.port, GATEWAY, "gwSecret", METERS, topology=topology) as cloud,
    ):
        load_registers(device)
        path = write_config(tmp, device.port, cloud.port, gateway_secret, uplink or {})
        yield Site(path, device, cloud, tmp / "gatewayd.log")


@pytest.fixture
async def site(tmp_path: Path, broker: Mosquitto) -> AsyncIterator[Site]:
    """Device, cloud and a config whose gateway secret is the one the cloud knows."""
    async with make_site(tmp_path, broker) as made:
        yield made


@contextlib.asynccontextmanager
async def daemon(site: Site) -> AsyncIterator[asyncio.subprocess.Process]:
    """`gatewayd run` as a subprocess; SIGTERM at the end must give exit status 0."""
    with site.log.open("ab") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gatewayd", "run", str(site.path), stderr=log, stdout=log
        )
    try:
        yield process
    except BaseException:
        print(site.log.read_text()[-6000:])  # the daemon's side of a failure
        raise
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(process.wait(), 30)
            except TimeoutError:
                process.kill()
                await process.wait()
    assert process.returncode == 0, site.log.read_text()[-4000:]


async def wait_for(site: Site, predicate: Callable[[], object], timeout: float, what: str) -> None:
    """`async_wait_until`, failing with what the cloud saw: refused CONNECTs, spec problems."""
    try:
        await async_wait_until(predicate, timeout, what)
    except AssertionError as exc:
        refused = [a.reason for a in site.cloud.gate.attempts if not a.accepted]
        problems = site.cloud.records.problems[:5]
        raise AssertionError(f"{exc}; refused CONNECTs: {refused}; problems: {problems}") from None


def every_point_seen(site: Site, times: int) -> bool:
    """Each point of each meter stored with at least `times` distinct timestamps."""
    for dk, points in EXPECTED.items():
        for name in points:
            if len({p.time for p in site.points_of(dk) if p.point == name}) < times:
                return False
    return True


def logged_in(site: Site) -> bool:
    return set(METERS) <= site.cloud.online


def assert_nothing_lost(site: Site) -> None:
    """After the daemon stopped: every value polled arrived, or is still in the spool for
    the next run (a row leaves only after a 200): per point, the times stored or spooled
    are as many as the reads of its register block.

    A value may be both stored and spooled only when the daemon did not take the 200: its
    reply died with a dropped connection, or came for the batch in flight at SIGTERM
    (which the daemon abandons even when its 200 is on the way).
    """
    records = site.cloud.records
    last_batch = max(r.seq for r in records.requests if r.method.endswith(".batch"))
    by_seq = {r.seq: r for r in records.requests}

    def unacknowledged(seq: int) -> bool:
        return seq == last_batch or not site.cloud.reply_reached_gateway(by_seq[seq])

    left = spooled_samples(load_config(site.path))
    for unit in (1, 2):
        device = f"meter{unit}"
        for name in EXPECTED[device]:
            block = (unit, 4, 0, 4) if name in ("voltage", "energy") else (unit, 3, 10, 11)
            cloud = {p.time: p.seq for p in site.points_of(device) if p.point == name}
            spool = {t for d, point, t in left if (d, point) == (f"meter-{unit}", name)}
            assert all(unacknowledged(cloud[t]) for t in cloud.keys() & spool), (unit, name)
            assert len(cloud.keys() | spool) == site.device.reads[block], (unit, name)


async def test_live_values_reach_the_spec_cloud_exactly_once(site: Site) -> None:
    """CONNECT signed per §1.5, logins before data, exact values, ms timestamps, no repeats."""
    started_ms = int(time.time() * 1000)
    async with daemon(site):
        await wait_for(site, lambda: every_point_seen(site, 5), 60, "5 samples of each point")
    stopped_ms = int(time.time() * 1000)
    records = site.cloud.records
    assert records.problems == []

    # The CONNECT: one attempt, accepted by the independent sign check, per §1.3/§1.8.
    (attempt,) = site.cloud.gate.attempts
    assert attempt.accepted, attempt.reason
    client_id = parse_mqtt_client_id(attempt.client_id)
    assert client_id.params["securemode"] == "2"
    assert attempt.username == "gwDK&gwPK"
    assert attempt.protocol_level == 4
    assert attempt.clean_session
    assert 60 <= attempt.keepalive_s <= 300

    # Each meter logged in (sign checked by the responder) before any data for it.
    for key in METERS:
        first_login = min(login.seq for login in records.logins if login.key == key)
        first_data = min(p.seq for p in records.points if (p.product_key, p.device_key) == key)
        assert first_login < first_data, key
    assert records.replied(POST_BATCH, 1212) == []

    # Exact values under the right keys, integer millisecond times within the run.
    assert {(p.product_key, p.device_key) for p in records.points} == set(METERS)
    for point in records.points:
        assert point.value == EXPECTED[point.device_key][point.point], point
        assert type(point.time) is int
        assert started_ms - 1000 <= point.time <= stopped_ms + 1000, point
    assert {type(p.value) for p in records.points if p.point == "energy"} == {int}
    # Live data goes out with post; resume (§3.5.3) only for what was read before the
    # meters were logged in, if the daemon counts that as offline data (§6.1).
    assert "post" in {p.channel for p in records.points}
    first_login_ms = min(
        r.arrived_ms for r in records.requests if r.method.startswith("combine.login")
    )
    # A sample counts as live once its meter's login *completed* (the daemon got the reply),
    # so one cycle started between the login request and its reply may go by resume too.
    assert all(p.time < first_login_ms + 1000 for p in records.points if p.channel == "resume")
    for key in METERS:  # and never is offline data read after live data of the same meter
        mine = [p for p in records.points if (p.product_key, p.device_key) == key]
        resumed = [p.time for p in mine if p.channel == "resume"]
        posted = [p.time for p in mine if p.channel == "post"]
        assert not resumed or max(resumed) <= min(posted), key
    assert records.duplicates() == {}

    assert_nothing_lost(site)

    # SIGTERM logs both meters out (§3.3), after their last data.
    logouts = [r for r in records.requests if r.method == "combine.logout"]
    assert sorted(r.doc["params"]["deviceKey"] for r in logouts) == ["meter1", "meter2"]
    assert all(r.code == 200 for r in logouts)
    assert max(p.seq for p in records.points) < min(r.seq for r in logouts)


ID_CASES = [
    pytest.param("9001", rb'"id"\s*:\s*"9001"', id="string-id"),
    pytest.param(
        9002,
        rb'"id"\s*:\s*9002\s*[,}]',
        id="integer-id",
    ),
]


@pytest.mark.parametrize(("command_id", "id_bytes"), ID_CASES)
async def test_measurepoint_set_reply_keeps_the_id_type_and_writes(
    site: Site, command_id: object, id_bytes: bytes
) -> None:
    """A set command is answered 200 with its id as sent (byte check) and hits the register."""
    async with daemon(site):
        await wait_for(
            site,
            lambda: logged_in(site) and every_point_seen(site, 1),
            60,
            "both meters logged in and posting",
        )
        raw = await site.cloud.send_command(
            ("meterPK", "meter2"),
            "measurepoint/set",
            "thing.service.measurepoint.set",
            {"setpoint": -17},
            command_id=command_id,
        )
        reply = json.loads(raw)
        assert reply["code"] == 200, reply
        assert site.device.int16(2, "holding", 20) == -17
        written = [(w.unit, w.address, w.values) for w in site.device.writes]
        assert written == [(2, 20, (0x10000 - 17,))]
        new_value = ("setpoint", -17)
        await wait_for(
            site,
            lambda: any((p.point, p.value) == new_value for p in site.points_of("meter2")),
            30,
            "the new setpoint in the cloud",
        )
        assert re.search(id_bytes, raw), raw
        assert type(reply["id"]) is type(command_id)
    assert site.cloud.records.problems == []


def refused_values(records: Records) -> set[tuple[str, str, str, int]]:
    """(pk, dk, point, time) of every value in a batch the cloud answered 1212."""
    return {
        (item["productKey"], item["deviceKey"], name, item["time"])
        for request in records.replied(POST_BATCH, 1212)
        for item in request.doc["params"]
        for name in item["measurepoints"]
    }


def stored(records: Records) -> set[tuple[str, str, str, int]]:
    """(pk, dk, point, time) of every value the cloud stored."""
    return {(p.product_key, p.device_key, p.point, p.time) for p in records.points}


async def test_1212_makes_the_daemon_log_in_again_and_resend(site: Site) -> None:
    """A batch refused with 1212: the meters log in again, then every refused value arrives."""
    records = site.cloud.records
    async with daemon(site):
        await wait_for(site, lambda: every_point_seen(site, 2), 60, "data flowing")
        site.cloud.fail(POST_BATCH, 1212)
        await wait_for(site, lambda: records.replied(POST_BATCH, 1212), 30, "a 1212 reply")
        refused = records.replied(POST_BATCH, 1212)[0]

        def stored_after() -> set[tuple[str, str, str, int]]:
            return {
                (p.product_key, p.device_key, p.point, p.time)
                for p in records.points
                if p.seq > refused.seq
            }

        # Batches sent before the re-login are refused too (the cloud holds the meters
        # offline after 1212): all of them must arrive in the end.
        await wait_for(
            site, lambda: refused_values(records) <= stored_after(), 60, "the refused values stored"
        )
    refused_keys = {(pk, dk) for pk, dk, _, _ in refused_values(records)}
    assert refused_keys  # the meters of the refused batch (one or both)
    for key in refused_keys:
        relogins = [lg.seq for lg in records.logins if lg.key == key and lg.seq > refused.seq]
        resent = [
            p.seq
            for p in records.points
            if (p.product_key, p.device_key) == key and p.seq > refused.seq
        ]
        assert relogins, f"{key} was not logged in again after 1212"
        assert min(relogins) < min(resent)
    assert records.duplicates() == {}
    assert records.problems == []


async def test_1212_refused_values_are_resent_as_resume(site: Site) -> None:
    """§6.3: values whose post got 1212 go out again with resume.batch, not post."""
    records = site.cloud.records
    async with daemon(site):
        await wait_for(site, lambda: every_point_seen(site, 2), 60, "data flowing")
        site.cloud.fail(POST_BATCH, 1212)
        await wait_for(site, lambda: records.replied(POST_BATCH, 1212), 30, "a 1212 reply")
        await wait_for(
            site,
            lambda: refused_values(records) <= stored(records),
            60,
            "the refused values stored",
        )
    again = refused_values(records)
    channels = {
        p.channel for p in records.points if (p.product_key, p.device_key, p.point, p.time) in again
    }
    assert channels == {"resume"}


async def test_service_invoke_writes_and_replies_its_outputs(site: Site) -> None:
    """`thing.service.nudge` (§3.7) writes its parameter and replies the output read back."""
    async with daemon(site):
        await wait_for(
            site,
            lambda: logged_in(site) and every_point_seen(site, 1),
            60,
            "both meters logged in and posting",
        )
        raw = await site.cloud.send_command(
            ("meterPK", "meter1"),
            "nudge",
            "thing.service.nudge",
            {"value": 123},
            command_id="9200",
        )
    reply = json.loads(raw)
    assert (reply["id"], reply["code"], reply["data"]) == ("9200", 200, {"setpoint": 123})
    assert [(w.unit, w.address, w.values) for w in site.device.writes] == [(1, 20, (123,))]
    assert site.device.int16(1, "holding", 20) == 123
    assert site.cloud.records.problems == []


async def test_duplicate_command_in_flight_is_written_once(site: Site) -> None:
    """The same set command delivered twice back to back: two replies, one device write."""
    async with daemon(site):
        await wait_for(
            site,
            lambda: logged_in(site) and every_point_seen(site, 1),
            60,
            "both meters logged in and posting",
        )
        for _ in range(2):
            topic, command_id = await site.cloud.push_command(
                ("meterPK", "meter1"),
                "measurepoint/set",
                "thing.service.measurepoint.set",
                {"setpoint": 55},
                command_id="9300",
            )
        await wait_for(
            site, lambda: len(site.cloud.replies_to(topic, command_id)) >= 2, 30, "both replies"
        )
        # Let a second execution, if any, reach the device before counting writes: the
        # next reads of the register show 55 in the cloud only after every write is done.
        seen = len(site.points_of("meter1"))
        await wait_for(
            site, lambda: len(site.points_of("meter1")) >= seen + 8, 30, "two more cycles"
        )
    assert [json.loads(r)["code"] for r in site.cloud.replies_to(topic, command_id)] == [200, 200]
    assert [(w.unit, w.address, w.values) for w in site.device.writes] == [(1, 20, (55,))]


async def test_unanswered_batch_is_sent_again_and_stored_once(site: Site) -> None:
    """A batch the cloud never answers (§6.4: no reply) is resent; each value stored once."""
    records = site.cloud.records
    async with daemon(site):
        await wait_for(site, lambda: every_point_seen(site, 2), 60, "data flowing")
        site.cloud.drop(POST_BATCH)
        await wait_for(
            site,
            lambda: any(r.method == POST_BATCH and r.code is None for r in records.requests),
            30,
            "a batch left unanswered",
        )
        (dropped,) = [r for r in records.requests if r.method == POST_BATCH and r.code is None]
        values = {
            (item["deviceKey"], name, item["time"])
            for item in dropped.doc["params"]
            for name in item["measurepoints"]
        }
        await wait_for(
            site,
            lambda: values <= {(p.device_key, p.point, p.time) for p in records.points},
            60,
            "the unanswered values stored",
        )
    assert records.duplicates() == {}
    assert records.problems == []


async def test_threshold_event_posted_once_on_the_spec_topic(site: Site) -> None:
    """temp above 30 fires `overTemp` once, on /sys/{pk}/{dk}/thing/event/overTemp/post."""
    async with daemon(site):
        await wait_for(site, lambda: every_point_seen(site, 1), 60, "data flowing")
        site.device.set_int16(1, "holding", 10, 70)  # 35.0 after scale 0.5
        await wait_for(site, lambda: site.cloud.records.events, 30, "the event")
        seen = len(site.points_of("meter1"))
        await wait_for(
            site,
            lambda: len(site.points_of("meter1")) >= seen + 12,
            30,
            "three more cycles above the threshold",
        )
    (event,) = site.cloud.records.events
    assert (event.product_key, event.device_key, event.event_id) == (
        "meterPK",
        "meter1",
        "overTemp",
    )
    temps = sorted((p.time, p.value) for p in site.points_of("meter1") if p.point == "temp")
    hot = next(i for i, (_, value) in enumerate(temps) if value == 35.0)
    assert temps[hot - 1][1] == 21.5
    # Stamped in the poll cycle that read the transition. (Not always with temp's own
    # time: when the cycle's two register blocks get different milliseconds, the event
    # carries the later block's time, seen 5-9 ms after temp's under load.)
    assert temps[hot][0] <= event.time < temps[hot + 1][0]
    assert site.cloud.records.problems == []


async def test_auto_topo_adds_the_meters_with_valid_signs_then_logs_them_in(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """Meters not bound to the gateway: `thing.topo.get` shows them missing, so they are
    added with `thing.topo.add` (signs checked, §3.4) before any login; then data."""
    async with (
        make_site(tmp_path, broker, topology=set(), uplink={"auto_topo": True}) as site,
        daemon(site),
    ):
        await wait_for(site, lambda: every_point_seen(site, 1), 60, "data after topo add")
    records = site.cloud.records
    assert records.problems == []
    assert site.cloud.topology == set(METERS)
    topo_adds = [r for r in records.requests if r.method == "thing.topo.add"]
    assert all(r.code == 200 for r in topo_adds)
    added = {(e["productKey"], e["deviceKey"]): r.seq for r in topo_adds for e in r.doc["params"]}
    assert set(added) == set(METERS)
    topo_get = [r.seq for r in records.requests if r.method == "thing.topo.get"]
    first_login = min(r.seq for r in records.requests if r.method.startswith("combine.login"))
    for key, seq in added.items():
        assert min(topo_get) < seq < first_login
        assert seq < min(login.seq for login in records.logins if login.key == key)
    assert not [r for r in records.requests if r.code == 740]  # no login was refused
    assert min(login.seq for login in records.logins) < min(p.seq for p in records.points)


@dataclass
class Outage:
    """When the cloud went down and when the daemon's CONNECT was accepted again."""

    cut_ms: int
    back_ms: int


async def run_outage(site: Site) -> Outage:
    """Data flowing, the cloud down for 20+ poll cycles, then back; returns once the values
    read meanwhile are stored and live data flows again (the daemon still running)."""
    records = site.cloud.records
    await wait_for(site, lambda: every_point_seen(site, 2), 60, "data flowing")
    cut_ms = int(time.time() * 1000)
    polled = site.device.requests
    site.cloud.gate.go_down()
    # 4 requests a cycle: 20 cycles (4 s) offline, twice the live window of these tests.
    await wait_for(site, lambda: site.device.requests >= polled + 80, 30, "20 cycles offline")
    site.cloud.gate.come_back()
    reconnected = lambda: sum(a.accepted for a in site.cloud.gate.attempts) >= 2  # noqa: E731
    await wait_for(site, reconnected, 60, "the reconnect")
    back_ms = site.cloud.gate.attempts[-1].at_ms
    # 20 cycles × 2 meters × 4 points, less a margin; then live values after the reconnect.
    offline = lambda: offline_values_in(records, cut_ms, back_ms) >= 120  # noqa: E731
    await wait_for(site, offline, 60, "the values read offline")
    live = lambda: max(p.time for p in records.points) > back_ms + 1500  # noqa: E731
    await wait_for(site, live, 30, "live data again")
    return Outage(cut_ms, back_ms)


async def test_outage_backlog_arrives_complete_and_once(tmp_path: Path, broker: Mosquitto) -> None:
    """Cloud down for 20+ poll cycles: the values read meanwhile come back (resume.batch is
    used, shapes per §3.5.3), nothing is sent again once its 200 arrived, nothing is lost."""
    async with make_site(tmp_path, broker, uplink={"live_window": "2s"}) as site:
        async with daemon(site):
            outage = await run_outage(site)
        records = site.cloud.records
        offline = [p for p in records.points if outage.cut_ms < p.time < outage.back_ms]
        assert "resume" in {p.channel for p in offline}
        # Resent after the cut: only batches whose reply died with the connection.
        assert site.cloud.repeated_after_reply() == {}
        assert records.problems == []
        assert_nothing_lost(site)


async def test_outage_backlog_goes_out_only_by_resume(tmp_path: Path, broker: Mosquitto) -> None:
    """Every value read between the cut and the reconnect arrives with resume, none with post."""
    async with make_site(tmp_path, broker, uplink={"live_window": "2s"}) as site:
        async with daemon(site):
            outage = await run_outage(site)
        offline = [
            (p.time, p.channel)
            for p in site.cloud.records.points
            if outage.cut_ms < p.time < outage.back_ms
        ]
        assert {channel for _, channel in offline} == {"resume"}, sorted(offline)


async def test_batch_in_flight_when_the_connection_drops_is_sent_again(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """A batch sent just before the cloud goes away gets no reply: after the reconnect its
    values are sent again (§6.4) instead of staying in the spool until a restart."""
    async with make_site(tmp_path, broker) as site, daemon(site):
        records = site.cloud.records
        await wait_for(site, lambda: every_point_seen(site, 2), 60, "data flowing")
        site.cloud.drop(POST_BATCH)
        unanswered = lambda: [r for r in records.requests if r.code is None]  # noqa: E731
        await wait_for(site, unanswered, 30, "a batch left unanswered")
        site.cloud.gate.go_down()
        polled = site.device.requests
        await wait_for(site, lambda: site.device.requests >= polled + 8, 30, "2 cycles offline")
        site.cloud.gate.come_back()
        reconnected = lambda: sum(a.accepted for a in site.cloud.gate.attempts) >= 2  # noqa: E731
        await wait_for(site, reconnected, 60, "the reconnect")
        (dropped,) = unanswered()
        values = {
            (item["productKey"], item["deviceKey"], name, item["time"])
            for item in dropped.doc["params"]
            for name in item["measurepoints"]
        }
        # Well past reply_timeout (5 s) and the reconnect: the batch has no excuse left.
        await wait_for(site, lambda: values <= stored(records), 20, "the unanswered batch")
    assert records.duplicates() == {}


def offline_values_in(records: Records, cut_ms: int, back_ms: int) -> int:
    """How many values read between the cut and the reconnect the cloud has stored."""
    return sum(cut_ms < p.time < back_ms for p in records.points)


async def test_wrong_gateway_secret_gets_connack_4_and_publishes_nothing(
    tmp_path: Path, broker: Mosquitto
) -> None:
    """The gate refuses a bad sign with CONNACK 4; the daemon keeps running, sends nothing."""
    async with make_site(tmp_path, broker, "notTheSecret") as site, daemon(site):
        await wait_for(site, lambda: site.cloud.gate.attempts, 30, "a CONNECT")
        # Polling goes on while the cloud refuses the gateway.
        await wait_for(site, lambda: site.device.requests >= 10, 30, "10 Modbus requests")
    (attempt, *_) = site.cloud.gate.attempts
    assert not attempt.accepted
    assert "not the sign" in attempt.reason
    assert site.cloud.records.requests == []
    # One warning for the refusal, naming the CONNACK code (§1.8: log it).
    lines = [json.loads(line) for line in site.log.read_text().splitlines() if line.startswith("{")]
    refusals = [line for line in lines if "refused" in line["event"].lower()]
    assert len(refusals) == 1, refusals
    assert refusals[0]["level"] == "warning"
    assert "4" in refusals[0]["event"]


async def test_gate_answers_a_hand_written_connect(site: Site) -> None:
    """Raw bytes: the spec's signed CONNECT gets mosquitto's CONNACK 0, a bad sign CONNACK 4."""
    timestamp = "1700000000000"
    good = "ac05757b2d47058ce1474547fc3ee8ee568045237fcebfa314b52573c1df1f32"  # §1.5 vector
    client_id = f"gwDK|securemode=2,signmethod=sha256,timestamp={timestamp}|"
    for password, expected in (
        (good.upper(), b"\x20\x02\x00\x00"),
        (good[::-1], b"\x20\x02\x00\x04"),
    ):
        reader, writer = await asyncio.open_connection("127.0.0.1", site.cloud.port)
        writer.write(mqtt_wire.build_connect(client_id, "gwDK&gwPK", password))
        await writer.drain()
        assert await asyncio.wait_for(reader.readexactly(4), 10) == expected
        writer.close()
    assert [a.accepted for a in site.cloud.gate.attempts] == [True, False]
