"""Fuzz: ≥ 10 000 random and mutated downstream messages through `Uplink.answer`.

In-process against the real simulator (no MQTT): the uplink with the real command handler
and a running bus poller. Every call must return without raising; every message with a
command topic and a usable id must get exactly the reply its id and topic call for;
nothing outside the model's writable points is ever written. Valid commands are mutated
too, so a good share goes all the way to the device.
"""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gatewayd.clock import SystemClock
from gatewayd.commands import command_handler_factory
from gatewayd.config.loader import load_config
from gatewayd.config.models import Config, Table
from gatewayd.enos import topics
from gatewayd.enos.session import Inbound
from gatewayd.modbus.poller import BusPoller, CycleResult
from gatewayd.sim.device import DeviceSimulator, SimulatedUnit
from gatewayd.sim.device_motion import Motion
from gatewayd.spool.worker import Spool
from gatewayd.uplink.subdevices import SubDeviceRegistry
from gatewayd.uplink.uplink import Uplink
from tests.integration.commands_site import COMMAND_MODEL, GW, PK, model, write_site
from tests.support import free_port

MESSAGES = 10_000
BATCH = 25  # answered concurrently, as the uplink does for commands arriving together
SEED = 20261122


class RecordingUnit(SimulatedUnit):
    """A simulated unit that remembers every register/coil range written to it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.writes: list[tuple[Table, int, int]] = []

    def wire_write(self, table: Table, address: int, values: list[int]) -> None:
        """Record, then write."""
        self.writes.append((table, address, len(values)))
        super().wire_write(table, address, values)


@dataclass
class FuzzSite:
    """What the command handler reads: config, pollers, uplink (a `CommandSite`)."""

    config: Config
    pollers: dict[str, BusPoller]
    uplink: Uplink | None = None


@pytest.fixture
async def fuzz_site(tmp_path: Path) -> AsyncIterator[tuple[FuzzSite, list[RecordingUnit]]]:
    """The command path in-process: uplink + handler + bus poller + simulator."""
    motions = dict.fromkeys((p.measurepoint for p in model().points), Motion.FIXED)
    units = [RecordingUnit(u, model(), motions=motions) for u in (1, 2)]
    async with DeviceSimulator(units) as sim:
        config = load_config(write_site(tmp_path, sim.port, free_port()))
        results: asyncio.Queue[CycleResult] = asyncio.Queue()  # unbounded: nobody drains it
        (bus,) = config.buses
        poller = BusPoller(bus, config.devices, config.models, results, clock=SystemClock())
        site = FuzzSite(config, {bus.name: poller})
        spool = await Spool.open(config.spool)
        registry = SubDeviceRegistry.from_config(config)
        for device in registry:
            device.online = True  # as after a successful login
        site.uplink = Uplink(
            config, spool, registry, clock=SystemClock(), commands=command_handler_factory(site)
        )
        task = asyncio.create_task(poller.run())
        try:
            yield site, units
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            await spool.close()


# ---------------------------------------------------------------------------- generators

POINTS = {p["measurepoint"]: p for p in COMMAND_MODEL["points"]}
WRITABLE = [name for name, p in POINTS.items() if p.get("writable")]

#: A valid value per writable point, from the generator's random source.
VALID: dict[str, Callable[[random.Random], Any]] = {
    "relay": lambda r: r.random() < 0.5,
    "flag0": lambda r: r.random() < 0.5,
    "flag9": lambda r: r.choice([True, False, 0, 1]),
    "i16": lambda r: r.randint(-1000, 1000),
    "u16": lambda r: r.randint(0, 65535),
    "i32": lambda r: r.randint(-(2**31), 2**31 - 1),
    "u32": lambda r: r.randint(0, 2**32 - 1),
    "i64": lambda r: r.randint(-(2**63), 2**63 - 1),
    "u64": lambda r: r.randint(0, 2**64 - 1),
    "f32": lambda r: round(r.uniform(-1e6, 1e6), 3),
    "f64": lambda r: r.uniform(-1e12, 1e12),
    "name": lambda r: "".join(r.choice("ABC xyz-09") for _ in range(r.randint(0, 10))),
    "bcd4": lambda r: r.randint(0, 9999),
    "bcd8": lambda r: r.randint(0, 99_999_999),
    "mode": lambda r: r.choice(["off", "standby", "run", 0, 1, 2]),
    "setpoint": lambda r: round(r.uniform(-50, 50), 1),
    "f32_swapped": lambda r: r.uniform(-100, 100),
    "trip": lambda r: r.randint(0, 65535),
}

NASTY_STRINGS = ["", "\x00", "\ud800", "é", "💥", "a" * 5000, "$speed", "../../etc", "null"]


def random_json(r: random.Random, depth: int = 0) -> Any:
    """Any JSON value, biased to the edges: huge, non-finite, nested, empty, hostile."""
    roll = r.random()
    if depth > 3 or roll < 0.45:
        return r.choice(
            [
                None, True, False, 0, 1, -1, 2**15, 2**64, -(2**63) - 1, 10**300,
                r.randint(-(2**70), 2**70), r.uniform(-1e308, 1e308), 1e-320, math.nan,
                math.inf, -math.inf, 0.5, r.choice(NASTY_STRINGS), r.choice(WRITABLE),
                "run", "on",
            ]
        )  # fmt: skip
    if roll < 0.7:
        return [random_json(r, depth + 1) for _ in range(r.randint(0, 4))]
    keys = [*WRITABLE, *NASTY_STRINGS, "speed", "run", "status", "voltage", "productKey"]
    return {r.choice(keys): random_json(r, depth + 1) for _ in range(r.randint(0, 4))}


def valid_command(r: random.Random) -> tuple[str, dict[str, Any]]:
    """A well-formed command for m1 or m2 (topic, envelope)."""
    dk = r.choice(["m1", "m2"])
    msg_id = str(r.randint(1, 10**12))
    kind = r.random()
    if kind < 0.5:
        names = r.sample(WRITABLE, r.randint(1, 4))
        params: Any = {name: VALID[name](r) for name in names}
        return topics.measurepoint_set(PK, dk), _envelope(msg_id, "thing.service.measurepoint.set",
                                                          params)  # fmt: skip
    if kind < 0.7:
        params = r.sample(sorted(POINTS), r.randint(1, 5))
        return topics.measurepoint_get(PK, dk), _envelope(msg_id, "thing.service.measurepoint.get",
                                                          params)  # fmt: skip
    if kind < 0.9:
        params = {"speed": round(r.uniform(0, 100), 2), "run": r.random() < 0.5}
        return topics.service(PK, dk, "start"), _envelope(msg_id, "thing.service.start", params)
    return topics.service(PK, dk, "reset"), _envelope(msg_id, "thing.service.reset", {})


def _envelope(msg_id: Any, method: Any, params: Any) -> dict[str, Any]:
    return {"id": msg_id, "version": "1.0", "method": method, "params": params}


def other_topic(r: random.Random) -> str:
    """Topics that are commands for devices we do not have, or no command at all."""
    return r.choice(
        [
            topics.measurepoint_set(PK, "ghost"),
            topics.measurepoint_set("otherPK", "m1"),
            topics.measurepoint_set(*GW),
            topics.measurepoint_get(*GW),
            # MQTT topics arrive as valid UTF-8 (paho decodes them strictly): no surrogates.
            topics.service(PK, "m1", r.choice(["launch", "\x7f", "x" * 300])),
            f"/sys/{PK}/m1/thing/service/",
            f"/sys/{PK}/m1/thing/service/a/b",
            topics.combine_disable(*GW),
            topics.combine_enable(*GW),
            topics.combine_delete(*GW),
            topics.activate_info(*GW),
            topics.measurepoint_set(PK, "m1") + "_reply",
            "/sys/" + PK,
            "",
            "a/b/c",
            "/sys/\x00/\u00e9/thing/service/measurepoint/set",
        ]
    )


def mutate_envelope(r: random.Random, envelope: dict[str, Any]) -> dict[str, Any]:
    """One structural mutation of a command envelope."""
    mutated = dict(envelope)
    roll = r.randrange(7)
    if roll == 0:
        mutated["id"] = random_json(r)
    elif roll == 1:
        mutated.pop(r.choice(["id", "method", "params", "version"]))
    elif roll == 2:
        mutated["method"] = r.choice([random_json(r), "thing.service.other", "combine.disable"])
    elif roll == 3:
        mutated["params"] = random_json(r)
    elif roll == 4 and isinstance(mutated.get("params"), dict) and mutated["params"]:
        params = dict(mutated["params"])
        params[r.choice(list(params))] = random_json(r)
        mutated["params"] = params
    elif roll == 5 and isinstance(mutated.get("params"), dict):
        mutated["params"] = {**mutated["params"], r.choice(NASTY_STRINGS): random_json(r)}
    elif isinstance(mutated.get("params"), list):
        mutated["params"] = [*mutated["params"], random_json(r)]
    return mutated


def to_bytes(envelope: dict[str, Any]) -> bytes:
    """JSON the way a sloppy cloud might send it (NaN allowed, surrogates escaped)."""
    return json.dumps(envelope, allow_nan=True).encode()


def mutate_bytes(r: random.Random, data: bytes) -> bytes:
    """One byte-level mutation: truncate, flip, insert or cut."""
    if not data:
        return bytes(r.randrange(256) for _ in range(r.randint(1, 20)))
    roll = r.randrange(4)
    at = r.randrange(len(data))
    if roll == 0:
        return data[:at]
    if roll == 1:
        return data[:at] + bytes([r.randrange(256)]) + data[at + 1 :]
    if roll == 2:
        return data[:at] + bytes(r.randrange(256) for _ in range(r.randint(1, 8))) + data[at:]
    return data[:at] + data[at + r.randint(1, 16) :]


def message(r: random.Random) -> tuple[str, bytes]:
    """One fuzz message: (topic, payload)."""
    topic, envelope = valid_command(r)
    roll = r.random()
    if roll < 0.12:
        return topic, to_bytes(envelope)  # valid: goes to the device
    if roll < 0.45:
        return topic, to_bytes(mutate_envelope(r, envelope))
    if roll < 0.6:
        return topic, mutate_bytes(r, to_bytes(envelope))
    if roll < 0.7:
        return other_topic(r), to_bytes(mutate_envelope(r, envelope))
    if roll < 0.8:
        return topic, json.dumps(random_json(r), allow_nan=True).encode()
    if roll < 0.85:
        return topic, b"[" * r.choice([10, 5000, 200_000])
    return r.choice([topic, other_topic(r)]), bytes(
        r.randrange(256) for _ in range(r.randint(0, 64))
    )


# ---------------------------------------------------------------------------- oracle


def expected_reply_id(topic: str, payload: bytes) -> str | int | None:
    """The id a reply must carry (its JSON type kept, §2.2), or None when none is due."""
    parsed = topics.parse_topic(topic)
    if parsed.is_reply or parsed.kind is topics.TopicKind.UNKNOWN:
        return None
    try:
        obj = json.loads(payload)
    except (ValueError, RecursionError):
        return None
    if not isinstance(obj, dict):
        return None
    value = obj.get("id")
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def allowed_ranges() -> set[tuple[Table, int, int]]:
    """(table, address, count) of every writable point: the only writes permitted."""
    return {
        (Table(p["table"]), p["address"], model_point.register_count)
        for p, model_point in zip(COMMAND_MODEL["points"], model().points, strict=True)
        if p.get("writable")
    }


async def test_fuzzed_commands_never_crash_and_are_answered(
    fuzz_site: tuple[FuzzSite, list[RecordingUnit]],
) -> None:
    """10 000 hostile messages: no exception, a reply exactly when due, no stray write."""
    site, units = fuzz_site
    units[1].faults.add_holes(Table.HOLDING, [41])  # m2 rejects writes to `trip`
    uplink = site.uplink
    assert uplink is not None
    r = random.Random(SEED)
    batch = [message(r) for _ in range(MESSAGES)]
    codes: dict[int, int] = {}
    for start in range(0, len(batch), BATCH):
        chunk = batch[start : start + BATCH]
        answers = await asyncio.gather(
            *(uplink.answer(Inbound(topic, payload)) for topic, payload in chunk)
        )
        for (topic, payload), answer in zip(chunk, answers, strict=True):
            expected = expected_reply_id(topic, payload)
            if expected is None:
                assert answer is None, (topic, payload[:200], answer)
                continue
            assert answer is not None, (topic, payload[:200])
            reply_topic, body = answer
            assert reply_topic == topic + "_reply"
            reply = json.loads(body.decode("utf-8"))
            assert reply["id"] == expected
            assert type(reply["id"]) is type(expected)
            assert isinstance(reply["code"], int)
            assert reply["code"] == 200 or reply["code"] >= 1000, reply
            assert isinstance(reply["message"], str)
            assert len(body) < 64 * 1024
            codes[reply["code"]] = codes.get(reply["code"], 0) + 1
    # The mix reached every layer: successes on the device and refusals of each kind.
    assert codes.get(200, 0) > 500, codes
    for code in (2001, 2002, 2003, 2004, 2005, 2006, 2007, 2008, 2013):
        assert codes.get(code, 0) > 0, (code, codes)
    allowed = allowed_ranges()
    for unit in units:
        assert unit.writes, "valid commands must have reached the device"
        assert set(unit.writes) <= allowed, set(unit.writes) - allowed
