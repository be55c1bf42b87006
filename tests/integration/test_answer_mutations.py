"""Hypothesis mutates correct answers on the wire; no mutated answer ever yields a value.

The rogue device (raw sockets, bytes built from the spec) computes the correct ADU for each
request and sends a mutation of it instead: truncated, with bytes appended, inserted or
deleted, with a byte replaced (on TCP only in the MBAP header, function code and byte count:
a data byte has no check there, so changing it is a sound answer with other values; on RTU
anywhere, as the CRC covers every byte). The client must raise `DeviceTimeout` (our protocol
error is one) for the mutated answer, and read the exact values from the next, sound one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gatewayd.config.models import Table
from gatewayd.modbus.errors import DeviceTimeout
from tests.integration.rogue_fixtures import ADDRESS, expected, rogue
from tests.peers.rogue_modbus import Answer, Request

#: About half the mutations end in a timeout, so it is short; but a mutated answer landing
#: after it would spoil the sound answer that follows, so not too short for a loaded machine.
TIMEOUT = 0.5
#: Bytes of a TCP answer a mutation may replace: MBAP header (7), function code, byte count.
TCP_CHECKED_BYTES = 9

Mutation = Callable[[bytes], bytes]


@st.composite
def mutations(draw: st.DrawFn, framing: str) -> tuple[str, Mutation]:
    """A description and a function that spoils an ADU (never returning it unchanged)."""
    kind = draw(st.sampled_from(["truncate", "append", "insert", "delete", "replace"]))
    position = draw(st.integers(0, 10_000))
    extra = draw(st.binary(min_size=1, max_size=6))
    value = draw(st.integers(1, 255))

    def mutate(adu: bytes) -> bytes:
        at = position % len(adu)
        if kind == "truncate":
            return adu[:at]
        if kind == "append":
            return adu + extra
        if kind == "insert":
            return adu[:at] + extra + adu[at:]
        if kind == "delete":
            return adu[:at] + adu[at + 1 :]
        if framing == "tcp":
            at = position % TCP_CHECKED_BYTES
        return adu[:at] + bytes([adu[at] ^ value]) + adu[at + 1 :]  # value != 0: a change

    return f"{kind} at {position} ({extra.hex()}, ^{value})", mutate


def check(transport: str, table: Table, count: int, mutate: Mutation, pty: Any) -> None:
    """One mutated answer, then a sound one, on a fresh connection."""
    sent: list[bytes] = []

    def policy(_request: Request, answer: Answer) -> bytes:
        if sent:
            return answer.adu
        sent.append(mutate(answer.adu))
        assert sent[0] != answer.adu
        return sent[0]

    async def scenario() -> None:
        async with rogue(transport, policy, pty) as (_device, client):
            try:
                values = await client.read(1, table, ADDRESS, count, timeout=TIMEOUT)
            except DeviceTimeout:  # a protocol error is one too
                pass
            else:
                pytest.fail(f"mutated answer {sent[0].hex()} gave values {values}")
            good = await client.read(1, table, ADDRESS, count, timeout=TIMEOUT * 6)
            assert good == expected(table, count)

    asyncio.run(scenario())


TABLES = st.sampled_from([(Table.HOLDING, 1), (Table.HOLDING, 7), (Table.INPUT, 2),
                          (Table.COIL, 9), (Table.DISCRETE, 1)])  # fmt: skip
SETTINGS = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


@pytest.mark.parametrize("transport", ["tcp", "rtu_over_tcp"])
@SETTINGS
@given(data=st.data(), shape=TABLES)
def test_mutated_answers_never_become_values_over_tcp(
    transport: str, data: st.DataObject, shape: tuple[Table, int]
) -> None:
    """Modbus TCP and RTU over TCP: every mutation is a timeout or a protocol error."""
    _description, mutate = data.draw(mutations("tcp" if transport == "tcp" else "rtu"))
    check(transport, *shape, mutate, None)


@settings(SETTINGS, max_examples=25)
@given(data=st.data(), shape=TABLES)
def test_mutated_answers_never_become_values_on_a_serial_line(
    socat_pty_pair: tuple[str, str], data: st.DataObject, shape: tuple[Table, int]
) -> None:
    """RTU on a socat pty pair (one pair for all examples): the same, CRC and all."""
    _description, mutate = data.draw(mutations("rtu"))
    check("serial", *shape, mutate, socat_pty_pair)


def test_unmutated_answers_give_exact_values() -> None:
    """The control: the identity 'mutation' is read back exactly on every transport."""
    for transport in ("tcp", "rtu_over_tcp"):
        async def scenario(transport: str = transport) -> None:
            async with rogue(transport, lambda _r, a: a.adu) as (device, client):
                for table, count in [(Table.HOLDING, 125), (Table.COIL, 2000), (Table.INPUT, 1)]:
                    got = await client.read(1, table, ADDRESS, count, timeout=TIMEOUT * 10)
                    assert got == expected(table, count)
                assert len(device.requests) == 3

        asyncio.run(scenario())
