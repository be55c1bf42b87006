"""The pymodbus seam: one small async client API for every bus kind, with our own errors.

This is the only client-side module that imports pymodbus. Everything above it (the bus
poller, the `read` command, command writes) talks to the `ModbusClient` protocol and sees
only `DeviceTimeout` (and its kind `DeviceProtocolError`), `DeviceRejected(code)` and
`BusUnavailable`.

How pymodbus 3.16 is tamed here (read from its source, `transaction/transaction.py` and
`transport/transport.py`):

- **Per-request timeouts.** pymodbus has one timeout per client (`comm_params
  .timeout_connect`, copied into its transaction manager) and counts unanswered requests,
  closing a TCP connection after `retries + 3` of them. Devices on one bus have different
  timeouts, and one silent unit behind a gateway must not drop the connection for the
  others. So pymodbus' own timeout is switched off, its no-response counter is disabled,
  and each request (and connect) is bounded here with `asyncio.timeout`. Off means
  `ctx.comm_params.timeout_connect = None` once the client is built: pymodbus passes it to
  `asyncio.wait_for`, which then is a plain await. Each request saves a timer, a waiter
  future and a loop turn, about as much CPU as the rest of our own per-request code.
  Cancelling a pending pymodbus request is safe: its lock is released by the cancellation
  and the next request gets a fresh response future and a new transaction id; on TCP a late
  answer carries the old transaction id and pymodbus' framer skips it. RTU frames carry no
  transaction id: a late answer that arrives before the next request is sent is dropped,
  one from another unit is skipped by its unit id, one with the wrong function code is a
  `DeviceTimeout` here; only a late answer of the same unit and shape landing while the
  next request waits is indistinguishable (inherent to RTU: keep timeouts above the
  device's turnaround).
- **Retries** are off (`retries=0`): the poller does bounded retries with its own policy.
- **Reconnects** are off (`reconnect_delay=0`): the poller reconnects with backoff. A lost
  connection is noticed through pymodbus' `trace_connect` hook, which fails the request in
  flight at once with `BusUnavailable` instead of letting it run into its timeout.
- **RS-485 inter-frame delay.** pymodbus' RTU framer does not enforce the 3.5 character
  silence, so the client keeps at least `inter_frame_delay(bus)` between the last byte
  received and the next request on serial and RTU-over-TCP buses (monotonic clock). The
  silence is counted from the moment the bytes reached us (pymodbus' `trace_packet` hook,
  called from `data_received`), not from when the waiting task resumed: the decoding and
  task switches in between are silence on the line too, and counting them twice cost
  ~1.5 ms per request at 115200 baud (B4). Reception is never earlier than the end of
  the last character on the wire, so the rule still holds with margin. After a request
  that got no byte back, the silence is counted from the timeout (the device may still
  be answering). The wait itself uses a `FineTimer` (timerfd): asyncio's own timers
  round up to whole milliseconds, which cost another ~0.7 ms per request at 115200.
- **Register answers.** pymodbus' FC3/FC4 answers unpack one `struct` call per register
  and build a full text of the PDU (every register in decimal) for a debug line on every
  answer, whatever the log level: together about as much CPU as the rest of a request. The
  client registers `RegistersAnswer` subclasses (pymodbus' public `register` for custom
  responses) that unpack the whole answer in one call and describe themselves briefly.
- **Receive buffer.** asyncio's socket transport reads into a fresh 256 KiB buffer
  (`max_size`) on every readable event; glibc served that with an mmap, a shrinking
  mremap and an munmap per answer in the daemon (three syscalls and a page fault per
  request, measured with strace). A Modbus ADU is at most 260 bytes, so the client sets
  the connection's `max_size` to `_RECV_BYTES`; bigger bursts are read in several calls.
- **Cancellations.** pymodbus waits for each answer with `asyncio.wait_for`, which on
  Python 3.11 drops a cancellation that lands in the same loop turn as the answer: the
  poller being stopped would keep polling. Requests and connects run under
  `KeepingCancels` (`gatewayd.cancels`), which raises such a cancellation again.
- **Open errors.** pymodbus' connect turns an OSError into a bare False, and lets a
  termios.error (a tty driver refusing a setting: Linux ptys refuse parity) escape. The
  client wraps pymodbus' transport factory to keep the OSError, catches termios.error and
  pyserial's ValueError too, and raises one `BusUnavailable` naming the port, the line
  setting and the reason: the poller retries it like a refused TCP connect.
- **Sound answers only.** An answer is used only when its unit id, transaction id (TCP),
  function code, byte count and length all match the request exactly; anything else is
  `DeviceProtocolError` and nothing of it is used. pymodbus checks less: it took a
  transaction id 0, bytes after the frame, an odd register byte count (2N+1 bytes as N
  registers) and a coil byte count above ceil(count / 8) (the extra bits as values), and a
  byte count longer than the frame raised out of `data_received`, so asyncio closed the
  connection (every unit behind a gateway). The client's answer classes (`_FastRegisters`,
  `_CountedBits`) never raise and keep the byte count; `_on_data` wraps pymodbus'
  framing of the receive buffer to catch decode errors and measure the answer's frame;
  `_check_answer` compares. All of it is a few comparisons per request. Frames for another
  unit or transaction are skipped by pymodbus and end in a timeout that says so. On RTU a
  frame must be the whole receive buffer (no garbage before, no bytes after); bytes that
  arrive in a later read after a sound frame cannot be told from a next frame and are
  dropped when the next request is sent (inherent to RTU without timing the 3.5-character
  silence).
- **Logs.** pymodbus logs through stdlib `logging` ("pymodbus.logging"), an ERROR with a
  hex dump of its last frames (up to ~1.7 kB) for every bad answer. Every such failure
  surfaces here as our own error, which the poller logs once per episode, so a filter
  (`_LibraryEchoes`) keeps pymodbus' records out unless gatewayd logs at debug, where
  they come as one short debug line each.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import termios
import time
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from typing import Any, Protocol

from pymodbus.client import AsyncModbusSerialClient, AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException
from pymodbus.framer import FramerType
from pymodbus.pdu import ExceptionResponse, ModbusPDU
from pymodbus.pdu.bit_message import ReadCoilsResponse, ReadDiscreteInputsResponse
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersResponse,
    ReadInputRegistersResponse,
)
from pymodbus.pdu.utils import unpack_bitstring

from gatewayd.cancels import KeepingCancels
from gatewayd.config.models import BusConfig, RtuOverTcpBus, SerialBus, Table, TcpBus
from gatewayd.modbus.errors import (
    BusUnavailable,
    DeviceProtocolError,
    DeviceRejected,
    DeviceTimeout,
)
from gatewayd.modbus.finetimer import FineTimer

__all__ = [
    "MAX_READ_BITS",
    "MAX_READ_REGISTERS",
    "MAX_WRITE_BITS",
    "MAX_WRITE_REGISTERS",
    "ModbusClient",
    "PymodbusClient",
    "char_time",
    "inter_frame_delay",
    "make_client",
]

#: Protocol limits per request (Modbus application protocol v1.1b3, §6).
MAX_READ_REGISTERS = 125
MAX_READ_BITS = 2000
MAX_WRITE_REGISTERS = 123
MAX_WRITE_BITS = 1968

#: Bits on the wire per RTU character: start + 8 data + parity-or-second-stop + stop.
BITS_PER_CHAR = 11
#: The spec's fixed inter-frame silence above 19200 baud (character timing gets too short).
FAST_INTER_FRAME_DELAY = 0.00175

#: pymodbus' timeout at construction; only the serial port keeps it (see `connect`).
_BACKSTOP_TIMEOUT = 3600.0
#: Unanswered requests pymodbus tolerates before closing a TCP connection: effectively never.
_NEVER_DISCONNECT = 1 << 30

#: What opening or configuring a port or socket raises: the OS (pyserial's SerialException
#: is an OSError), the tty driver refusing a setting (termios.error), pyserial refusing a
#: value it cannot apply (ValueError, e.g. a custom baud rate the driver rejects).
_OPEN_ERRORS: tuple[type[Exception], ...] = (OSError, termios.error, ValueError)

_READ_FUNCTION = {Table.COIL: 1, Table.DISCRETE: 2, Table.HOLDING: 3, Table.INPUT: 4}


class _LibraryEchoes(logging.Filter):
    """Keeps pymodbus' failure records out of the log unless gatewayd logs at debug.

    Every failure pymodbus logs (a skipped frame, an undecodable answer, a stray PDU) also
    reaches the request that was waiting, as our own error, and the poller logs that once
    per episode with one "recovered" line. pymodbus' own record comes on every bad answer,
    ERROR level, with a hex dump of its last frames (0.5-1.7 kB each seen): a device
    answering garbage every second would flood the journal. At debug the records pass,
    demoted to DEBUG and cut to one short line.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not logging.getLogger("gatewayd").isEnabledFor(logging.DEBUG):
            return False
        text = record.getMessage().split("\n", 1)[0]
        record.msg, record.args = text[:_ECHO_CHARS], None
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return True


#: Characters of a pymodbus record kept at debug (its hex dumps are cut off).
_ECHO_CHARS = 200

# pymodbus logs through "pymodbus.logging" (its `Log` class); a filter on a parent logger
# does not see a child's records, so both get it.
for _name in ("pymodbus", "pymodbus.logging"):
    logging.getLogger(_name).addFilter(_LibraryEchoes())


#: Bytes asyncio reads per readable event on a Modbus connection (an ADU is <= 260 bytes).
_RECV_BYTES = 4096

#: Big-endian layouts of n registers, n = 0..127 (an answer's byte count is one byte).
_REGISTER_LAYOUTS = tuple(struct.Struct(f">{n}H") for n in range(128))


class _FastRegisters:
    """Mixin for pymodbus' register answers: one `struct` call, a short description.

    An unsound answer (a byte count that is odd or disagrees with the bytes that follow)
    decodes to no registers and `sound = False` instead of raising: pymodbus would let the
    error escape from `data_received`, and asyncio would close the connection (every unit
    behind a gateway with it). `PymodbusClient.read` turns it into `DeviceProtocolError`.
    """

    function_code: int
    dev_id: int
    transaction_id: int
    registers: Sequence[int]
    byte_count = -1
    sound = False

    def decode(self, data: bytes) -> None:
        """The registers of an FC3/FC4 answer (`data` starts at its byte count)."""
        byte_count = self.byte_count = data[0] if data else -1
        if len(data) != byte_count + 1 or byte_count & 1:
            self.sound = False
            self.registers = []
            return
        self.sound = True
        self.registers = list(_REGISTER_LAYOUTS[byte_count >> 1].unpack_from(data, 1))

    def __str__(self) -> str:
        # pymodbus formats this for a debug line on every answer, enabled or not.
        return (
            f"{type(self).__name__}(dev_id={self.dev_id}, "
            f"transaction_id={self.transaction_id}, {len(self.registers)} registers)"
        )


class HoldingRegistersAnswer(_FastRegisters, ReadHoldingRegistersResponse):
    """FC3 answer, decoded in one call (see the module docstring)."""


class InputRegistersAnswer(_FastRegisters, ReadInputRegistersResponse):
    """FC4 answer, decoded in one call (see the module docstring)."""


class _CountedBits:
    """Mixin for pymodbus' FC1/FC2 answers: keeps the byte count, never raises.

    pymodbus unpacks every byte that follows, so a byte count above ceil(count / 8) became
    extra values; `PymodbusClient.read` compares the count with the request instead.
    """

    bits: Sequence[bool]
    byte_count = -1
    sound = False

    def decode(self, data: bytes) -> None:
        """The bits of an FC1/FC2 answer (`data` starts at its byte count)."""
        byte_count = self.byte_count = data[0] if data else -1
        self.sound = bool(data) and len(data) == byte_count + 1
        self.bits = unpack_bitstring(data[1:]) if self.sound else []


class CoilsAnswer(_CountedBits, ReadCoilsResponse):
    """FC1 answer that keeps its byte count (see `_CountedBits`)."""


class DiscreteInputsAnswer(_CountedBits, ReadDiscreteInputsResponse):
    """FC2 answer that keeps its byte count (see `_CountedBits`)."""


class _UnsoundAnswer(ModbusException):
    """An answer pymodbus could not decode, handed to the waiting request (not raised)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


#: Bytes of an ADU around its PDU: MBAP header (7) on TCP, unit and CRC (3) on RTU.
_TCP_FRAMING = 7
_RTU_FRAMING = 3
#: PDU length of an exception answer (function | 0x80, code) and of FC5/6/15/16 answers.
_EXCEPTION_PDU = 2
_WRITE_PDU = 5


class ModbusClient(Protocol):
    """What the poller needs from a bus: connect, read, write, close; our errors only.

    One task owns a client and serialises its requests; the client is not safe for
    concurrent requests (Modbus RTU is one request at a time on the wire anyway).
    """

    @property
    def connected(self) -> bool:
        """True while the TCP connection / serial port is open."""
        ...

    async def connect(self) -> None:
        """Open the connection or port; raises `BusUnavailable` if it cannot."""
        ...

    async def close(self) -> None:
        """Close the connection or port (idempotent)."""
        ...

    async def read(
        self, unit: int, table: Table, address: int, count: int, *, timeout: float
    ) -> list[int]:
        """Read `count` registers (0..65535) or bits (0/1) starting at `address`."""
        ...

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
        """Write coils (FC5/FC15) or holding registers (FC6/FC16) starting at `address`."""
        ...


def char_time(baudrate: int) -> float:
    """Seconds one RTU character (11 bits) takes on the wire at `baudrate`."""
    return BITS_PER_CHAR / baudrate


def inter_frame_delay(bus: BusConfig) -> float:
    """Silence to keep between frames on `bus`: 3.5 characters, 1.75 ms above 19200 baud.

    Modbus TCP has no such gap (0). A serial bus may configure its own delay; RTU over TCP
    uses the automatic value at the serial side's baud rate (many serial device servers
    forward bytes as they come, so the gap we leave is the gap the line sees).
    """
    if isinstance(bus, TcpBus):
        return 0.0
    if isinstance(bus, SerialBus) and bus.inter_frame_delay != "auto":
        return float(bus.inter_frame_delay)
    if bus.baudrate > 19200:
        return FAST_INTER_FRAME_DELAY
    return 3.5 * char_time(bus.baudrate)


def make_client(bus: BusConfig, *, connect_timeout: float | None = None) -> ModbusClient:
    """The client for `bus`; `connect_timeout` defaults to the bus timeout (at least 1 s)."""
    return PymodbusClient(bus, connect_timeout=connect_timeout)


class PymodbusClient:
    """`ModbusClient` over pymodbus' async TCP / serial clients (see the module docstring)."""

    def __init__(self, bus: BusConfig, *, connect_timeout: float | None = None) -> None:
        self.bus = bus
        self._connect_timeout = connect_timeout or max(bus.timeout, 1.0)
        self._gap = inter_frame_delay(bus)
        self._ready_at = 0.0  # monotonic time before which no new frame may start
        self._last_rx = float("-inf")  # monotonic time the latest bytes arrived
        self._timer = FineTimer()
        self._lost = asyncio.Event()
        self._scope: asyncio.Timeout | None = None  # the waiting request's, see `_bounded`
        self._in_flight = False
        self._late_answers = 0
        # What framed the last answer (see `_on_data`): its ADU length, bytes after it in
        # the same receive buffer, and bytes dropped while the request waited.
        self._framing = _TCP_FRAMING if isinstance(bus, TcpBus) else _RTU_FRAMING
        self._answer_len = 0
        self._answer_trailing = 0
        self._stray_bytes = 0
        self._sent_tid = 0
        self._pymodbus_callback_data: Callable[..., int] | None = None
        # Built at the first connect: pymodbus clients bind to the running event loop.
        self._client: AsyncModbusTcpClient | AsyncModbusSerialClient | None = None
        self._readers: dict[Table, Callable[..., Awaitable[Any]]] = {}  # per table, at build
        self._open_error: BaseException | None = None  # why the last connect failed

    def _build(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        common: dict[str, Any] = {
            "name": self.bus.name,
            "retries": 0,
            "reconnect_delay": 0,  # 0 disables pymodbus' reconnect loop
            "timeout": _BACKSTOP_TIMEOUT,
            "trace_connect": self._on_connection_change,
            "trace_pdu": self._on_pdu,
            "trace_packet": self._on_packet,
        }
        bus = self.bus
        if isinstance(bus, SerialBus):
            return AsyncModbusSerialClient(
                bus.device,
                framer=FramerType.RTU,
                baudrate=bus.baudrate,
                parity=bus.parity.value,
                bytesize=bus.bytesize,
                stopbits=bus.stopbits,
                **common,
            )
        framer = FramerType.RTU if isinstance(bus, RtuOverTcpBus) else FramerType.SOCKET
        return AsyncModbusTcpClient(bus.host, port=bus.port, framer=framer, **common)

    def _on_connection_change(self, connected: bool) -> None:
        if not connected:
            self._lost.set()
            if self._scope is not None:  # end the waiting request now (see `_bounded`)
                self._scope.reschedule(asyncio.get_running_loop().time())

    def _on_packet(self, sending: bool, data: bytes) -> bytes:
        # Called synchronously from pymodbus' data_received: the earliest we see the bytes.
        if not sending and data:
            self._last_rx = time.monotonic()
        return data

    def _on_pdu(self, sending: bool, pdu: ModbusPDU) -> ModbusPDU:
        if sending:
            self._sent_tid = pdu.transaction_id
        elif not self._in_flight:
            self._late_answers += 1  # pymodbus drops it: no request is waiting
        return pdu

    def _on_data(self, data: bytes, addr: tuple[Any, ...] | None = None) -> int:
        """pymodbus' `callback_data` (its framing of the receive buffer), guarded and measured.

        Guarded: pymodbus raises out of `data_received` on a frame it cannot decode, and
        asyncio then closes the connection, which fails every unit behind a gateway. The
        waiting request fails instead (`DeviceProtocolError`) and the bytes are dropped.
        Measured: the length of the frame that carried the answer and what followed it in
        the buffer, so `_check_answer` can hold it to the exact length the request implies.
        """
        assert self._pymodbus_callback_data is not None
        assert self._client is not None
        ctx = self._client.ctx
        try:
            used = self._pymodbus_callback_data(data, addr)
        except ModbusException as exc:
            future = ctx.response_future
            if self._in_flight and not future.done():
                future.set_exception(
                    _UnsoundAnswer(f"undecodable answer ({len(data)} bytes): {exc}")
                )
            return len(data)
        if ctx.last_pdu is None:
            self._stray_bytes += used  # frames for another unit or transaction, skipped
            return used
        if self._framing == _RTU_FRAMING:
            # pymodbus' RTU framer hunts past leading garbage and drops trailing bytes
            # (it reports the whole buffer used): the frame must be the whole buffer.
            self._answer_len, self._answer_trailing = len(data), 0
        else:
            start = 0  # the answer is the last MBAP frame pymodbus used (it skips others)
            while (end := start + 6 + int.from_bytes(data[start + 4 : start + 6])) < used:
                start = end
            self._answer_len, self._answer_trailing = used - start, len(data) - used
        return used

    @property
    def late_answers(self) -> int:
        """Answers that arrived with no request waiting (after their timeout), dropped."""
        return self._late_answers

    def __repr__(self) -> str:
        return f"<PymodbusClient {self.bus.type} bus {self.bus.name!r}>"

    # ------------------------------------------------------------------ lifecycle

    @property
    def connected(self) -> bool:
        """See `ModbusClient.connected`."""
        return self._client is not None and bool(self._client.connected)

    async def connect(self) -> None:
        """See `ModbusClient.connect`."""
        if self.connected:
            return
        if self._client is None:
            self._client = self._build()
            self._client.set_max_no_responses(_NEVER_DISCONNECT)
            # See "Per-request timeouts" in the module docstring. The serial port's own
            # timeout was taken from the constructor already and keeps the backstop.
            self._client.ctx.comm_params.timeout_connect = None  # type: ignore[assignment]
            for answer in (
                HoldingRegistersAnswer,
                InputRegistersAnswer,
                CoilsAnswer,
                DiscreteInputsAnswer,
            ):
                self._client.register(answer)
            client = self._client
            ctx = client.ctx
            self._pymodbus_callback_data = ctx.callback_data
            ctx.callback_data = self._on_data  # type: ignore[method-assign]
            self._readers = {
                Table.COIL: client.read_coils,
                Table.DISCRETE: client.read_discrete_inputs,
                Table.HOLDING: client.read_holding_registers,
                Table.INPUT: client.read_input_registers,
            }
            self._record_open_errors(client)
        self._lost = asyncio.Event()
        self._open_error = None
        try:
            with KeepingCancels():  # pymodbus connects with wait_for
                async with asyncio.timeout(self._connect_timeout):
                    ok = await self._client.connect()
        except TimeoutError:
            ok = False
        except _OPEN_ERRORS as exc:
            # termios.error (a driver refusing a setting) is no OSError and passes pymodbus.
            raise BusUnavailable(self._cannot_open(exc)) from None
        except ModbusException as exc:
            raise BusUnavailable(self._cannot_open(exc)) from None
        if not ok or not self.connected:
            self._client.close()
            raise BusUnavailable(self._cannot_open(self._open_error))
        # See "Receive buffer" in the module docstring.
        transport = self._client.ctx.transport
        if hasattr(transport, "max_size"):
            transport.max_size = _RECV_BYTES

    def _record_open_errors(self, client: AsyncModbusTcpClient | AsyncModbusSerialClient) -> None:
        """Keep the error pymodbus swallows when opening fails (it only returns False)."""
        create = client.ctx.call_create

        async def create_keeping_error() -> Any:
            try:
                return await create()
            except _OPEN_ERRORS as exc:
                # Without its traceback: the frames would keep a half-opened port alive.
                self._open_error = exc.with_traceback(None)
                raise

        client.ctx.call_create = create_keeping_error

    def _cannot_open(self, error: BaseException | None) -> str:
        """What failed, where and with which setting, and why (for the one warning)."""
        bus = self.bus
        if isinstance(bus, SerialBus):
            what = (
                f"cannot open or configure {bus.device} "
                f"({bus.baudrate} baud {bus.bytesize}{bus.parity.value}{bus.stopbits})"
            )
        else:
            what = f"cannot connect to {self._where}"
        if error is None:
            return f"bus {bus.name}: {what}"
        return f"bus {bus.name}: {what}: {_describe_error(error)}"

    async def close(self) -> None:
        """See `ModbusClient.close`."""
        if self._client is not None:
            self._client.close()
        self._timer.close()

    def _require_client(self) -> AsyncModbusTcpClient | AsyncModbusSerialClient:
        if self._client is None:
            raise BusUnavailable(f"bus {self.bus.name}: not connected (call connect first)")
        return self._client

    @property
    def _where(self) -> str:
        if isinstance(self.bus, SerialBus):
            return self.bus.device
        return f"{self.bus.host}:{self.bus.port}"

    # ------------------------------------------------------------------ requests

    async def read(
        self, unit: int, table: Table, address: int, count: int, *, timeout: float
    ) -> list[int]:
        """See `ModbusClient.read`: exactly `count` values, registers or 0/1 bits."""
        limit = MAX_READ_BITS if table.is_bit else MAX_READ_REGISTERS
        _check_range(address, count, limit, f"read of {table}")
        self._require_client()
        call = partial(self._readers[table], address, count=count, device_id=unit)
        byte_count = (count + 7) >> 3 if table.is_bit else count << 1
        function = _READ_FUNCTION[table]
        response = await self._transact(unit, function, call, timeout, 2 + byte_count)
        if response.byte_count != byte_count or not response.sound:
            raise DeviceProtocolError(
                f"unit {unit}: function {function} answer to {count} {table} values at "
                f"{address} has byte count {response.byte_count}, not {byte_count}"
            )
        if table.is_bit:  # padded to whole bytes
            return [int(bit) for bit in response.bits[:count]]
        registers: list[int] = response.registers
        return registers

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
        """See `ModbusClient.write`: FC5/FC15 for coils, FC6/FC16 for holding registers."""
        if table not in (Table.COIL, Table.HOLDING):
            raise ValueError(f"{table} is read-only: only coils and holding registers are writable")
        single = len(values) == 1 and not multiple
        client = self._require_client()
        call: Callable[[], Awaitable[Any]]
        if table is Table.COIL:
            _check_range(address, len(values), MAX_WRITE_BITS, "coil write")
            if any(value not in (0, 1) for value in values):
                raise ValueError(f"coil values must be 0 or 1, got {values}")
            bits = [bool(value) for value in values]
            function = 5 if single else 15
            if single:
                call = partial(client.write_coil, address, bits[0], device_id=unit)
            else:
                call = partial(client.write_coils, address, bits, device_id=unit)
        else:
            _check_range(address, len(values), MAX_WRITE_REGISTERS, "register write")
            if any(not 0 <= value <= 0xFFFF for value in values):
                raise ValueError(f"register values must be 0..65535, got {values}")
            words = list(values)
            function = 6 if single else 16
            if single:
                call = partial(client.write_register, address, words[0], device_id=unit)
            else:
                call = partial(client.write_registers, address, words, device_id=unit)
        await self._transact(unit, function, call, timeout, _WRITE_PDU)

    async def _transact(
        self,
        unit: int,
        function: int,
        call: Callable[[], Awaitable[Any]],
        timeout: float,
        answer_pdu: int,
    ) -> Any:
        """Run one request within `timeout`, keeping the inter-frame gap; translate failures.

        `answer_pdu` is the length of a sound answer's PDU (function code and data): with the
        ids and function code it is all `_check_answer` holds the answer to.
        """
        if timeout <= 0:
            raise ValueError(f"timeout must be positive, got {timeout}")
        await self._keep_inter_frame_gap()
        if not self.connected:
            raise BusUnavailable(f"bus {self.bus.name}: not connected to {self._where}")
        self._in_flight = True
        self._stray_bytes = 0
        sent_at = time.monotonic()
        try:
            response = await self._bounded(call, timeout, unit)
        finally:
            self._in_flight = False
            if self._last_rx < sent_at:  # nothing came back: the device may still answer
                self._ready_at = time.monotonic() + self._gap
        self._check_answer(response, unit, function, answer_pdu)
        return response

    def _check_answer(self, response: Any, unit: int, function: int, answer_pdu: int) -> None:
        """Raise unless `response` is exactly the answer to the request just sent.

        Ids, function code and the ADU's length must all match (the byte count of a read
        is checked by `read`); an exception answer must be for this function and exactly
        an exception's length. Anything else is `DeviceProtocolError`: nothing is used.
        """
        problem: str | None = None
        pdu_len = self._answer_len - self._framing
        if response.dev_id != unit:
            problem = f"unit id {response.dev_id}"
        elif self._framing == _TCP_FRAMING and response.transaction_id != self._sent_tid:
            problem = f"transaction id {response.transaction_id}, not {self._sent_tid}"
        elif self._answer_trailing:
            problem = f"{self._answer_trailing} bytes after the frame"
        elif isinstance(response, ExceptionResponse) or response.isError():
            code = int(getattr(response, "exception_code", 0))
            if response.function_code & 0x7F != function:
                problem = f"an exception {code} to function {response.function_code & 0x7F}"
            elif pdu_len != _EXCEPTION_PDU:
                problem = f"an exception answer {pdu_len} bytes long, not {_EXCEPTION_PDU}"
            else:
                raise DeviceRejected(
                    code, f"unit {unit} answered function {function} with Modbus exception {code}"
                )
        elif response.function_code != function:
            # On RTU, typically an answer meant for an earlier request (after its timeout).
            problem = f"function {response.function_code}"
        elif pdu_len != answer_pdu:
            problem = f"a {pdu_len}-byte PDU, not {answer_pdu}"
        if problem is not None:
            raise DeviceProtocolError(
                f"unit {unit}: unsound answer to function {function}: {problem}"
            )

    async def _bounded(self, call: Callable[[], Awaitable[Any]], timeout: float, unit: int) -> Any:
        """Await the pymodbus request within `timeout`; connection loss ends the wait at once.

        One `asyncio.timeout` scope and no helper tasks: this runs for every request, and a
        task plus an `asyncio.wait` per request cost about as much CPU as pymodbus itself.
        Connection loss (`_on_connection_change`) moves the scope's deadline to now, so the
        request is cancelled right away instead of waiting out its timeout. Cancelling the
        request is safe: pymodbus releases its lock when the cancellation lands, and the
        next request waits for that lock, so nothing is left half-done on the wire side.
        """
        lost = self._lost
        if lost.is_set():
            raise BusUnavailable(f"bus {self.bus.name}: connection to {self._where} lost")
        try:
            # Outside the timeout scope: a timeout firing as the answer lands is balanced
            # by the scope itself and must not read as a cancellation.
            with KeepingCancels():
                async with asyncio.timeout(timeout) as scope:
                    self._scope = scope
                    try:
                        return await call()
                    finally:
                        self._scope = None
        except TimeoutError:
            if lost.is_set() or not self.connected:
                raise BusUnavailable(
                    f"bus {self.bus.name}: connection to {self._where} lost"
                ) from None
            dropped = self._stray_bytes
            raise DeviceTimeout(
                f"unit {unit}: no answer within {timeout:g} s"
                + (f" ({dropped} bytes that were no answer to it dropped)" if dropped else "")
            ) from None
        except ConnectionException as exc:
            raise BusUnavailable(f"bus {self.bus.name}: {exc}") from None
        except _UnsoundAnswer as exc:
            raise DeviceProtocolError(f"unit {unit}: {exc.reason}") from None
        except ModbusException as exc:  # pymodbus' own id checks (e.g. a unit id mismatch)
            raise DeviceProtocolError(f"unit {unit}: {exc}") from None

    async def _keep_inter_frame_gap(self) -> None:
        # Timing, not synchronisation: the line must stay silent this long between frames.
        # Late bytes (an answer after its timeout, noise) restart the silence too.
        await self._timer.sleep_until(max(self._ready_at, self._last_rx + self._gap))


def _describe_error(error: BaseException) -> str:
    """`error` as text; termios.error carries (errno, text) but prints as a bare tuple."""
    if isinstance(error, termios.error) and len(error.args) == 2:
        return f"[Errno {error.args[0]}] {error.args[1]} (termios)"
    return str(error) or type(error).__name__


def _check_range(address: int, count: int, limit: int, what: str) -> None:
    if not 1 <= count <= limit:
        raise ValueError(f"{what}: count {count} outside 1..{limit}")
    if address < 0 or address + count > 0x10000:
        raise ValueError(f"{what}: addresses {address}..{address + count - 1} outside 0..65535")
