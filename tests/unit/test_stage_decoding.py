"""The mapping stage decodes: raw words of a response → scaled, enum-mapped values (pure).

The responses here are built by hand from the Modbus byte layout (`struct`), not with the
product's codec, so a misreading shared by the codec and the block decoder fails here.
"""

from __future__ import annotations

import ast
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from gatewayd.config.enums import Order
from gatewayd.config.models import PointConfig
from gatewayd.mapping import decoding
from gatewayd.mapping.muting import Muting
from gatewayd.mapping.stage import DeviceMapping
from gatewayd.samples import Quality, Sample, SampleBlock

PACKAGE = Path(__file__).resolve().parents[2] / "gatewayd"
BIG, LITTLE = Order.BIG, Order.LITTLE


@dataclass(frozen=True)
class Request:
    """A read request's layout as the planner makes it (hashable, equal by value)."""

    start: int
    count: int
    points: tuple[int, ...]


@dataclass
class Response:
    """One good answer as the poller hands it over: raw words, not values."""

    request: Request
    words: list[int]
    ts_ms: int


@dataclass
class Failed:
    """A point whose read failed."""

    index: int
    ts_ms: int


def point(name: str, address: int, type_: str, **extra: Any) -> PointConfig:
    """A holding-register point."""
    return PointConfig.model_validate(
        {"measurepoint": name, "table": "holding", "address": address, "type": type_, **extra}
    )


def words_of(data: bytes) -> list[int]:
    """Big-endian bytes as 16-bit registers, the way they travel on the wire."""
    return list(struct.unpack(f">{len(data) // 2}H", data))


#: One response covering registers 0-6: scaled uint16, int32 with its low word first,
#: float32, enum, a bit of a status register.
POINTS = [
    point("volts", 0, "uint16", scale=0.1),
    point("energy", 1, "int32", word_order="little"),
    point("hz", 3, "float32"),
    point("mode", 5, "uint16", enum={1: "run", 2: "stop"}),
    point("tripped", 6, "bool", bit=3),
]
ALL = Request(0, 7, (0, 1, 2, 3, 4))


def response_words(volts_raw: int, energy: int, hz: float, mode: int, status: int) -> list[int]:
    """The 7 registers of `ALL` for these raw values, laid out by hand."""
    energy_be = struct.pack(">i", energy)
    return [
        *words_of(struct.pack(">H", volts_raw)),
        *words_of(energy_be[2:] + energy_be[:2]),  # word order little: low word first
        *words_of(struct.pack(">f", hz)),
        mode,
        status,
    ]


def stage(points: list[PointConfig] = POINTS) -> DeviceMapping:
    """The stage for one device of these points (orders as the poller resolves them)."""
    orders = [(p.byte_order or BIG, p.word_order or BIG) for p in points]
    return DeviceMapping("d", points, [], Muting(), default_interval=1.0, orders=orders)


def test_raw_words_become_scaled_and_enum_mapped_values_in_one_block() -> None:
    """Scale, word order, float32 spelling, enum and register bit are the stage's work."""
    out = stage().read_responses(
        [Response(ALL, response_words(2345, -100_000, 49.98, 1, 0b1000), 1000)], []
    )
    assert out.blocks == [
        SampleBlock(
            "d",
            ("volts", "energy", "hz", "mode", "tripped"),
            [234.5, -100_000, 49.98, "run", True],
            1000,
        )
    ]
    assert (out.samples, out.events) == ([], [])


def test_a_point_whose_registers_do_not_decode_is_bad_alone() -> None:
    """A BCD register with a digit over 9 is BAD (its last good value); the other point of
    the same response stays GOOD, and nothing undecodable becomes a value."""
    points = [point("count", 0, "bcd16", quality=True), point("volts", 1, "uint16")]
    s = stage(points)
    both = Request(0, 2, (0, 1))
    first = s.read_responses([Response(both, [0x1234, 230], 1000)], [])
    assert first.blocks == [SampleBlock("d", ("count", "volts"), [1234, 230], 1000)]
    second = s.read_responses([Response(both, [0x12A4, 231], 2000)], [])
    assert second.samples == [Sample("d", "count", 1234, 2000, Quality.BAD)]
    assert [(tuple(b.measurepoints), list(b.values)) for b in second.blocks] == [
        (("volts",), [231])
    ]


def test_nan_from_the_device_is_bad_with_the_last_good_value() -> None:
    """float32 NaN words decode to NaN, which the stage sends as BAD with the last good."""
    points = [point("hz", 0, "float32", quality=True)]
    s = stage(points)
    layout = Request(0, 2, (0,))
    s.read_responses([Response(layout, words_of(struct.pack(">f", 50.0)), 1000)], [])
    out = s.read_responses([Response(layout, [0x7FC0, 0x0000], 2000)], [])
    assert (out.samples, out.blocks) == ([Sample("d", "hz", 50.0, 2000, Quality.BAD)], [])


def test_failed_reads_and_raw_responses_go_together() -> None:
    """A poll with one good response and one failed point: GOOD block plus BAD sample."""
    points = [point("a", 0, "uint16", quality=True), point("b", 10, "uint16", quality=True)]
    s = stage(points)
    s.read_responses([Response(Request(10, 1, (1,)), [7], 500)], [])
    out = s.read_responses([Response(Request(0, 1, (0,)), [5], 1000)], [Failed(1, 1000)])
    assert out.blocks == [SampleBlock("d", ("a",), [5], 1000)]
    assert out.samples == [Sample("d", "b", 7, 1000, Quality.BAD)]


def test_one_decoder_is_compiled_per_request_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Two layouts polled over five cycles compile two block decoders; changed registers
    still give new values (the cache holds the decoder, not stale values)."""
    compiled: list[tuple[int, int]] = []
    real = decoding.BlockDecoder

    def counting(*args: Any, **kwargs: Any) -> decoding.BlockDecoder:
        compiled.append((kwargs["start"], kwargs["count"]))
        return real(*args, **kwargs)

    monkeypatch.setattr(decoding, "BlockDecoder", counting)
    s = stage()
    head, tail = Request(0, 3, (0, 1)), Request(3, 4, (2, 3, 4))
    volts = []
    for cycle in range(5):
        words = response_words(2300 + cycle, 7, 50.0, 2, 0)
        out = s.read_responses(
            [Response(head, words[:3], cycle), Response(tail, words[3:], cycle)], []
        )
        volts.append(out.blocks[0].values[0])
        assert list(out.blocks[1].values) == [50.0, "stop", False]
    assert compiled == [(0, 3), (3, 4)]
    assert volts == [230.0, 230.1, 230.2, 230.3, 230.4]


def test_the_stage_needs_an_order_per_point() -> None:
    """A decoder given fewer orders than points is refused at construction, clearly."""
    with pytest.raises(ValueError, match="2 points but 1 orders"):
        decoding.ResponseDecoder(POINTS[:2], [(BIG, BIG)])


def _imports_and_calls(path: Path) -> tuple[set[str], set[str]]:
    tree = ast.parse(path.read_text())
    imports: set[str] = set()
    calls: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            imports.add(node.module)
        elif isinstance(node, ast.Import):
            imports.update(alias.name for alias in node.names)
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and isinstance(node.func.value, ast.Name)
        ):
            calls.add(f"{node.func.value.id}.{node.func.attr}")
    return imports, calls


def test_the_reader_reads_and_leaves_decoding_to_the_mapping_stage() -> None:
    """modbus/reader.py imports no decoder and calls no decoding part of the codec (it
    still encodes writes); the block decoder lives in the mapping stage's folder."""
    imports, calls = _imports_and_calls(PACKAGE / "modbus" / "reader.py")
    assert {m for m in imports if m.startswith("gatewayd.mapping")} == set()
    assert not any("blockdecode" in m for m in imports)
    assert calls & {"codec.decode", "codec.convert_raw"} == set()
    assert "codec.encode" in calls
    assert not (PACKAGE / "modbus" / "blockdecode.py").exists()
    assert (PACKAGE / "mapping" / "blockdecode.py").is_file()
