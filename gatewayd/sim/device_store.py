"""One simulated Modbus device: its four tables, moving values, fault knobs and counters.

No I/O and no pymodbus here: `SimulatedUnit.wire_read` / `wire_write` are what a request
does to the device, `set_value` / `get_value` are what a test does. Values are turned into
registers by the project's own codec (`gatewayd.modbus.codec`) with the device's byte and
word orders, so the simulator speaks exactly the layout the gateway will decode.

Every address 0..65535 of every table is readable (unmapped ones read 0, as on most
devices), except the configured `holes`, which answer exception 02 like a device with a
sparse register map.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from gatewayd.config.models import DeviceModel, Order, PointConfig, Table
from gatewayd.modbus import codec
from gatewayd.modbus.errors import ILLEGAL_DATA_ADDRESS, ILLEGAL_DATA_VALUE
from gatewayd.samples import Value
from gatewayd.sim.device_motion import Motion, default_motion, value_at

__all__ = ["SimulatedUnit", "UnitFaults", "UnitStats", "WireError"]


class WireError(Exception):
    """A request the device answers with a Modbus exception `code`."""

    def __init__(self, code: int) -> None:
        self.code = code
        super().__init__(f"Modbus exception {code}")


@dataclass
class UnitFaults:
    """Misbehaviour knobs; change them any time, the next request sees the change."""

    turnaround: float = 0.0  # seconds the device "thinks" before answering
    holes: set[tuple[Table, int]] = field(default_factory=set)  # answer exception 02
    max_registers: int | None = None  # longer register reads answer exception 03
    silent: bool = False  # no answer at all

    def add_holes(self, table: Table, addresses: Iterable[int]) -> None:
        """Make `addresses` of `table` unreadable (exception 02)."""
        self.holes.update((table, address) for address in addresses)


@dataclass
class UnitStats:
    """What the device saw: requests per function code, answers, exceptions sent per code."""

    requests: Counter[int] = field(default_factory=Counter)
    exceptions: Counter[int] = field(default_factory=Counter)
    answers: int = 0  # responses sent, exception responses included

    @property
    def total_requests(self) -> int:
        """All requests addressed to this unit, answered or not."""
        return sum(self.requests.values())

    @property
    def exception_02(self) -> int:
        """Exception 02 (illegal data address) replies sent."""
        return self.exceptions[ILLEGAL_DATA_ADDRESS]

    def reset(self) -> None:
        """Start counting from zero (e.g. after a warm-up cycle)."""
        self.requests.clear()
        self.exceptions.clear()
        self.answers = 0


class SimulatedUnit:
    """One unit id built from a `DeviceModel`, with values moving on an injected clock.

    `clock` returns seconds (monotonic); motion time is `clock() - clock()@creation`, so a
    test that passes a settable clock gets fully deterministic values. A point pinned with
    `set_value` (or written from the wire) keeps its value until `release` is called.
    """

    def __init__(
        self,
        unit_id: int,
        model: DeviceModel,
        *,
        byte_order: Order | None = None,
        word_order: Order | None = None,
        motions: Mapping[str, Motion] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.unit_id = unit_id
        self.model = model
        self.byte_order = byte_order
        self.word_order = word_order
        self.faults = UnitFaults()
        self.stats = UnitStats()
        self._clock = clock
        self._t0 = clock()
        self._tables: dict[Table, dict[int, int]] = {table: {} for table in Table}
        self._points = {point.measurepoint: point for point in model.points}
        unknown = set(motions or {}) - set(self._points)
        if unknown:
            raise ValueError(f"motions for unknown measurepoints: {sorted(unknown)}")
        self._motions = {
            name: (motions or {}).get(name, default_motion(point))
            for name, point in self._points.items()
        }
        self._pinned: set[str] = set()
        self._by_table: dict[Table, list[PointConfig]] = {table: [] for table in Table}
        for point in model.points:
            self._by_table[point.table].append(point)
        self._refresh(self._points.values(), 0.0, force=True)

    # ------------------------------------------------------------------ test side

    def set_value(self, measurepoint: str, value: Value) -> None:
        """Pin `measurepoint` to `value` (engineering units), encoded with the codec."""
        point = self._point(measurepoint)
        self._store(point, value)
        self._pinned.add(measurepoint)

    def get_value(self, measurepoint: str) -> Value:
        """The value the device would report now, decoded from its registers."""
        point = self._point(measurepoint)
        self._refresh([point], self._now())
        byte_order, word_order = self.orders(point)
        return codec.decode(point, self._words(point), byte_order=byte_order, word_order=word_order)

    def release(self, measurepoint: str) -> None:
        """Let a pinned point move again."""
        self._point(measurepoint)
        self._pinned.discard(measurepoint)

    def registers(self, table: Table, address: int, count: int) -> list[int]:
        """Raw table content as it stands (no refresh, no faults): for assertions."""
        data = self._tables[table]
        return [data.get(address + i, 0) for i in range(count)]

    def orders(self, point: PointConfig) -> tuple[Order, Order]:
        """(byte_order, word_order) of `point`: point > device override > model."""
        return (
            point.byte_order or self.byte_order or self.model.byte_order,
            point.word_order or self.word_order or self.model.word_order,
        )

    # ------------------------------------------------------------------ wire side

    def wire_read(self, table: Table, address: int, count: int) -> list[int]:
        """What a read request returns; raises `WireError` for holes and long reads."""
        if not table.is_bit and self.faults.max_registers and count > self.faults.max_registers:
            raise WireError(ILLEGAL_DATA_VALUE)
        self._check_holes(table, address, count)
        end = address + count
        self._refresh((p for p in self._by_table[table] if _overlaps(p, address, end)), self._now())
        return self.registers(table, address, count)

    def wire_write(self, table: Table, address: int, values: list[int]) -> None:
        """What a write request does: store the words and pin every point they touch."""
        self._check_holes(table, address, len(values))
        data = self._tables[table]
        for offset, value in enumerate(values):
            data[address + offset] = int(value)
        end = address + len(values)
        self._pinned.update(
            p.measurepoint for p in self._by_table[table] if _overlaps(p, address, end)
        )

    # ------------------------------------------------------------------ internals

    def _now(self) -> float:
        return self._clock() - self._t0

    def _point(self, measurepoint: str) -> PointConfig:
        try:
            return self._points[measurepoint]
        except KeyError:
            raise KeyError(
                f"unit {self.unit_id} ({self.model.name}) has no measurepoint {measurepoint!r}"
            ) from None

    def _check_holes(self, table: Table, address: int, count: int) -> None:
        holes = self.faults.holes
        if holes and any((table, address + i) in holes for i in range(count)):
            raise WireError(ILLEGAL_DATA_ADDRESS)

    def _refresh(self, points: Iterable[PointConfig], t: float, *, force: bool = False) -> None:
        for point in points:
            name = point.measurepoint
            if name in self._pinned or (self._motions[name] is Motion.FIXED and not force):
                continue
            self._store(point, value_at(point, self._motions[name], t))

    def _store(self, point: PointConfig, value: Value) -> None:
        byte_order, word_order = self.orders(point)
        current = self._tables[point.table].get(point.address, 0)
        words = codec.encode(
            point, value, byte_order=byte_order, word_order=word_order, current=current
        )
        data = self._tables[point.table]
        for offset, word in enumerate(words):
            data[point.address + offset] = word

    def _words(self, point: PointConfig) -> list[int]:
        return self.registers(point.table, point.address, point.register_count)


def _overlaps(point: PointConfig, start: int, end: int) -> bool:
    return point.address < end and start < point.address + point.register_count
