"""Modbus device simulator: simulated units served by a pymodbus server (TCP, RTU, RTU/TCP).

Used by tests, benchmarks and the demo::

    async with DeviceSimulator({1: meter_model, 2: inverter_model}) as sim:
        sim.unit(2).faults.silent = True
        sim.set_value(1, "voltage", 230.5)
        ...  # a client talks to 127.0.0.1:sim.port

Modes mirror the bus kinds of the config: ``"tcp"`` (MBAP framing on a TCP port),
``"rtu_over_tcp"`` (RTU framing with CRC on a TCP port, like a serial device server) and
``"rtu"`` (RTU on a serial port, e.g. one end of a socat pty pair). Several units on one
simulator behave like devices sharing an RS-485 line: a request for a unit id nobody
simulates gets no answer.

Why pymodbus' server is wrapped rather than used with its SimDevice datastore: the request
path needs per-request delays, exception injection, total silence and request counters,
which SimDevice cannot express (an unknown or failing unit always answers). So the server
gets a small context (`_SimContext`) that owns the whole request, and a request handler
that answers each request with the transaction id *it* carried: pymodbus' own handler
reads the id back from "the last request" after awaiting the datastore, which mislabels a
delayed answer once a newer request has arrived.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from types import TracebackType
from typing import Any, Literal

from pymodbus.constants import ExcCodes
from pymodbus.datastore import ModbusServerContext
from pymodbus.framer import FramerType
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.server import ModbusSerialServer, ModbusTcpServer
from pymodbus.server.requesthandler import ServerRequestHandler

from gatewayd.config.models import Config, DeviceModel, SerialBus, Table
from gatewayd.samples import Value
from gatewayd.sim.device_store import SimulatedUnit, UnitFaults, UnitStats, WireError

__all__ = ["DeviceSimulator", "SimMode", "SimulatedUnit", "UnitFaults", "UnitStats"]

SimMode = Literal["tcp", "rtu_over_tcp", "rtu"]

#: Function code → the table it touches.
_TABLE_OF_FUNCTION = {
    1: Table.COIL, 5: Table.COIL, 15: Table.COIL,
    2: Table.DISCRETE,
    3: Table.HOLDING, 6: Table.HOLDING, 16: Table.HOLDING, 22: Table.HOLDING, 23: Table.HOLDING,
    4: Table.INPUT,
}  # fmt: skip


class DeviceSimulator:
    """Serves `SimulatedUnit`s over Modbus TCP, RTU on a serial port, or RTU over TCP."""

    def __init__(
        self,
        units: Mapping[int, DeviceModel] | Iterable[SimulatedUnit],
        *,
        mode: SimMode = "tcp",
        host: str = "127.0.0.1",
        port: int = 0,
        serial_port: str | None = None,
        baudrate: int = 9600,
        parity: str = "N",
        bytesize: int = 8,
        stopbits: int = 1,
        clock: Callable[[], float] = time.monotonic,
        on_request: Callable[[int, int], None] | None = None,
    ) -> None:
        """`units` maps unit ids to models (or gives ready `SimulatedUnit`s); port 0 = any.

        `on_request(unit_id, function_code)` is called as each request arrives (before any
        turnaround), for tests and benchmarks that look at request timing or order.
        """
        if isinstance(units, Mapping):
            built = [SimulatedUnit(uid, model, clock=clock) for uid, model in units.items()]
        else:
            built = list(units)
        self._units = {unit.unit_id: unit for unit in built}
        if len(self._units) != len(built):
            raise ValueError("two simulated units share a unit id")
        if mode == "rtu" and not serial_port:
            raise ValueError("mode 'rtu' needs serial_port (e.g. one end of a socat pty pair)")
        self.mode = mode
        self.host = host
        self._port = port
        self.serial_port = serial_port
        self._serial = {
            "baudrate": baudrate,
            "parity": parity,
            "bytesize": bytesize,
            "stopbits": stopbits,
        }
        self._server: ModbusTcpServer | ModbusSerialServer | None = None
        self._context = _SimContext(self._units, on_request)

    @classmethod
    def from_config(
        cls, config: Config, bus: str, *, serial_port: str | None = None, **kwargs: Any
    ) -> DeviceSimulator:
        """Simulate every enabled device of `bus` in `config`, with its model and orders.

        TCP buses are served on the bus's host and port unless `host`/`port` are given;
        a serial bus needs `serial_port`, the *other* end of the line the gateway opens.
        """
        bus_config = next((b for b in config.buses if b.name == bus), None)
        if bus_config is None:
            raise KeyError(f"no bus named {bus!r} in the config")
        units = [
            SimulatedUnit(
                device.unit_id,
                config.models[device.model],
                byte_order=device.byte_order,
                word_order=device.word_order,
                clock=kwargs.get("clock", time.monotonic),
            )
            for device in config.devices
            if device.bus == bus and device.enabled
        ]
        if isinstance(bus_config, SerialBus):
            kwargs.setdefault("baudrate", bus_config.baudrate)
            kwargs.setdefault("parity", bus_config.parity.value)
            kwargs.setdefault("bytesize", bus_config.bytesize)
            kwargs.setdefault("stopbits", bus_config.stopbits)
            return cls(units, mode="rtu", serial_port=serial_port, **kwargs)
        kwargs.setdefault("host", bus_config.host)
        kwargs.setdefault("port", bus_config.port)
        return cls(units, mode=bus_config.type, **kwargs)

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        """Start serving; on TCP `port` is the bound port afterwards."""
        if self._server is not None:
            raise RuntimeError("simulator already started")
        server: ModbusTcpServer | ModbusSerialServer
        if self.mode == "rtu":
            assert self.serial_port is not None
            server = _SimSerialServer(
                self._context,
                framer=FramerType.RTU,
                port=self.serial_port,
                ignore_missing_devices=True,
                **self._serial,  # type: ignore[arg-type]
            )
        else:
            framer = FramerType.RTU if self.mode == "rtu_over_tcp" else FramerType.SOCKET
            server = _SimTcpServer(
                self._context,
                framer=framer,
                address=(self.host, self._port),
                ignore_missing_devices=True,
            )
        await server.serve_forever(background=True)
        self._server = server
        if self.mode != "rtu":
            sockets = server.transport.sockets  # type: ignore[attr-defined]
            self._port = int(sockets[0].getsockname()[1])

    async def stop(self) -> None:
        """Stop serving, drop client connections and pending answers."""
        server, self._server = self._server, None
        if server is None:
            return
        await self._context.cancel_pending()
        await server.shutdown()  # type: ignore[no-untyped-call]  # pymodbus leaves it untyped

    async def __aenter__(self) -> DeviceSimulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def port(self) -> int:
        """The TCP port served (the bound one once started with port 0)."""
        return self._port

    @property
    def running(self) -> bool:
        """True between `start` and `stop`."""
        return self._server is not None

    # ------------------------------------------------------------------ units

    @property
    def unit_ids(self) -> list[int]:
        """Unit ids served, ascending."""
        return sorted(self._units)

    def unit(self, unit_id: int) -> SimulatedUnit:
        """The simulated unit `unit_id` (its `faults`, `stats`, values)."""
        try:
            return self._units[unit_id]
        except KeyError:
            raise KeyError(f"no simulated unit {unit_id} (have {self.unit_ids})") from None

    def set_value(self, unit_id: int, measurepoint: str, value: Value) -> None:
        """Pin a point of a unit to `value` (see `SimulatedUnit.set_value`)."""
        self.unit(unit_id).set_value(measurepoint, value)

    def get_value(self, unit_id: int, measurepoint: str) -> Value:
        """A point's current value (see `SimulatedUnit.get_value`)."""
        return self.unit(unit_id).get_value(measurepoint)

    def faults(self, unit_id: int) -> UnitFaults:
        """The live fault knobs of a unit."""
        return self.unit(unit_id).faults

    def stats(self, unit_id: int) -> UnitStats:
        """The request/exception counters of a unit."""
        return self.unit(unit_id).stats

    def total_requests(self) -> int:
        """Requests seen by every unit together."""
        return sum(unit.stats.total_requests for unit in self._units.values())


# ---------------------------------------------------------------------- pymodbus glue


class _SimContext(ModbusServerContext):
    """The server's datastore: routes each request to its `SimulatedUnit`.

    It subclasses pymodbus' (deprecated) ModbusServerContext only to pass the server's type
    check; the server then calls `async_getValues`/`async_setValues` through the request
    PDUs, and `_SimRequestHandler` calls `answer` for the whole request.
    """

    def __init__(
        self, units: Mapping[int, SimulatedUnit], on_request: Callable[[int, int], None] | None
    ) -> None:
        # Deliberately not calling super().__init__: it only logs a deprecation warning and
        # wraps device contexts we do not use.
        self._units = units
        self._on_request = on_request
        self.old_simulator = True  # tells the server to use this object as is
        self.simdevices = []
        self._pending: set[asyncio.Task[None]] = set()

    def device_ids(self) -> list[int]:
        """Unit ids served."""
        return list(self._units)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run one answer in the background (a slow unit must not block the server)."""
        task = asyncio.get_running_loop().create_task(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def cancel_pending(self) -> None:
        """Cancel answers still waiting out their turnaround."""
        tasks = list(self._pending)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def answer(self, request: ModbusPDU) -> ModbusPDU | None:
        """The response to `request`, or None when the unit stays silent."""
        if self._on_request is not None:
            self._on_request(request.dev_id, request.function_code)
        unit = self._units.get(request.dev_id)
        if unit is None:
            return None  # nobody on the line has this id
        unit.stats.requests[request.function_code] += 1
        if unit.faults.silent:
            return None
        if unit.faults.turnaround > 0:
            # Simulated device think time (timing, not synchronisation).
            await asyncio.sleep(unit.faults.turnaround)
        response: ModbusPDU = await request.datastore_update(self, request.dev_id)
        if isinstance(response, ExceptionResponse):
            unit.stats.exceptions[int(response.exception_code)] += 1
        unit.stats.answers += 1  # the caller sends it without yielding to the loop first
        return response

    async def async_getValues(  # noqa: N802 - pymodbus' datastore method name
        self, device_id: int, func_code: int, address: int, count: int = 1
    ) -> list[int] | list[bool] | ExcCodes:
        """Read from a unit's table; Modbus exceptions come back as `ExcCodes`."""
        table = _TABLE_OF_FUNCTION.get(func_code)
        if table is None:
            return ExcCodes.ILLEGAL_FUNCTION
        try:
            words = self._units[device_id].wire_read(table, address, count)
        except WireError as exc:
            return ExcCodes(exc.code)
        return [bool(word) for word in words] if table.is_bit else words

    async def async_setValues(  # noqa: N802 - pymodbus' datastore method name
        self,
        device_id: int,
        func_code: int,
        address: int,
        values: Sequence[int] | Sequence[bool],
    ) -> ExcCodes | None:
        """Write to a unit's coils/holding registers (the only tables FC5/6/15/16 reach)."""
        table = _TABLE_OF_FUNCTION.get(func_code)
        if table is None or table in (Table.DISCRETE, Table.INPUT):
            return ExcCodes.ILLEGAL_FUNCTION
        try:
            self._units[device_id].wire_write(table, address, [int(v) for v in values])
        except WireError as exc:
            return ExcCodes(exc.code)
        return None


class _SimRequestHandler(ServerRequestHandler):
    """Answers each request with the ids it came with, however late the answer is."""

    def handle_later(self) -> None:
        """Take the just-decoded request now and answer it in its own task."""
        request, addr = self.last_pdu, self.last_addr
        if request is None:
            return
        context: _SimContext = self.server.context
        context.spawn(self._answer(context, request, addr))

    async def _answer(
        self, context: _SimContext, request: ModbusPDU, addr: tuple[Any, ...] | None
    ) -> None:
        response = await context.answer(request)
        if response is None or not self.transport:
            return
        response.transaction_id = request.transaction_id
        response.dev_id = request.dev_id
        self.server_send(response, addr)  # type: ignore[no-untyped-call]  # untyped upstream


class _SimTcpServer(ModbusTcpServer):
    """pymodbus TCP server (MBAP or RTU framing) with the simulator's request handler."""

    def callback_new_connection(self) -> _SimRequestHandler:
        """Handle a new client connection with `_SimRequestHandler`."""
        return _SimRequestHandler(  # type: ignore[no-untyped-call]  # untyped upstream __init__
            self, self.trace_packet, self.trace_pdu, self.trace_connect
        )


class _SimSerialServer(ModbusSerialServer):
    """pymodbus serial RTU server with the simulator's request handler."""

    def callback_new_connection(self) -> _SimRequestHandler:
        """Handle the opened serial port with `_SimRequestHandler`."""
        return _SimRequestHandler(  # type: ignore[no-untyped-call]  # untyped upstream __init__
            self, self.trace_packet, self.trace_pdu, self.trace_connect
        )
