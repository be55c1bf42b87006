"""Read planner: a device's points → the fewest read requests per table (pure, no I/O).

Planning (`plan_reads`)
    Points of one table are sorted by address and packed greedily left to right: a request
    grows to take the next point while (a) its span stays within the limit (125 registers /
    2000 bits, intersected with the device maximum), (b) the gap it reads through to reach
    the point is at most `gap_fill` registers (``gap_fill * 16`` bits for coils/discrete
    inputs: one register of fill costs 2 bytes on the wire, as do 16 bits), and (c) no
    known hole lies inside the request. A point covering a hole is unreadable: it is left
    out (see `unreadable_points`).

    Why greedy is optimal: with non-overlapping points (several bools on one register share
    the same range and travel together), a request covers a run of consecutive points in
    address order, and the three conditions are hereditary — a sub-run of a feasible run
    is feasible (a shorter span, a subset of the gaps, a subset of the addresses). For
    such covering problems the "stay ahead" argument holds: after k requests greedy has
    covered at least as many points as any plan with k requests, so it uses the fewest.
    The tests check this against an exact set-cover search on random maps.

Per-point intervals (`select_due`, `PlanCache`)
    Each cycle the poller asks which points are due and plans only those (still merged;
    points not due may be read through as gap fill). `PlanCache` memoises plans per
    (due set, holes, limits), so steady state costs a dict look-up.

Adapting to the device (`DeviceReadPlanner`)
    Exception 02 (illegal data address) on a request: `split_failed_request` returns the
    pieces to try next — the first half of its points, the gap between the halves (a probe
    with no points), the second half — down to single points and single gap registers.
    A failing single point or single gap register becomes a hole, so later plans never
    read it again; pieces that succeed need nothing. Exception 03/04 halves the device
    maximum (down to the widest point) and re-plans the failed request. A timeout or an
    unsound answer is no evidence of a limit (one lost or garbled answer would cost extra
    requests for the life of the process): only the device's own refusals lower it.

    A lowered maximum is tried again after `LIMIT_RETRY_CYCLES` healthy cycles (the poller
    reports each with `end_cycle`): `probes()` then reads the longest read of the plan at
    the configured maximum once (data discarded). Answered, the configured maximum is
    back, so a transient refusal (a device busy with exception 04) costs a few cycles, not
    the life of the process. Refused, nothing changes and the next try waits twice as
    long, up to `LIMIT_RETRY_MAX_CYCLES`: a device with a real limit sees one refused read
    in 1024 cycles at most, and no point is ever read less for it.

    Plans for other due subsets, or re-packed around new holes, may read through gaps no
    request has read yet. To keep every cycle after the first free of exception 02, the
    poller reports answered reads with `on_success` and, at the end of each cycle, reads
    `probes()` (unverified gap registers some plan could read through) until it returns
    []; probes answered 02 go through `on_rejected` like any request. In steady state
    `probes()` is a cached empty answer.

Example (the poller drives the I/O)::

    planner = DeviceReadPlanner(points, max_registers=125, max_bits=2000, gap_fill=12)
    due = select_due(points, now_s, last_polled, device.poll_interval)
    pending = planner.plan(due)
    while pending:
        request = pending.pop(0)
        try:
            words = await client.read(unit, request.table, request.start, request.count)
        except DeviceRejected as exc:
            pending[:0] = planner.on_rejected(request, exc.code)
        except DeviceTimeout:
            ...fail the device's points for this cycle (no limit is learnt)...
        else:
            planner.on_success(request)
            ...decode request.points from words...
        if not pending:
            pending = planner.probes()  # [] once everything readable is verified
    planner.end_cycle(healthy=True)  # the cycle ran to its end with answers
"""

from __future__ import annotations

import bisect
import math
from collections import OrderedDict
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import NamedTuple

# `PointConfig` here is structural (`specs.PointSpec`): the config's points or plain
# specs; the name is kept so the planner's signatures did not change.
from gatewayd.config.enums import Table
from gatewayd.modbus.addressruns import AddressRuns
from gatewayd.modbus.specs import PointSpec as PointConfig

__all__ = [
    "LIMIT_RETRY_CYCLES",
    "LIMIT_RETRY_MAX_CYCLES",
    "MAX_BITS",
    "MAX_REGISTERS",
    "DeviceReadPlanner",
    "PlanCache",
    "PlanError",
    "ReadRequest",
    "bit_gap_fill",
    "lowered_limit",
    "plan_reads",
    "select_due",
    "split_failed_request",
    "unreadable_points",
]

#: Protocol caps per read request (FC3/FC4 and FC1/FC2).
MAX_REGISTERS = 125
MAX_BITS = 2000

#: Healthy cycles after which a lowered read limit is tried again at the configured one.
LIMIT_RETRY_CYCLES = 8
#: The wait doubles each time the device refuses again, up to this many cycles.
LIMIT_RETRY_MAX_CYCLES = 1024

#: Exception codes a device uses to refuse a request it finds too long.
_TOO_LONG_CODES = frozenset({3, 4})
_ILLEGAL_DATA_ADDRESS = 2

Hole = tuple[Table, int]


class PlanError(ValueError):
    """A point that no request can carry (wider than the read limit)."""


@dataclass(frozen=True, slots=True)
class ReadRequest:
    """One read: `count` registers/bits of `table` from `start`; `points` index the point list.

    A request with no points is a probe of gap registers during hole discovery: read it,
    discard the data.
    """

    table: Table
    start: int
    count: int
    points: tuple[int, ...]

    @property
    def end(self) -> int:
        """One past the last address read."""
        return self.start + self.count


def bit_gap_fill(gap_fill: int) -> int:
    """Bits of gap a coil/discrete read may bridge: 16 bits cost the wire what 1 register does."""
    return gap_fill * 16


def _limit(table: Table, max_registers: int, max_bits: int) -> int:
    if table.is_bit:
        return min(MAX_BITS, max_bits)
    return min(MAX_REGISTERS, max_registers)


def _holes_by_table(holes: Collection[Hole]) -> dict[Table, list[int]]:
    by_table: dict[Table, list[int]] = {}
    for table, address in holes:
        by_table.setdefault(table, []).append(address)
    for addresses in by_table.values():
        addresses.sort()
    return by_table


def _has_hole(sorted_holes: Sequence[int], start: int, end: int) -> bool:
    """Whether any address in [start, end) is in `sorted_holes`."""
    i = bisect.bisect_left(sorted_holes, start)
    return i < len(sorted_holes) and sorted_holes[i] < end


def unreadable_points(points: Sequence[PointConfig], holes: Collection[Hole]) -> list[int]:
    """Indices of points that cover a known hole: no request may read them."""
    by_table = _holes_by_table(holes)
    return [
        i
        for i, p in enumerate(points)
        if _has_hole(by_table.get(p.table, ()), p.address, p.address + p.register_count)
    ]


def plan_reads(
    points: Sequence[PointConfig],
    *,
    max_registers: int,
    max_bits: int,
    gap_fill: int,
    holes: Collection[Hole] = (),
) -> list[ReadRequest]:
    """The fewest requests reading every readable point, ordered by table then address.

    Raises `PlanError` if a point is wider than its table's limit. Points covering a hole
    are skipped (`unreadable_points` lists them).
    """
    if max_registers < 1 or max_bits < 1 or gap_fill < 0:
        raise PlanError("max_registers and max_bits must be >= 1 and gap_fill >= 0")
    by_table = _holes_by_table(holes)
    # (address, end, index) per table, sorted: the loop below touches no pydantic attribute.
    spans: dict[Table, list[tuple[int, int, int]]] = {}
    for i, p in enumerate(points):
        spans.setdefault(p.table, []).append((p.address, p.address + p.register_count, i))
    requests: list[ReadRequest] = []
    for table in sorted(spans, key=lambda t: t.value):
        limit = _limit(table, max_registers, max_bits)
        fill = bit_gap_fill(gap_fill) if table.is_bit else gap_fill
        table_holes = by_table.get(table, [])
        members = sorted(spans[table])
        for address, p_end, i in members:
            if p_end - address > limit:
                raise PlanError(
                    f"{points[i].measurepoint}: {p_end - address} registers exceed the read "
                    f"limit {limit}"
                )
        group: list[int] = []
        start = end = 0
        for address, p_end, i in members:
            if table_holes and _has_hole(table_holes, address, p_end):
                continue
            if (
                group
                and max(end, p_end) - start <= limit
                and address - end <= fill
                and not (table_holes and _has_hole(table_holes, end, address))
            ):
                group.append(i)
                end = max(end, p_end)
                continue
            if group:
                requests.append(ReadRequest(table, start, end - start, tuple(group)))
            group, start, end = [i], address, p_end
        if group:
            requests.append(ReadRequest(table, start, end - start, tuple(group)))
    return requests


# ---------------------------------------------------------------------------- scheduling


def select_due(
    points: Sequence[PointConfig],
    now_s: float,
    last_polled: Mapping[int, float],
    default_interval: float,
) -> list[int]:
    """Indices of the points due at cycle time `now_s` (seconds, any epoch).

    A point is due when it was never polled, or when a boundary of its own interval grid
    (multiples of `poll_interval`, or `default_interval` if unset) lies between its last
    poll and now. Grid alignment keeps the average rate exact even when the point interval
    is not a multiple of the device cycle (7 s points on a 5 s device are read at 10, 15,
    25, 30, ... s). The grid is shifted back by half a device cycle so cycle jitter around
    a boundary cannot skip or double a read. Points faster than the device are read every
    cycle. Pass the scheduled cycle time, and record it in `last_polled` for points read.
    """
    slack = default_interval / 2
    due: list[int] = []
    for i, p in enumerate(points):
        last = last_polled.get(i)
        interval = p.poll_interval or default_interval
        if (
            last is None
            or interval <= default_interval
            or math.floor((now_s + slack) / interval) > math.floor((last + slack) / interval)
        ):
            due.append(i)
    return due


class _LastPlan(NamedTuple):
    """The last plan a `DeviceReadPlanner` made, with what it was made for."""

    due: tuple[int, ...]
    holes: frozenset[Hole]
    limits: tuple[int, int]  # (max_registers, max_bits)
    requests: tuple[ReadRequest, ...]


class PlanCache:
    """Plans for one device's point list, memoised by (due set, holes, limits).

    `plan` takes indices into the full point list and returns requests whose `points` are
    indices into the full list too. Bounded (least recently used entries go first).
    """

    def __init__(
        self,
        points: Sequence[PointConfig],
        *,
        max_bits: int = MAX_BITS,
        gap_fill: int,
        size: int = 64,
    ) -> None:
        self.points = tuple(points)
        self.max_bits = max_bits
        self.gap_fill = gap_fill
        self._size = size
        self._plans: OrderedDict[
            tuple[frozenset[int], frozenset[Hole], int, int], tuple[ReadRequest, ...]
        ] = OrderedDict()

    def plan(
        self,
        due: Iterable[int],
        *,
        holes: Collection[Hole] = frozenset(),
        max_registers: int,
        max_bits: int | None = None,
    ) -> list[ReadRequest]:
        """The plan for the `due` points (indices into the full list)."""
        bits = self.max_bits if max_bits is None else max_bits
        due_set = frozenset(due)
        key = (due_set, frozenset(holes), max_registers, bits)
        cached = self._plans.get(key)
        if cached is None:
            subset = sorted(due_set)
            planned = plan_reads(
                [self.points[i] for i in subset],
                max_registers=max_registers,
                max_bits=bits,
                gap_fill=self.gap_fill,
                holes=key[1],
            )
            cached = tuple(
                ReadRequest(r.table, r.start, r.count, tuple(subset[j] for j in r.points))
                for r in planned
            )
            self._plans[key] = cached
            if len(self._plans) > self._size:
                self._plans.popitem(last=False)
        else:
            self._plans.move_to_end(key)
        return list(cached)


# ---------------------------------------------------------------------------- adapting


def _slots(request: ReadRequest, points: Sequence[PointConfig]) -> list[tuple[int, int, list[int]]]:
    """The distinct address ranges of a request's points: (start, end, point indices)."""
    ranges: dict[tuple[int, int], list[int]] = {}
    for i in request.points:
        p = points[i]
        ranges.setdefault((p.address, p.address + p.register_count), []).append(i)
    return [(s, e, idx) for (s, e), idx in sorted(ranges.items())]


def split_failed_request(
    request: ReadRequest, points: Sequence[PointConfig]
) -> tuple[list[ReadRequest], frozenset[Hole]]:
    """After exception 02 on `request`: (pieces to try next, addresses now known holes).

    A request with several point ranges splits into its first half, a probe of the gap
    between the halves (if any) and its second half. A single point range with extra
    addresses around it splits into the point and probes of the extras. A request that is
    exactly one point range makes that range a hole (the point is unreadable); a gap probe
    bisects down to single registers, which become holes.
    """
    table = request.table
    slots = _slots(request, points)
    pieces: list[ReadRequest] = []
    if len(slots) >= 2:
        half = len(slots) // 2
        left, right = slots[:half], slots[half:]
        left_end = max(e for _, e, _ in left)
        right_start = right[0][0]
        pieces.append(_piece(table, left))
        if right_start > left_end:
            pieces.append(ReadRequest(table, left_end, right_start - left_end, ()))
        pieces.append(_piece(table, right))
        return pieces, frozenset()
    if len(slots) == 1:
        start, end, indices = slots[0]
        if (start, end) == (request.start, request.end):
            return [], frozenset((table, a) for a in range(start, end))
        if start > request.start:
            pieces.append(ReadRequest(table, request.start, start - request.start, ()))
        pieces.append(ReadRequest(table, start, end - start, tuple(indices)))
        if request.end > end:
            pieces.append(ReadRequest(table, end, request.end - end, ()))
        return pieces, frozenset()
    if request.count == 1:
        return [], frozenset({(table, request.start)})
    half = request.count // 2
    return [
        ReadRequest(table, request.start, half, ()),
        ReadRequest(table, request.start + half, request.count - half, ()),
    ], frozenset()


def _piece(table: Table, slots: list[tuple[int, int, list[int]]]) -> ReadRequest:
    start = slots[0][0]
    end = max(e for _, e, _ in slots)
    indices = tuple(sorted(i for _, _, idx in slots for i in idx))
    return ReadRequest(table, start, end - start, indices)


def _unverified_runs(
    table: Table, start: int, end: int, verified: AddressRuns
) -> list[ReadRequest]:
    """Probe requests for the maximal runs of [start, end) not in `verified`."""
    return [ReadRequest(table, a, b - a, ()) for a, b in verified.gaps(start, end)]


def lowered_limit(current: int, failed_count: int, widest: int) -> int:
    """The device maximum after it refused a `failed_count`-long read: half, not below `widest`.

    Halving from the shorter of the current maximum and the refused length converges in
    log2 steps and never drops below what the widest point needs.
    """
    return max(widest, min(current, failed_count) // 2)


class DeviceReadPlanner:
    """Per-device planning state: the plan cache, discovered holes and learned limits.

    Pure: the poller feeds it the outcome of each request and gets back the requests to
    try next; it never performs I/O or reads a clock. Holes last for the life of the object
    (a config reload builds a new one); lowered limits are tried again now and then (see
    the module docstring).
    """

    def __init__(
        self,
        points: Sequence[PointConfig],
        *,
        max_registers: int,
        max_bits: int = MAX_BITS,
        gap_fill: int,
        plans: PlanCache | None = None,
    ) -> None:
        """`plans`: a plan cache of the same points and gap fill, shared with other devices
        of the model (its key holds the holes and limits, so sharing is exact)."""
        self.points = tuple(points)
        self.max_registers = min(MAX_REGISTERS, max_registers)
        self.max_bits = min(MAX_BITS, max_bits)
        self.holes: frozenset[Hole] = frozenset()
        # Ranges read successfully, and the addresses they cover (for `probes`).
        self._verified_requests: set[tuple[Table, int, int]] = set()
        self._verified: dict[Table, AddressRuns] = {}
        self._quiet_for: tuple[frozenset[Hole], int, int] | None = None  # probes() == []
        # The exact register limit of a device that refuses long reads is searched for
        # between the longest read it answered and the shortest it refused (`_limit_probe`).
        self._longest_ok = 0
        self._shortest_refused: int | None = None
        self._limit_probe_sent: ReadRequest | None = None
        # (`_longest_ok`, registers verified) when no probe run was found: search again only
        # when either grows.
        self._no_run_for: tuple[int, int] | None = None
        self._checked: set[tuple[Table, int, int]] = set()  # reads `_unproven_read` sent
        # Re-trying lowered limits (`end_cycle`): the configured ones, healthy cycles since
        # the last lowering, the wait for the next try, whether a try is due, and the
        # probes of the try in flight.
        self._configured = (self.max_registers, self.max_bits)
        self._healthy_cycles = 0
        self._retry_after = LIMIT_RETRY_CYCLES
        self._retry_due = False
        self._retry_probes: set[ReadRequest] = set()
        self.gap_fill = gap_fill
        if plans is None:
            plans = PlanCache(self.points, max_bits=self.max_bits, gap_fill=gap_fill)
        elif plans.gap_fill != gap_fill or plans.points != self.points:
            raise ValueError("a shared plan cache must have the planner's points and gap fill")
        self._cache = plans
        self._last_plan: _LastPlan | None = None
        self._widest_registers = max(
            (p.register_count for p in self.points if not p.table.is_bit), default=1
        )
        # Fail at construction, not mid-poll, on a point no request can carry.
        plan_reads(
            self.points,
            max_registers=self.max_registers,
            max_bits=self.max_bits,
            gap_fill=gap_fill,
        )

    @property
    def unreadable(self) -> list[int]:
        """Indices of points that cover a discovered hole (the poller reports them BAD)."""
        return unreadable_points(self.points, self.holes)

    def plan(self, due: Iterable[int] | None = None) -> list[ReadRequest]:
        """Requests for the `due` point indices (all points if None), honouring what was learnt."""
        indices = range(len(self.points)) if due is None else due
        # A steady schedule asks for the same tuple every cycle: one comparison answers it
        # (the cache key would build and hash a frozenset of every due index).
        last = self._last_plan
        if (
            last is not None
            and last.due == indices
            and last.holes is self.holes
            and last.limits == (self.max_registers, self.max_bits)
        ):
            return list(last.requests)
        plan = self._cache.plan(
            indices, holes=self.holes, max_registers=self.max_registers, max_bits=self.max_bits
        )
        if isinstance(indices, tuple):
            self._last_plan = _LastPlan(
                indices, self.holes, (self.max_registers, self.max_bits), tuple(plan)
            )
        return plan

    def on_success(self, request: ReadRequest) -> None:
        """`request` was answered: its addresses are known readable."""
        if request.count > self._longest_ok and not request.table.is_bit:
            self._longest_ok = request.count
            if self._shortest_refused is not None and request.count > self.max_registers:
                self.max_registers = request.count  # a limit probe found a longer read works
        if self._retry_probes and request in self._retry_probes:
            self._retried(request, answered=True)
        key = (request.table, request.start, request.count)
        if key not in self._verified_requests:  # steady state: one set look-up
            self._verified_requests.add(key)
            self._verified.setdefault(request.table, AddressRuns()).add(request.start, request.end)

    def probes(self) -> list[ReadRequest]:
        """Gap registers some plan could read through that no answered request covered yet.

        Any plan, for any due subset, reads through gaps between consecutive points of at
        most `gap_fill` registers; the ones not yet verified by `on_success` are returned
        as probes (read them, discard the data, report them like any request). A step of
        the register-limit search goes first; once no gap is left, any plan read longer
        than the device ever answered is checked (`_unproven_read`). Call it at the end of
        every cycle and read until it returns []: after the first cycle it costs a cached
        check, and the device never sees exception 02 or 03 again.
        """
        limit_probe = self._limit_probe()
        if limit_probe is not None:
            return [limit_probe]
        if self._retry_due:
            self._retry_due = False
            retry = self._retry_reads()
            if retry:
                return retry
        key = (self.holes, self.max_registers, self.max_bits)
        if self._quiet_for == key:
            return []
        by_table = _holes_by_table(self.holes)
        unreadable = set(self.unreadable)
        result: list[ReadRequest] = []
        for table in Table:
            members = sorted(
                (p.address, p.address + p.register_count)
                for i, p in enumerate(self.points)
                if p.table is table and i not in unreadable
            )
            limit = _limit(table, self.max_registers, self.max_bits)
            fill = min(bit_gap_fill(self.gap_fill) if table.is_bit else self.gap_fill, limit - 2)
            verified = self._verified.get(table, AddressRuns())
            reach: int | None = None
            for start, end in members:
                if (
                    reach is not None
                    and 0 < start - reach <= fill
                    and not _has_hole(by_table.get(table, ()), reach, start)
                ):
                    result.extend(_unverified_runs(table, reach, start, verified))
                reach = end if reach is None else max(reach, end)
        if not result:
            result = self._unproven_read()
        if not result:
            self._quiet_for = key
        return result

    def _unproven_read(self) -> list[ReadRequest]:
        """A read of the full plan longer than any the device has answered, as a probe.

        Holes learnt in the first cycle re-pack the plan, which can then hold a read longer
        than anything the device was asked (a device capped at 86 first meets a 105-long
        read in the second cycle). Reading it now, data discarded, settles the limit in the
        first cycle: a refusal is treated like a refused limit probe (the maximum drops to
        the longest answered read and the search bisects up to the exact limit).
        """
        if self._longest_ok == 0:
            return []  # nothing answered yet: no limit to check against
        for request in self.plan():
            key = (request.table, request.start, request.count)
            if (
                not request.table.is_bit
                and request.count > self._longest_ok
                and key not in self._verified_requests
                and key not in self._checked
            ):
                # Each read is checked once: one that keeps failing (a timeout, exception
                # 04) costs its own failure every cycle, not a probe as well.
                self._checked.add(key)
                self._limit_probe_sent = ReadRequest(request.table, request.start,
                                                     request.count, ())  # fmt: skip
                return [self._limit_probe_sent]
        return []

    @property
    def configured_limits(self) -> tuple[int, int]:
        """(max_registers, max_bits) as configured, before anything was learnt."""
        return self._configured

    def is_limit_probe(self, request: ReadRequest) -> bool:
        """Is `request` a read `probes()` issued to find, check or re-try a read limit?

        Its refusal is expected (it narrows the search), not a failure to report.
        """
        return request == self._limit_probe_sent or request in self._retry_probes

    def _retry_reads(self) -> list[ReadRequest]:
        """Per lowered limit, the longest read of the plan at the configured one (a probe)."""
        configured_registers, configured_bits = self._configured
        plan = self._cache.plan(
            range(len(self.points)),
            holes=self.holes,
            max_registers=configured_registers,
            max_bits=configured_bits,
        )
        probes: list[ReadRequest] = []
        for is_bit, limit in ((False, self.max_registers), (True, self.max_bits)):
            longest = max(
                (r for r in plan if r.table.is_bit is is_bit and r.count > limit),
                key=lambda r: r.count,
                default=None,
            )
            if longest is not None:
                probes.append(ReadRequest(longest.table, longest.start, longest.count, ()))
        self._retry_probes = set(probes)
        return probes

    def _retried(self, probe: ReadRequest, *, answered: bool) -> None:
        """The outcome of a re-try probe: the configured limit is back, or wait longer."""
        self._retry_probes.discard(probe)
        if not answered:
            self._retry_after = min(2 * self._retry_after, LIMIT_RETRY_MAX_CYCLES)
            # A limit search stalled on a probe that got no verdict (a timeout) may step
            # again: `_limit_probe` does not repeat the probe it sent last.
            self._limit_probe_sent = None
            return
        self._retry_after = LIMIT_RETRY_CYCLES
        if probe.table.is_bit:
            self.max_bits = self._configured[1]
        else:
            self.max_registers = self._configured[0]
            self._shortest_refused = None
            self._limit_probe_sent = None

    def _limit_probe(self) -> ReadRequest | None:
        """A read of the length halfway between the longest answered and shortest refused.

        After a device refused a long read, halving the maximum gets it answering in a few
        steps but usually below its real limit (a device capped at 28 settles at 15 or 21),
        which costs extra requests every cycle for ever. Bisecting with probe reads over
        registers already read successfully finds the exact limit within the first cycle,
        so later cycles never see the refusal again.
        """
        refused, low = self._shortest_refused, self._longest_ok
        if refused is None or low == 0 or refused - low <= 1:  # every cycle: cheap checks first
            self._limit_probe_sent = None
            return None
        holding = self._verified.get(Table.HOLDING, AddressRuns())
        inputs = self._verified.get(Table.INPUT, AddressRuns())
        searched = (low, len(holding) + len(inputs))
        if self._no_run_for == searched:
            self._limit_probe_sent = None
            return None
        length = (low + refused) // 2
        start = holding.first_run_of(length)
        table = Table.HOLDING
        if start is None:
            start = inputs.first_run_of(length)
            table = Table.INPUT
        if start is None:
            # No run of known-readable registers that long: keep the maximum, and do not
            # search again until a longer read is answered or more registers are verified
            # (the first cycle's gap probes join up runs: the search then resumes at once,
            # so the limit is settled in the first cycle rather than a later one).
            self._no_run_for = searched
            self._limit_probe_sent = None
            return None
        probe = ReadRequest(table, start, length, ())
        if probe == self._limit_probe_sent:
            return None  # answered neither way (a timeout): do not loop on it
        self._limit_probe_sent = probe
        return probe

    def on_rejected(self, request: ReadRequest, code: int) -> list[ReadRequest]:
        """A Modbus exception answer to `request`: the requests to try instead (maybe none).

        02 splits the request to locate holes; 03/04 on a request longer than the widest
        point lowers the maximum and re-plans it; any other code (or 03/04 on a short
        read) is the device's verdict on those points: nothing to retry.
        """
        if code == _ILLEGAL_DATA_ADDRESS:
            pieces, new_holes = split_failed_request(request, self.points)
            if new_holes:
                self.holes = self.holes | new_holes
            return pieces
        if code in _TOO_LONG_CODES:
            return self._shorten(request)
        return []

    def end_cycle(self, *, healthy: bool) -> None:
        """A poll cycle of the device ended; `healthy`: it ran to its end with answers.

        After `_retry_after` healthy cycles without a refusal, the next `probes()` re-tries
        the lowered limits (see the module docstring).
        """
        self._retry_probes.clear()  # one that got no verdict (a timeout) is just dropped
        if not healthy or (self.max_registers, self.max_bits) == self._configured:
            return
        self._healthy_cycles += 1
        if self._healthy_cycles >= self._retry_after:
            self._healthy_cycles = 0
            self._retry_due = True

    def _shorten(self, request: ReadRequest) -> list[ReadRequest]:
        if self._retry_probes and request in self._retry_probes:
            self._retried(request, answered=False)  # the limit holds: nothing to change
            return []
        self._healthy_cycles = 0
        # A request planned before the last lowering is already over the new maximum: just
        # re-plan it, or one refusal would be counted twice.
        if request.table.is_bit:
            if request.count <= 1:
                return []
            if request.count <= self.max_bits:
                self.max_bits = lowered_limit(self.max_bits, request.count, 1)
        else:
            if request.count <= self._widest_registers:
                return []
            if self._shortest_refused is None or request.count < self._shortest_refused:
                self._shortest_refused = request.count
            if self._longest_ok >= request.count:
                self._longest_ok = 0  # the device changed its mind: search again from scratch
            if request == self._limit_probe_sent:
                if request.count <= self.max_registers:  # only what was answered is safe
                    self.max_registers = max(self._widest_registers, self._longest_ok)
                return []
            if request.count <= self.max_registers:
                self.max_registers = lowered_limit(
                    self.max_registers, request.count, self._widest_registers
                )
        if not request.points:
            return []  # a probe that was too long: `probes()` re-issues it shorter
        return [r for r in self.plan(request.points) if r.table is request.table]
