"""Mapping decoded values to samples: qualities, last good values, staleness."""

from __future__ import annotations

import math

from gatewayd.config.models import DataType, PointConfig, Table
from gatewayd.mapping.mapper import DeviceMapper, is_stale, map_values
from gatewayd.samples import Quality, Sample

GOOD, BAD, STALE = Quality.GOOD, Quality.BAD, Quality.STALE


def pt(name: str, *, quality: bool = True, poll_interval: str | None = None) -> PointConfig:
    """A float32 holding point."""
    return PointConfig(measurepoint=name, table=Table.HOLDING, address=0,
                       type=DataType.FLOAT32, quality=quality, poll_interval=poll_interval)


POINTS = [pt("a"), pt("b", quality=False), pt("c", poll_interval="10s")]


def test_map_values_good_and_non_finite() -> None:
    """Finite values are GOOD in point order; NaN is BAD with the last good value."""
    samples = map_values("d", POINTS, {2: 3, 0: 1.5}, 1000)
    assert samples == [Sample("d", "a", 1.5, 1000), Sample("d", "c", 3, 1000)]
    assert map_values("d", POINTS, {0: math.nan}, 2000, last_good={0: 1.5}) == [
        Sample("d", "a", 1.5, 2000, BAD)]
    assert map_values("d", POINTS, {0: math.inf}, 2000) == []  # nothing good to carry
    assert map_values("d", POINTS, {1: math.nan}, 2000, last_good={1: 7.0}) == []


def test_device_mapper_failed_and_stale() -> None:
    """Failures are BAD with the last good value; old readings go STALE per interval."""
    m = DeviceMapper("d", POINTS, default_interval=5.0)
    assert m.failed([0], 500) == []  # never read: no value to carry
    assert m.good({0: 1.0, 1: 2.0, 2: 3.0}, 1000) == [
        Sample("d", "a", 1.0, 1000), Sample("d", "b", 2.0, 1000), Sample("d", "c", 3.0, 1000)]
    assert m.failed([0, 1, 0], 6000) == [Sample("d", "a", 1.0, 6000, BAD)]  # b: no quality
    assert m.good({0: math.nan}, 7000) == [Sample("d", "a", 1.0, 7000, BAD)]
    assert m.last_good[0] == (1.0, 1000)  # NaN did not replace the last good value
    assert m.stale([0, 2], 6000) == []  # 5 s exactly: still fresh
    assert m.stale([0, 2], 6001) == [Sample("d", "a", 1.0, 6001, STALE)]
    assert m.stale([2], 11001) == [Sample("d", "c", 3.0, 11001, STALE)]  # its own 10 s


def test_is_stale_boundary() -> None:
    """Stale strictly after the interval."""
    assert not is_stale(0, 5000, 5.0)
    assert is_stale(0, 5001, 5.0)


def test_good_block_equals_good_including_non_finite_values() -> None:
    """`good_block` gives the samples and last-good table `good` gives, NaN/inf included."""
    fast = DeviceMapper("d", POINTS, default_interval=5.0)
    slow = DeviceMapper("d", POINTS, default_interval=5.0)
    names = ("a", "b", "c")
    cycles: list[tuple[list[float], tuple[int, ...]]] = [
        ([1.5, 2.5, 3.5], ()),
        ([math.nan, 4.0, math.inf], (0, 2)),  # a and c keep 1.5 / 3.5 as last good
        ([6.0, math.nan, 7.0], (1,)),
    ]
    for ts_ms, (values, nonfinite) in enumerate(cycles, start=1):
        got = fast.good_block((0, 1, 2), names, values, 1000 * ts_ms, nonfinite)
        want = slow.good(dict(enumerate(values)), 1000 * ts_ms)
        assert got == want
        assert dict(fast.last_good) == dict(slow.last_good)
    assert fast.last_good[0] == (6.0, 3000)
    assert fast.last_good[1] == (4.0, 2000)  # NaN did not replace it
    bad = fast.good_block((0,), ("a",), [math.nan], 4000, (0,))
    assert bad == [Sample("d", "a", 6.0, 4000, BAD)]
    assert fast.stale([0, 1, 2], 9001) == [Sample("d", "a", 6.0, 9001, STALE)]  # b: no quality
