"""The client against a rogue device (raw sockets, hand-built bytes): no unsound answer
becomes a value, on Modbus TCP, RTU over TCP and RTU on a socat pty pair."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from gatewayd.config.models import LogFormat, Table
from gatewayd.logging import configure_logging
from gatewayd.modbus.errors import (
    BusUnavailable,
    DeviceProtocolError,
    DeviceRejected,
    DeviceTimeout,
)
from tests.integration.rogue_fixtures import ADDRESS, expected, rogue
from tests.peers.rogue_modbus import (
    Answer,
    Fault,
    Request,
    refusal,
    script,
)

#: Per-request timeout: short, as most faults end in one; generous for a loaded machine.
TIMEOUT = 0.5

#: Faults pymodbus frames and hands over: the client must see through them itself.
PROTOCOL_ERRORS = {
    Fault.WRONG_FUNCTION,
    Fault.EXCEPTION_OTHER_FUNCTION,
    Fault.SHORT_COUNT,
    Fault.LONG_COUNT,
    Fault.ODD_COUNT,
    Fault.EXTRA_BYTES,
}
#: Faults that leave the request waiting (a frame skipped or never complete): a timeout.
TIMEOUTS = {Fault.WRONG_UNIT, Fault.TRUNCATED, Fault.SILENCE}
#: Per transport, what the rest of the faults are.
BY_TRANSPORT: dict[str, dict[Fault, type[Exception]]] = {
    "tcp": {
        Fault.WRONG_TRANSACTION: DeviceTimeout,  # pymodbus skips it: a timeout, nothing used
        Fault.ZERO_TRANSACTION: DeviceProtocolError,  # pymodbus would take it
        Fault.COUNT_MISMATCH: DeviceProtocolError,  # pymodbus used to close the connection
        Fault.LONG_EXCEPTION: DeviceProtocolError,  # pymodbus reads the code, ignores the rest
    },
    "rtu": {  # pymodbus frames these by the function code's size: the CRC is then wrong
        Fault.BAD_CRC: DeviceTimeout,
        Fault.COUNT_MISMATCH: DeviceTimeout,
        Fault.LONG_EXCEPTION: DeviceTimeout,
    },
}


def cases() -> Iterator[Any]:
    """(transport, fault, error type) for every fault that applies to the transport."""
    for transport in ("tcp", "rtu_over_tcp", "serial"):
        family = "tcp" if transport == "tcp" else "rtu"
        faults: dict[Fault, type[Exception]] = dict.fromkeys(
            PROTOCOL_ERRORS, DeviceProtocolError
        )
        faults.update(dict.fromkeys(TIMEOUTS, DeviceTimeout))
        faults.update(BY_TRANSPORT[family])
        for fault, error in faults.items():
            yield pytest.param(transport, fault, error, id=f"{transport}-{fault.name}")


@pytest.fixture
def pty(request: pytest.FixtureRequest) -> tuple[str, str] | None:
    """A socat pty pair for the serial cases only."""
    if "serial" not in request.node.callspec.id:
        return None
    pair: tuple[str, str] = request.getfixturevalue("socat_pty_pair")
    return pair


@pytest.mark.parametrize(("table", "count"), [(Table.HOLDING, 3), (Table.COIL, 5)])
@pytest.mark.parametrize(("transport", "fault", "error"), list(cases()))
async def test_an_unsound_answer_is_never_a_value(
    *,
    transport: str,
    fault: Fault,
    error: type[Exception],
    table: Table,
    count: int,
    pty: tuple[str, str] | None,
) -> None:
    """Each fault is our own error, not a value, and the next sound answer on the same
    connection gives the exact values (the fault cost only its own request)."""
    async with rogue(transport, script(fault), pty) as (device, client):
        with pytest.raises(DeviceTimeout) as caught:
            await client.read(1, table, ADDRESS, count, timeout=TIMEOUT)
        assert type(caught.value) is error, caught.value
        assert await client.read(1, table, ADDRESS, count, timeout=TIMEOUT * 4) == expected(
            table, count
        )
        assert len(device.requests) == 2
        if transport != "serial":
            assert device.connections == 1  # no reconnect: the connection was never lost


@pytest.mark.parametrize("transport", ["tcp", "rtu_over_tcp", "serial"])
async def test_a_sound_exception_answer_is_a_rejection(
    transport: str, pty: tuple[str, str] | None
) -> None:
    """Exception 02 framed exactly is the device's verdict (`DeviceRejected(2)`), not a
    protocol error, on every transport."""

    def refuse(_request: Request, answer: Answer) -> bytes:
        return refusal(answer, 2)

    async with rogue(transport, refuse, pty) as (_device, client):
        with pytest.raises(DeviceRejected) as caught:
            await client.read(1, Table.INPUT, ADDRESS, 4, timeout=TIMEOUT * 4)
    assert caught.value.code == 2


@pytest.mark.parametrize("transport", ["tcp", "rtu_over_tcp"])
async def test_garbage_then_close_is_a_lost_bus_not_a_value(transport: str) -> None:
    """Garbage followed by a close: the bus is unavailable, nothing was returned."""
    async with rogue(transport, script(Fault.GARBAGE_CLOSE)) as (_device, client):
        with pytest.raises(BusUnavailable):
            await client.read(1, Table.HOLDING, ADDRESS, 3, timeout=TIMEOUT * 4)


async def test_another_units_answer_is_a_timeout_that_says_so() -> None:
    """A frame from another unit (here 2) to a unit-1 request is skipped: a timeout whose
    message says bytes were dropped."""
    async with rogue("tcp", script(Fault.WRONG_UNIT)) as (_device, client):
        with pytest.raises(DeviceTimeout, match="bytes that were no answer to it dropped"):
            await client.read(1, Table.HOLDING, ADDRESS, 3, timeout=TIMEOUT)


@pytest.fixture
def json_log() -> Iterator[io.StringIO]:
    """The daemon's logging set-up (JSON lines, info) into a buffer; restored afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    named = [logging.getLogger(n) for n in ("gatewayd", "pymodbus", "asyncio")]
    levels = [logger.level for logger in named]
    stream = io.StringIO()
    configure_logging("info", LogFormat.JSON, stream=stream, environ={})
    yield stream
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    for logger, saved in zip(named, levels, strict=True):
        logger.setLevel(saved)
    logging.captureWarnings(False)
    structlog.reset_defaults()


@pytest.mark.parametrize(
    "fault",
    [Fault.WRONG_TRANSACTION, Fault.WRONG_UNIT, Fault.COUNT_MISMATCH, Fault.ODD_COUNT],
)
async def test_bad_answers_leave_no_library_records(json_log: io.StringIO, fault: Fault) -> None:
    """Under the daemon's logging, ten bad answers put nothing from pymodbus or asyncio in
    the log (pymodbus logged an ERROR with a hex dump of up to 1.7 kB for each; asyncio a
    fatal-error traceback when pymodbus' decode error closed the connection): the failure
    is ours to log, once per episode (the poller does)."""
    async with rogue("tcp", script(*[fault] * 10)) as (_device, client):
        for _ in range(10):
            with pytest.raises(DeviceTimeout):
                await client.read(1, Table.HOLDING, ADDRESS, 3, timeout=TIMEOUT)
        assert await client.read(1, Table.HOLDING, ADDRESS, 3, timeout=TIMEOUT) == expected(
            Table.HOLDING, 3
        )
    records = [json.loads(line) for line in json_log.getvalue().splitlines()]
    assert [r for r in records if not r["logger"].startswith("gatewayd")] == []


async def test_at_debug_library_records_are_one_short_debug_line(json_log: io.StringIO) -> None:
    """With gatewayd at debug, pymodbus' record of a skipped frame passes, demoted to debug
    and cut to one line of at most 200 characters (no hex dump)."""
    configure_logging("debug", LogFormat.JSON, stream=json_log, environ={})
    async with rogue("tcp", script(Fault.WRONG_TRANSACTION)) as (_device, client):
        with pytest.raises(DeviceTimeout):
            await client.read(1, Table.HOLDING, ADDRESS, 3, timeout=TIMEOUT)
    records = [json.loads(line) for line in json_log.getvalue().splitlines()]
    library = [r for r in records if r["logger"].startswith("pymodbus")]
    assert len(library) == 1
    (record,) = library
    assert record["level"] == "debug"
    assert "transaction_id=1 but got id=2" in record["event"]
    assert "\n" not in record["event"]
    assert len(record["event"]) <= 200
