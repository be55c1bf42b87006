"""The devices of one model share its compiled tables (modbus/layout.py), and a device
more costs a few KiB, not a copy of every model-derived table."""

from __future__ import annotations

import asyncio
import gc
import sys
import tracemalloc
from array import array
from collections.abc import Sequence
from typing import NamedTuple

from gatewayd.clock import VirtualClock
from gatewayd.config.models import (
    DeviceConfig,
    DeviceModel,
    PointConfig,
    Table,
    TcpBus,
)
from gatewayd.mapping.decoding import ResponseDecoder, SharedDecoders
from gatewayd.mapping.mapper import DeviceMapper
from gatewayd.modbus.fake import FakeBus
from gatewayd.modbus.layout import Layouts
from gatewayd.modbus.planner import DeviceReadPlanner, ReadRequest
from gatewayd.modbus.points import Point, compile_point
from gatewayd.modbus.poller import BusPoller, CycleResult
from gatewayd.modbus.timing import resolve_gap_fill
from tests.unit.test_poller import dev, make_bus, make_model, pt


def float_model(name: str, points: int) -> DeviceModel:
    """`points` contiguous float32 points, without the quality field (B2's model)."""
    return make_model(name, [pt(f"p{i}", 2 * i, "float32") for i in range(points)])


def poller(
    devices: Sequence[DeviceConfig],
    models: dict[str, DeviceModel],
    *,
    layouts: Layouts | None = None,
    decoders: SharedDecoders | None = None,
    bus: TcpBus | None = None,
) -> BusPoller:
    """A poller over a fake bus (never run: construction is what is looked at)."""
    clock = VirtualClock(monotonic=1000.0, wall=1_700_000_000.0)
    results: asyncio.Queue[CycleResult] = asyncio.Queue()
    return BusPoller(
        bus or make_bus(), devices, models, results, client=FakeBus(clock), clock=clock,
        layouts=layouts, decoders=decoders,
    )  # fmt: skip


TS_MS = 1_700_000_000_000


class Response(NamedTuple):
    """One good raw response, as the poller hands it to the stage."""

    request: ReadRequest
    words: list[int]
    ts_ms: int


def zero_responses(requests: Sequence[ReadRequest], ts_ms: int = TS_MS) -> list[Response]:
    """An all-zero answer to each request."""
    return [Response(request, [0] * request.count, ts_ms) for request in requests]


def test_devices_of_one_model_share_the_same_compiled_objects() -> None:
    """Two devices of a model get one layout: points, orders, index, plan cache, the
    points without quality and each request's decoder are the same objects (`is`); a
    device with its own byte order or another model gets its own."""
    model = make_model("m", [pt("a", 0, quality=True), pt("b", 1), pt("c", 10, "float32")])
    other = make_model("n", [pt("a", 0), pt("b", 1)])
    devices = [dev("d1", 1), dev("d2", 2), dev("d3", 3, byte_order="little"),
               dev("d4", 4, model_name="n")]  # fmt: skip
    bus_poller = poller(devices, {"m": model, "n": other})
    d1, d2, d3, d4 = (bus_poller._devices[d.name] for d in devices)
    r1, r2 = d1.reader, d2.reader
    assert r1.layout is r2.layout
    assert r1.points is r2.points is d1.mapping.mapper.points is d2.mapping.mapper.points
    assert all(isinstance(p, Point) for p in r1.points)  # compiled specs, not pydantic
    assert r1.orders is r2.orders is d1.mapping.decoder.orders is d2.mapping.decoder.orders
    assert r1._index_by_measurepoint is r2._index_by_measurepoint
    assert r1.planner._cache is r2.planner._cache
    assert d1.mapping._silent_on_failure is d2.mapping._silent_on_failure
    assert dict(d1.mapping._silent_on_failure) == {1: "b", 2: "c"}
    first = r1.planner.plan()
    assert first == r2.planner.plan()
    # The stage's decoders: compiled once per request for the model, used by both devices.
    assert d1.mapping.decoder.shared is d2.mapping.decoder.shared
    for device in (d1, d2):
        device.mapping.read_responses(zero_responses(first), [])
    for request in first:
        assert d1.mapping.decoder._decoders[request] is not d2.mapping.decoder._decoders[request]
        assert (
            d1.mapping.decoder._decoders[request].compiled
            is d2.mapping.decoder._decoders[request].compiled
        )
    assert len(d1.mapping.decoder.shared) == len(first)
    assert d1.schedule._groups[0].points is d2.schedule._groups[0].points
    tick = d1.schedule.next_due()
    assert d1.schedule.take_due(tick) is d2.schedule.take_due(tick)  # no copy per tick
    # What each device learns stays its own.
    assert r1.planner is not r2.planner
    assert d1.mapping.mapper is not d2.mapping.mapper
    # Another byte order, another model: other tables.
    assert d3.reader.layout is not r1.layout
    assert d3.reader.orders != r1.orders
    assert d3.mapping.decoder.shared is not d1.mapping.decoder.shared
    assert d4.reader.layout is not r1.layout
    assert d4.mapping.decoder.shared is not d1.mapping.decoder.shared
    assert [p.measurepoint for p in d4.reader.points] == ["a", "b"]


def test_devices_of_one_model_decode_their_own_words_with_the_shared_decoders() -> None:
    """Two devices of a model, answering different words in turn, each get the values of
    their own words: the shared part is the compiled decoder, the "same words as last
    cycle" cache stays per device."""
    model = make_model("m", [pt("a", 0), pt("b", 1, "int16"), pt("c", 2, "float32")])
    bus_poller = poller([dev("d1", 1), dev("d2", 2)], {"m": model})
    d1, d2 = (bus_poller._devices[name].mapping for name in ("d1", "d2"))
    (request,) = bus_poller._devices["d1"].reader.planner.plan()
    assert (request.start, request.count) == (0, 4)
    words = {"d1": [7, 0xFFFF, 0x3FC0, 0], "d2": [9, 2, 0x4020, 0]}  # c: 1.5, then 2.5
    for cycle in range(3):
        for name, mapping in (("d1", d1), ("d2", d2)):
            output = mapping.read_responses([Response(request, words[name], TS_MS + cycle)], [])
            (block,) = output.blocks
            expected = {"d1": [7, -1, 1.5], "d2": [9, 2, 2.5]}[name]
            assert (block.measurepoints, block.values) == (("a", "b", "c"), expected), cycle
    assert d1.decoder._decoders[request].compiled is d2.decoder._decoders[request].compiled
    assert d1.decoder._decoders[request].last_words == array("H", words["d1"])
    assert d2.decoder._decoders[request].last_words == array("H", words["d2"])


def test_pollers_of_two_buses_share_the_daemons_layouts_and_decoders() -> None:
    """The daemon hands every bus's poller its `Layouts` and `SharedDecoders`: devices of
    one model on two buses use one layout and one set of compiled decoders."""
    model = float_model("m", 8)
    layouts, decoders = Layouts(), SharedDecoders()
    first = poller([dev("d1", 1)], {"m": model}, layouts=layouts, decoders=decoders)
    second = poller(
        [dev("d2", 1, bus="bus2")], {"m": model},
        layouts=layouts, decoders=decoders, bus=make_bus(name="bus2"),
    )  # fmt: skip
    d1, d2 = first._devices["d1"], second._devices["d2"]
    assert d1.reader.layout is d2.reader.layout
    assert d1.mapping.decoder.shared is d2.mapping.decoder.shared
    assert (len(layouts), len(decoders)) == (1, 1)


def test_shared_decoders_of_other_points_or_orders_are_refused() -> None:
    """A device's decoder refuses a model's compiled decoders made for other points or
    other byte/word orders: they would decode the wrong registers or bytes."""
    layouts, decoders = Layouts(), SharedDecoders()
    layout = layouts.of(float_model("m", 4), dev("d1", 1), gap_fill=4)
    little = layouts.of(float_model("m", 4), dev("d2", 2, byte_order="little"), gap_fill=4)
    shared = decoders.of(layout.points, layout.orders)
    assert decoders.of(layout.points, layout.orders) is shared
    ResponseDecoder(layout.points, layout.orders, shared=shared)  # its own: taken
    for points, orders in ((layout.points[:3], layout.orders[:3]), (little.points, little.orders)):
        try:
            ResponseDecoder(points, orders, shared=shared)
        except ValueError:
            continue
        raise AssertionError(f"took decoders compiled for other points ({len(points)})")


def test_a_compiled_point_is_its_config_point_frozen() -> None:
    """Every field of the frozen spec equals the config point's; it has no instance dict
    and refuses assignment; its measurepoint is interned."""
    config = pt("energy_total", 40, "uint32", byte_order="little", word_order="little",
                scale=0.1, offset=-1.0, unit="kWh", poll_interval="5s", writable=True,
                min=0, max=1e6, quality=True)  # fmt: skip
    flag = pt("state", 3, "uint16", enum={0: "off", 1: "on"})
    for source in (config, flag, pt("alarm", 4, "bool", bit=7), pt("name", 5, "string", count=4)):
        point = compile_point(source)
        for name in Point.__dataclass_fields__:
            assert getattr(point, name) == getattr(source, name), name
        assert not hasattr(point, "__dict__")
        try:
            point.address = 0  # type: ignore[misc]
        except AttributeError:
            pass
        else:
            raise AssertionError("a compiled point took an assignment")
    assert compile_point(config).poll_interval == 5.0
    assert compile_point(flag).enum == {0: "off", 1: "on"}
    assert compile_point(config).measurepoint is sys.intern("energy_total")


def test_one_layout_per_model_order_and_gap_fill() -> None:
    """`Layouts.of` compiles once per (model, byte/word order override, gap fill)."""
    model = float_model("m", 4)
    layouts = Layouts()
    plain, little = dev("d1", 1), dev("d2", 2, byte_order="little")
    assert layouts.of(model, plain, gap_fill=4) is layouts.of(model, dev("d9", 9), gap_fill=4)
    assert layouts.of(model, little, gap_fill=4) is not layouts.of(model, plain, gap_fill=4)
    assert layouts.of(model, plain, gap_fill=0) is not layouts.of(model, plain, gap_fill=4)
    assert len(layouts) == 3


def test_a_shared_plan_cache_of_other_points_is_refused() -> None:
    """A plan cache compiled for other points (or another gap fill) cannot be handed to a
    planner: its plans would name the wrong registers."""
    layout = Layouts().of(float_model("m", 4), dev("d1", 1), gap_fill=4)
    other = float_model("n", 5).points
    for points, gap_fill in ((other, 4), (layout.points, 0)):
        try:
            DeviceReadPlanner(points, max_registers=125, gap_fill=gap_fill, plans=layout.plans)
        except ValueError:
            continue
        raise AssertionError(f"accepted a plan cache for {len(points)} points, fill {gap_fill}")


def _allocated(build: object) -> int:
    """Bytes still allocated after calling `build` (its result kept alive)."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        kept = build()  # type: ignore[operator]
        gc.collect()
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    del kept
    return sum(stat.size_diff for stat in after.compare_to(before, "filename"))


def test_a_device_more_of_a_1000_point_model_costs_a_few_kib() -> None:
    """20 more devices of a 1000-point model cost < 32 KiB each in the poller, 16 of them
    the two last-good tables (before the shared layouts: 257 KiB each, an index dict, an
    order tuple, a plan and a silent-points dict per point per device)."""
    models = {"m": float_model("m", 1000)}
    small = _allocated(lambda: poller([dev(f"d{u}", u) for u in range(1, 11)], models))
    large = _allocated(lambda: poller([dev(f"d{u}", u) for u in range(1, 31)], models))
    per_device = (large - small) / 20
    assert per_device < 32 * 1024, f"{per_device / 1024:.1f} KiB per device"


def test_a_decoding_device_more_of_a_1000_point_model_costs_no_decoder_copy() -> None:
    """After one decoded cycle (2000 registers in 17 responses), 20 more devices of a
    1000-point model cost < 128 KiB each: their last words and values, not a compiled
    decoder each (61 KiB measured, 72 with the words kept as ints; 238 KiB when each
    device compiled its own)."""
    models = {"m": float_model("m", 1000)}

    def polled(count: int) -> BusPoller:
        bus_poller = poller([dev(f"d{u}", u) for u in range(1, count + 1)], models)
        for device in bus_poller._devices.values():
            device.mapping.read_responses(zero_responses(device.reader.planner.plan()), [])
        return bus_poller

    small = _allocated(lambda: polled(10))
    large = _allocated(lambda: polled(30))
    per_device = (large - small) / 20
    assert per_device < 128 * 1024, f"{per_device / 1024:.1f} KiB per device"


def test_a_devices_decode_cache_keeps_its_words_at_two_bytes_each() -> None:
    """A cycle of 2000 registers (17 responses; values over 255, so each an int object of
    its own) leaves a device's decoder holding < 64 KiB more: its 1000 values and the words
    at 2 bytes each (a list of the ints held about 104 KiB); a cycle with the same words
    decodes nothing again and gives the same values."""
    model = float_model("m", 1000)
    layout = Layouts().of(model, dev("d1", 1), gap_fill=4)
    requests = DeviceReadPlanner(layout.points, max_registers=125, gap_fill=4).plan()
    assert sum(r.count for r in requests) == 2000
    decoder = ResponseDecoder(layout.points, layout.orders)

    def answers(high: int = 0x4000) -> list[Response]:
        """Fresh ints above the small-int cache: what a cache of them keeps alive."""
        return [Response(r, [high + i % 7 for i in range(r.count)], TS_MS) for r in requests]

    decoder.decode(answers(0x3000))  # compiles the decoders (the model's, not measured)
    assert _allocated(lambda: decoder.decode(answers()) and None) < 64 * 1024
    lasts = [entry.last for entry in decoder._decoders.values()]
    again = decoder.decode(answers())
    assert all(
        entry.last is last for entry, last in zip(decoder._decoders.values(), lasts, strict=True)
    )  # the same words: the values of last time, not decoded again
    values = [v for block in again.blocks for v in block.values]
    assert (len(values), values[0], values[1]) == (1000, 2.0039065, 2.035157)  # 0x4000_4001, …


def test_answered_registers_of_a_device_cost_bytes_not_an_int_each() -> None:
    """A planner that had 2000 registers answered (16 reads of 125) holds them in a few
    hundred bytes (a set of the addresses held about 130 KiB)."""
    bus: TcpBus = make_bus()
    points: list[PointConfig] = float_model("m", 1000).points
    planner = DeviceReadPlanner(points, max_registers=125, gap_fill=resolve_gap_fill(bus))

    def answer_all() -> None:
        for start in range(0, 2000, 125):
            planner.on_success(ReadRequest(Table.HOLDING, start, 125, (start // 2,)))

    assert _allocated(answer_all) < 8 * 1024


def test_a_mappers_last_good_values_cost_two_pointers_a_point() -> None:
    """One device's last good values of 1000 points, after a block of all of them, hold
    < 24 KiB (two position-indexed lists; the two dicts they replace held about 72 KiB),
    and read back the same through `last_good`."""
    model = float_model("m", 1000)
    values = [float(i) + 0.5 for i in range(1000)]  # made before the measurement
    indices = tuple(range(1000))
    measurepoints = tuple(p.measurepoint for p in model.points)
    mapper = DeviceMapper("d1", model.points, default_interval=1.0)

    def fill() -> None:
        mapper.block(indices, measurepoints, values, 1_700_000_000_000)

    assert _allocated(fill) < 24 * 1024
    assert len(mapper.last_good) == 1000
    assert mapper.last_good[999] == (999.5, 1_700_000_000_000)
    assert 1000 not in mapper.last_good
