"""Sample: the value semantics of a frozen dataclass, built fast in bulk."""

from __future__ import annotations

import pickle
from unittest import mock

import pytest

from gatewayd.samples import Quality, Sample, good_samples


def test_sample_equality_hash_and_repr_are_a_frozen_dataclass_s() -> None:
    """Equal fields are equal and hash alike; a plain tuple is never equal; repr names fields."""
    a = Sample("d", "m", 1.5, 10)
    assert a == Sample("d", "m", 1.5, 10, Quality.GOOD)
    assert hash(a) == hash(Sample("d", "m", 1.5, 10))
    assert a != Sample("d", "m", 1.5, 10, Quality.BAD)
    assert a != ("d", "m", 1.5, 10, Quality.GOOD)
    assert ("d", "m", 1.5, 10, Quality.GOOD) != a  # noqa: SIM300 - the reflected side
    assert a == mock.ANY  # other types still get their say, as with a dataclass
    assert len({a, Sample("d", "m", 1.5, 10)}) == 1
    assert repr(a) == (
        "Sample(device='d', measurepoint='m', value=1.5, ts_ms=10, quality=<Quality.GOOD: 0>)"
    )
    assert pickle.loads(pickle.dumps(a)) == a


def test_sample_is_immutable_and_unordered() -> None:
    """Fields cannot be set and samples do not compare with <, as a frozen dataclass."""
    a = Sample("d", "m", 1, 10)
    with pytest.raises(AttributeError):
        a.value = 2  # type: ignore[misc]
    with pytest.raises(TypeError):
        assert a < Sample("d", "m", 2, 10)


def test_good_samples_equals_one_by_one_construction() -> None:
    """The bulk builder gives exactly the GOOD samples the constructor would."""
    got = good_samples("dev", ["a", "b", "c"], [1, 2.5, "on"], 1234)
    assert got == [Sample("dev", "a", 1, 1234), Sample("dev", "b", 2.5, 1234),
                   Sample("dev", "c", "on", 1234)]  # fmt: skip
    assert all(type(s) is Sample and s.quality is Quality.GOOD for s in got)
    assert good_samples("dev", [], [], 1) == []
