"""A fake `ModbusClient` for virtual-time tests: devices as register dicts, faults as knobs.

Every delay (answer latency, timeouts) is a `VirtualClock.sleep`, so schedules, timeouts
and backoff run in virtual time. Shipped with the package (the httpx habit) so the command
layer can test against it too; integration tests use the real simulator instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gatewayd.clock import VirtualClock
from gatewayd.config.models import Table
from gatewayd.modbus.errors import BusUnavailable, DeviceRejected, DeviceTimeout


@dataclass
class FakeUnit:
    """One fake device: registers by (table, address) and fault knobs."""

    registers: dict[tuple[Table, int], int] = field(default_factory=dict)
    silent: bool = False
    latency: float = 0.01
    holes: set[tuple[Table, int]] = field(default_factory=set)
    max_registers: int = 125


@dataclass(frozen=True)
class Request:
    """One request seen by the fake bus."""

    t: float  # virtual monotonic time it was sent
    unit: int
    kind: str  # "read" or "write"
    table: Table
    address: int
    count: int
    values: tuple[int, ...] = ()
    multiple: bool = False


class FakeBus:
    """Implements the `ModbusClient` protocol over `FakeUnit`s in virtual time."""

    def __init__(self, clock: VirtualClock) -> None:
        self.clock = clock
        self.units: dict[int, FakeUnit] = {}
        self.requests: list[Request] = []
        self.refuse_connect = False
        self.connect_attempts: list[float] = []
        self._connected = False

    @property
    def connected(self) -> bool:
        """True while 'connected'."""
        return self._connected

    async def connect(self) -> None:
        """Connect unless `refuse_connect`."""
        self.connect_attempts.append(self.clock.monotonic())
        if self.refuse_connect:
            raise BusUnavailable("connection refused")
        self._connected = True

    async def close(self) -> None:
        """Disconnect."""
        self._connected = False

    def drop(self) -> None:
        """Simulate the link going away."""
        self._connected = False

    async def read(
        self, unit: int, table: Table, address: int, count: int, *, timeout: float
    ) -> list[int]:
        """Answer from the unit's registers after its latency, or time out."""
        self.requests.append(Request(self.clock.monotonic(), unit, "read", table, address, count))
        if not self._connected:
            raise BusUnavailable("not connected")
        device = self.units.get(unit)
        if device is None or device.silent:
            await self.clock.sleep(timeout)
            raise DeviceTimeout(f"unit {unit}: no answer within {timeout}s")
        await self.clock.sleep(device.latency)
        if count > device.max_registers:
            raise DeviceRejected(3)
        if any((table, a) in device.holes for a in range(address, address + count)):
            raise DeviceRejected(2)
        return [device.registers.get((table, a), 0) for a in range(address, address + count)]

    async def write(
        self,
        unit: int,
        table: Table,
        address: int,
        values: list[int],
        *,
        timeout: float,
        multiple: bool,
    ) -> None:
        """Store values after the unit's latency, or time out."""
        self.requests.append(
            Request(self.clock.monotonic(), unit, "write", table, address, len(values),
                    tuple(values), multiple)
        )
        device = self.units.get(unit)
        if device is None or device.silent:
            await self.clock.sleep(timeout)
            raise DeviceTimeout("no answer")
        await self.clock.sleep(device.latency)
        for offset, value in enumerate(values):
            device.registers[(table, address + offset)] = value

    def reads_of(self, unit: int) -> list[Request]:
        """Read requests sent to `unit`."""
        return [r for r in self.requests if r.unit == unit and r.kind == "read"]
