"""Reads stay raw until the mapping stage: a raw-socket Modbus TCP device (no product code),
the product's client, reader, poller and stage.

The device serves registers laid out by hand from the Modbus byte order rules; the
device's config sets its word order (little: low word first), so the order has to travel
from the config, past the reader (which never decodes), to the stage's decoder.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import struct
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from gatewayd.clock import SystemClock
from gatewayd.config.models import DeviceConfig, DeviceModel
from gatewayd.modbus.client import make_client
from gatewayd.modbus.poller import BusPoller, CycleResult, DeviceHandle
from gatewayd.modbus.reader import DeviceReader
from gatewayd.samples import Quality, Sample
from tests.integration.modbus_fixtures import tcp_bus
from tests.integration.raw_modbus import RawHoldingDevice

MODEL = DeviceModel.model_validate({
    "name": "meter",
    "points": [
        {"measurepoint": "power", "table": "holding", "address": 0, "type": "float32",
         "scale": 2},
        {"measurepoint": "state", "table": "holding", "address": 2, "type": "uint16",
         "enum": {3: "fault", 4: "ok"}},
        {"measurepoint": "count", "table": "holding", "address": 3, "type": "bcd16",
         "quality": True},
    ],
})  # fmt: skip


def device_config() -> DeviceConfig:
    """The meter, low word first (a device-level override of the model's order)."""
    return DeviceConfig.model_validate(
        {"name": "m1", "bus": "tcp-test", "unit_id": 1, "model": "meter",
         "product_key": "pk", "device_key": "m1", "poll_interval": "200ms",
         "word_order": "little"}
    )  # fmt: skip


def low_word_first(value: float) -> tuple[int, int]:
    """A float32's two registers with the low word first."""
    high, low = struct.unpack(">HH", struct.pack(">f", value))
    return low, high


POWER = low_word_first(12.25)
#: power (12.25 × 2), state 4 ("ok"), count 0x0042 (BCD 42).
REGISTERS = {0: POWER[0], 1: POWER[1], 2: 4, 3: 0x0042}


async def test_the_reader_hands_on_the_registers_as_read() -> None:
    """One request for the three points; the outcome holds its words untouched (the float's
    swapped words, the enum's raw 4, the BCD's raw 0x42): no value is made in the reader."""
    async with RawHoldingDevice(REGISTERS, {}) as meter:
        bus = tcp_bus(meter.port, timeout="1s")
        reader = DeviceReader(bus, device_config(), MODEL, gap_fill=0)
        client = make_client(bus)
        await client.connect()
        try:
            outcome = await reader.read(client, [0, 1, 2], SystemClock(), probe=False)
        finally:
            await client.close()
    assert outcome.failed == []
    assert [(r.request.start, r.request.count, r.request.points) for r in outcome.responses] == [
        (0, 4, (0, 1, 2))
    ]
    assert outcome.responses[0].words == [POWER[0], POWER[1], 4, 0x0042]
    assert meter.requests == [(0, 4)]


@contextlib.asynccontextmanager
async def polling(
    registers: dict[int, int],
) -> AsyncIterator[tuple[BusPoller, asyncio.Queue[CycleResult], RawHoldingDevice]]:
    """A real-clock poller with the product's client on the raw device, cancelled on exit."""
    async with RawHoldingDevice(registers, {}) as meter:
        results: asyncio.Queue[CycleResult] = asyncio.Queue(maxsize=1000)
        poller = BusPoller(
            tcp_bus(meter.port, timeout="1s"), [device_config()], {"meter": MODEL}, results
        )
        task = asyncio.create_task(poller.run())
        try:
            yield poller, results, meter
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_the_poller_cycle_carries_values_the_stage_decoded() -> None:
    """The cycle's samples are decoded with the device's word order, scaled and enum-mapped."""
    async with polling(REGISTERS) as (_poller, results, _meter):
        cycle = await asyncio.wait_for(results.get(), 10)
    assert [(s.measurepoint, s.value, s.quality) for s in cycle.samples] == [
        ("power", 24.5, Quality.GOOD),
        ("state", "ok", Quality.GOOD),
        ("count", 42, Quality.GOOD),
    ]


async def test_an_undecodable_register_is_bad_and_its_neighbours_good() -> None:
    """A BCD register changing to 0x004F (F is no digit): 'count' is BAD with its last good
    value 42, power and state in the same response stay GOOD."""
    async with polling(REGISTERS) as (_poller, results, meter):
        first = await asyncio.wait_for(results.get(), 10)
        assert Sample("m1", "count", 42, first.samples[0].ts_ms) in first.samples
        meter.set_register(3, 0x004F)
        for _ in range(20):  # the change lands within a cycle or two
            cycle = await asyncio.wait_for(results.get(), 10)
            if any(s.quality is Quality.BAD for s in cycle.samples):
                break
    ts = cycle.samples[0].ts_ms
    assert sorted(cycle.samples, key=lambda s: s.measurepoint) == [
        Sample("m1", "count", 42, ts, Quality.BAD),
        Sample("m1", "power", 24.5, ts),
        Sample("m1", "state", "ok", ts),
    ]


async def test_a_command_read_decodes_with_the_device_order() -> None:
    """read_points (a command's read-back) gives the same decoded values as the poll."""

    async def op(handle: DeviceHandle) -> dict[str, object]:
        return dict(await handle.read_points(["power", "state"]))

    async with polling(REGISTERS) as (poller, results, _meter):
        await asyncio.wait_for(results.get(), 10)
        values = await asyncio.wait_for(poller.execute("m1", op), 10)
    assert values == {"power": 24.5, "state": "ok"}


METER_YAML = """\
name: meter
points:
  - {measurepoint: power, table: holding, address: 0, type: float32, scale: 2}
  - {measurepoint: state, table: holding, address: 2, type: uint16, enum: {3: fault, 4: ok}}
  - {measurepoint: count, table: holding, address: 3, type: bcd16, quality: true}
"""

SITE_YAML = """\
gateway:
  product_key: gwPk
  device_key: gwDk
  device_secret: s3cret
  broker: {{host: 127.0.0.1}}
models_dir: {models}
buses:
  - {{name: tcp-test, type: tcp, host: 127.0.0.1, port: {port}, timeout: 1s}}
devices:
  - {{name: m1, bus: tcp-test, unit_id: 1, model: meter, product_key: pk, device_key: m1,
     device_secret: s, word_order: little}}
"""


async def test_gatewayd_read_shows_decoded_values_and_the_undecodable_register(
    tmp_path: Path,
) -> None:
    """`gatewayd read --json` decodes like the daemon's stage: power and state good with
    their raw registers, count bad with the codec's reason and its raw 0x004F; exit 1."""
    models = tmp_path / "models"
    models.mkdir()
    (models / "meter.yaml").write_text(METER_YAML)
    config = tmp_path / "gatewayd.yaml"
    async with RawHoldingDevice({**REGISTERS, 3: 0x004F}, {}) as meter:
        config.write_text(SITE_YAML.format(models=models, port=meter.port))
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gatewayd", "read", str(config), "--device", "m1", "--json",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 1, err.decode()
    (poll,) = [json.loads(line) for line in out.decode().splitlines()]
    points = {p["measurepoint"]: p for p in poll["points"]}
    assert [(m, p["value"], p["quality"], p["raw"]) for m, p in points.items()] == [
        ("power", 24.5, "good", list(POWER)),
        ("state", "ok", "good", [4]),
        ("count", None, "bad", [0x004F]),
    ]
    assert points["count"]["error"] == "invalid BCD digit 0xF in 0x004F"
