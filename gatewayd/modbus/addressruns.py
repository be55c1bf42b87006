"""A set of register addresses kept as sorted, disjoint runs (standard library only).

The planner remembers which addresses a device answered for. As a `set[int]` that cost
about 100 bytes per register per device (an int object and a hash slot each: 36 MiB for
200 devices x 2000 registers); a device's answered registers form a few long runs, so a
list of (start, end) runs holds the same set in a few dozen bytes.
"""

from __future__ import annotations

from bisect import bisect_right


class AddressRuns:
    """Addresses as sorted, disjoint, non-adjacent half-open runs [start, end)."""

    __slots__ = ("_ends", "_size", "_starts")

    def __init__(self) -> None:
        self._starts: list[int] = []
        self._ends: list[int] = []
        self._size = 0  # addresses covered

    def add(self, start: int, end: int) -> None:
        """Add every address in [start, end); touching or overlapping runs merge."""
        if end <= start:
            return
        starts, ends = self._starts, self._ends
        # The runs that overlap or touch [start, end): from the last one starting before
        # `start` (if it reaches `start`) to the last one starting at or before `end`.
        first = bisect_right(starts, start) - 1
        if first < 0 or ends[first] < start:
            first += 1
        last = bisect_right(starts, end) - 1
        if first <= last:
            start = min(start, starts[first])
            end = max(end, ends[last])
            self._size -= sum(ends[i] - starts[i] for i in range(first, last + 1))
        del starts[first : last + 1], ends[first : last + 1]
        starts.insert(first, start)
        ends.insert(first, end)
        self._size += end - start

    def __contains__(self, address: object) -> bool:
        if not isinstance(address, int):
            return False
        i = bisect_right(self._starts, address) - 1
        return i >= 0 and address < self._ends[i]

    def __len__(self) -> int:
        return self._size

    def runs(self) -> list[tuple[int, int]]:
        """The runs, ascending."""
        return list(zip(self._starts, self._ends, strict=True))

    def gaps(self, start: int, end: int) -> list[tuple[int, int]]:
        """The maximal runs of [start, end) that are not in the set, ascending."""
        found: list[tuple[int, int]] = []
        cursor = start
        i = max(0, bisect_right(self._starts, start) - 1)
        while cursor < end and i < len(self._starts):
            run_start, run_end = self._starts[i], self._ends[i]
            if run_start >= end:
                break
            if run_end > cursor:
                if run_start > cursor:
                    found.append((cursor, run_start))
                cursor = run_end
            i += 1
        if cursor < end:
            found.append((cursor, end))
        return found

    def first_run_of(self, length: int) -> int | None:
        """Start of the first run of at least `length` consecutive addresses, if any."""
        for run_start, run_end in zip(self._starts, self._ends, strict=True):
            if run_end - run_start >= length:
                return run_start
        return None
