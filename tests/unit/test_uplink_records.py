"""Spool frames → batch records by concatenation, and packing records into messages (pure)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from gatewayd.enos.messages import MeasurepointRecord, encode_record
from gatewayd.samples import Quality, Sample
from gatewayd.spool.frames import FrameEncoder, parse_body
from gatewayd.spool.rows import SpooledFrame
from gatewayd.uplink.delivery import pack
from gatewayd.uplink.frames import EnosQuality
from gatewayd.uplink.records import bundle_frames, frame_ids, point_count, point_record

KEYS = {"m1": ("pk", "dk1"), "m2": ("pk", "dk2"), "ü": ('pk"ü', "dk\\3")}


def frames_of(
    samples: list[Sample], quality: set[tuple[str, str]] | None = None
) -> list[SpooledFrame]:
    frames, _ = FrameEncoder(EnosQuality(quality or set())).encode(samples)
    return [SpooledFrame(i + 1, f.device, f.ts_ms, f.points, f.body) for i, f in enumerate(frames)]


def test_records_are_the_exact_bytes_encode_record_writes() -> None:
    """Concatenated records equal `encode_record` of the same values, byte for byte,
    including quality shapes and keys that need JSON escaping."""
    samples = [
        Sample("m1", "v", 230.5, 1000),
        Sample("m1", "e", 7, 1000),
        Sample("m2", "v", 231.0, 1000),
        Sample("ü", "tëxt", 'ä"b', 1001),
        Sample("m1", "v", 230.7, 2000, Quality.BAD),
    ]
    bundles, unknown = bundle_frames(frames_of(samples, {("m1", "v")}), KEYS.get)
    assert unknown == []
    expected = [
        MeasurepointRecord("pk", "dk1", 1000, {"v": {"value": 230.5, "quality": 0}, "e": 7}),
        MeasurepointRecord("pk", "dk2", 1000, {"v": 231.0}),
        MeasurepointRecord('pk"ü', "dk\\3", 1001, {"tëxt": 'ä"b'}),
        MeasurepointRecord("pk", "dk1", 2000, {"v": {"value": 230.7, "quality": 1}}),
    ]
    assert [b.encoded for b in bundles] == [encode_record(r) for r in expected]
    assert [b.points for b in bundles] == [2, 1, 1, 1]
    assert point_count(bundles) == 5
    assert frame_ids(bundles) == [1, 2, 3, 4]


def test_frames_of_unknown_devices_come_back_as_unknown() -> None:
    """A deleted or unknown device's frames are not sent; their ids are returned."""
    frames = frames_of([Sample("gone", "v", 1.0, 1000), Sample("m1", "e", 3, 1000)])
    bundles, unknown = bundle_frames(frames, KEYS.get)
    assert [b.device for b in bundles] == ["m1"]
    assert unknown == [1]


def test_point_record_carries_some_of_a_frames_points() -> None:
    """The bisection path: a record of a subset of a frame's shaped points."""
    (frame,) = frames_of([Sample("m1", "a", 1, 5), Sample("m1", "b", 2, 5)], {("m1", "b")})
    points = parse_body(frame.body)
    record = json.loads(point_record(KEYS["m1"], frame, {"b": points["b"]}))
    assert record == {
        "productKey": "pk",
        "deviceKey": "dk1",
        "measurepoints": {"b": {"value": 2, "quality": 0}},
        "time": 5,
    }


@given(
    sizes=st.lists(st.integers(1, 30), min_size=1, max_size=60),
    budget=st.integers(200, 2000),
    max_records=st.integers(1, 10),
)
def test_pack_keeps_order_and_limits(sizes: list[int], budget: int, max_records: int) -> None:
    """Every frame lands in exactly one group, in order, within the byte and record limits."""
    samples = [Sample("m1", f"p{j}", 1.25, 1000 + i) for i, n in enumerate(sizes) for j in range(n)]
    frames = frames_of(samples)
    bundles, _ = bundle_frames(frames, KEYS.get)
    groups = pack(bundles, budget, max_records)
    assert frame_ids([b for g in groups for b in g]) == [f.id for f in frames]
    for group in groups:
        assert len(group) <= max_records
        size = sum(len(b.encoded) + 1 for b in group)
        assert size <= budget or len(group) == 1
