"""Spool rows → batch records, and packing records into messages (pure)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from gatewayd.samples import Quality
from gatewayd.spool.rows import SpooledSample
from gatewayd.uplink.delivery import pack
from gatewayd.uplink.records import bundle_samples, row_ids

KEYS = {"m1": ("pk", "dk1"), "m2": ("pk", "dk2")}


def row(id: int, device: str, point: str, value: object, ts: int, *, q: int = 0) -> SpooledSample:
    return SpooledSample(id, device, point, value, q, ts)  # type: ignore[arg-type]


def test_rows_group_by_device_and_time_with_quality_where_enabled() -> None:
    """Same device and time share a record; quality points carry {value, quality}."""
    rows = [
        row(1, "m1", "v", 230.5, 1000),
        row(2, "m1", "e", 7, 1000),
        row(3, "m2", "v", 231.0, 1000),
        row(4, "m1", "v", 230.7, 2000, q=Quality.BAD),
    ]
    bundles, unsendable = bundle_samples(rows, KEYS.get, {("m1", "v")})
    assert unsendable == []
    assert [json.loads(b.encoded) for b in bundles] == [
        {"productKey": "pk", "deviceKey": "dk1", "time": 1000,
         "measurepoints": {"v": {"value": 230.5, "quality": 0}, "e": 7}},
        {"productKey": "pk", "deviceKey": "dk2", "time": 1000, "measurepoints": {"v": 231.0}},
        {"productKey": "pk", "deviceKey": "dk1", "time": 2000,
         "measurepoints": {"v": {"value": 230.7, "quality": 1}}},
    ]  # fmt: skip
    assert [b.row_ids for b in bundles] == [(1, 2), (3,), (4,)]


def test_unknown_devices_and_bad_values_without_quality_are_unsendable() -> None:
    """A deleted device's rows and a BAD value of a plain point are not sent."""
    rows = [row(1, "gone", "v", 1.0, 1000), row(2, "m1", "e", 3, 1000, q=Quality.BAD)]
    bundles, unsendable = bundle_samples(rows, KEYS.get, set())
    assert bundles == []
    assert unsendable == [1, 2]


def test_a_point_repeated_at_one_instant_goes_to_a_second_record() -> None:
    """Two rows of the same point and time are both kept, never merged away."""
    rows = [row(1, "m1", "v", 1.0, 1000), row(2, "m1", "v", 2.0, 1000)]
    bundles, _ = bundle_samples(rows, KEYS.get, set())
    assert [b.row_ids for b in bundles] == [(1,), (2,)]


def test_split_points_keeps_each_row_with_its_value() -> None:
    """Splitting a record gives one single-point record per row, same device and time."""
    rows = [row(1, "m1", "a", 1, 5), row(2, "m1", "b", 2, 5)]
    bundle = bundle_samples(rows, KEYS.get, set())[0][0]
    parts = bundle.split_points()
    assert [(p.row_ids, json.loads(p.encoded)["measurepoints"]) for p in parts] == [
        ((1,), {"a": 1}),
        ((2,), {"b": 2}),
    ]


@given(
    sizes=st.lists(st.integers(1, 30), min_size=1, max_size=60),
    budget=st.integers(200, 2000),
    max_records=st.integers(1, 10),
)
def test_pack_keeps_order_and_limits(sizes: list[int], budget: int, max_records: int) -> None:
    """Every row lands in exactly one group, in order, within the byte and record limits."""
    rows = []
    for i, n in enumerate(sizes):
        rows += [row(len(rows) + 1, "m1", f"p{j}", 1.25, 1000 + i) for j in range(n)]
    bundles, _ = bundle_samples(rows, KEYS.get, set())
    groups = pack(bundles, budget, max_records)
    assert row_ids([b for g in groups for b in g]) == [r.id for r in rows]
    for group in groups:
        assert len(group) <= max_records
        size = sum(len(b.encoded) + 1 for b in group)
        assert size <= budget or len(group) == 1
