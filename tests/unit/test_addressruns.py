"""AddressRuns: the planner's answered addresses as runs, checked against a plain set."""

from __future__ import annotations

import sys
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from gatewayd.modbus.addressruns import AddressRuns

ranges = st.lists(st.tuples(st.integers(0, 300), st.integers(0, 40)), max_size=30)


def set_gaps(members: set[int], start: int, end: int) -> list[tuple[int, int]]:
    """The maximal runs of [start, end) outside `members`, the slow way."""
    gaps: list[tuple[int, int]] = []
    for address in range(start, end):
        if address in members:
            continue
        if gaps and gaps[-1][1] == address:
            gaps[-1] = (gaps[-1][0], address + 1)
        else:
            gaps.append((address, address + 1))
    return gaps


def set_first_run(members: set[int], length: int) -> int | None:
    """Start of the first run of `length` consecutive members, the slow way."""
    for address in sorted(members):
        if address - 1 not in members and all(
            a in members for a in range(address, address + length)
        ):
            return address
    return None


@settings(max_examples=300, deadline=None)
@given(ranges, st.integers(0, 340), st.integers(0, 60), st.integers(1, 50))
def test_runs_hold_exactly_the_set(
    added: list[tuple[int, int]], start: int, width: int, length: int
) -> None:
    """Membership, size, gaps and the first long run equal a set of the same addresses."""
    runs = AddressRuns()
    members: set[int] = set()
    for first, count in added:
        runs.add(first, first + count)
        members.update(range(first, first + count))
    assert len(runs) == len(members)
    assert [a for a in range(-1, 345) if a in runs] == sorted(members)
    assert runs.gaps(start, start + width) == set_gaps(members, start, start + width)
    assert runs.first_run_of(length) == set_first_run(members, length)
    pairs = runs.runs()
    assert all(a_end < b_start for (_, a_end), (b_start, _) in pairwise(pairs))


def test_touching_runs_merge_into_one() -> None:
    """[0, 10) and [10, 20) are one run; a run over both and beyond swallows them."""
    runs = AddressRuns()
    runs.add(10, 20)
    runs.add(0, 10)
    assert runs.runs() == [(0, 20)]
    runs.add(30, 35)
    runs.add(-5, 40)
    assert runs.runs() == [(-5, 40)]
    assert len(runs) == 45


def test_two_thousand_answered_registers_cost_a_few_hundred_bytes() -> None:
    """What the planner keeps per device: 2000 registers read 125 at a time, as runs, is
    two short lists, where a set of the addresses held 2000 int objects."""
    runs = AddressRuns()
    for start in range(0, 2000, 125):
        runs.add(start, start + 125)
    assert runs.runs() == [(0, 2000)]
    held = sys.getsizeof(runs._starts) + sys.getsizeof(runs._ends)
    assert held < 512
