"""Request id generator: decimal strings, unique per lifetime, seeded by the caller."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gatewayd.enos.ids import TIME_SEED_MODULUS, IdGenerator


def test_sequence_from_seed() -> None:
    """Ids count up from the seed as decimal strings, through every access style."""
    ids = IdGenerator(41)
    assert [ids.next_id(), ids(), next(ids)] == ["41", "42", "43"]
    assert repr(ids) == "IdGenerator(next=44)"


def test_time_seed_folds_into_modulus() -> None:
    """from_time_ms uses time_ms % 10**9 (spec §2.1), so ids stay short."""
    assert IdGenerator.from_time_ms(1_700_000_123_456).next_id() == str(
        1_700_000_123_456 % TIME_SEED_MODULUS
    )


def test_negative_seed_rejected() -> None:
    """A negative seed would produce a '-' id."""
    with pytest.raises(ValueError, match=">= 0"):
        IdGenerator(-1)


def test_generators_are_independent() -> None:
    """No shared global counter: two generators with one seed give the same ids."""
    a, b = IdGenerator(7), IdGenerator(7)
    a.next_id()
    assert b.next_id() == "7"


@given(seed=st.integers(min_value=0, max_value=10**12), n=st.integers(min_value=1, max_value=300))
def test_unique_digit_strings(seed: int, n: int) -> None:
    """n ids are n distinct all-digit strings."""
    ids = IdGenerator(seed)
    batch = [ids.next_id() for _ in range(n)]
    assert len(set(batch)) == n
    assert all(s.isdigit() for s in batch)


def test_restart_seeded_later_does_not_reuse_recent_ids() -> None:
    """A restart seeded from a later clock starts above what the old process used."""
    first = IdGenerator.from_time_ms(1_700_000_000_000)
    used = {first.next_id() for _ in range(1000)}
    # 5 s later (fewer than 5000 ids/5 s were sent), the new process starts past them.
    second = IdGenerator.from_time_ms(1_700_000_005_000)
    assert not used & {second.next_id() for _ in range(1000)}
