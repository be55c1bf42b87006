"""The client's one-call register answers decode exactly as pymodbus' own classes do."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.exceptions import ModbusIOException
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersResponse,
    ReadInputRegistersResponse,
)

from gatewayd.modbus.client import HoldingRegistersAnswer, InputRegistersAnswer

PAIRS = [
    (HoldingRegistersAnswer, ReadHoldingRegistersResponse),
    (InputRegistersAnswer, ReadInputRegistersResponse),
]


@pytest.mark.parametrize(("ours", "theirs"), PAIRS)
@given(payload=st.binary(min_size=0, max_size=254), extra=st.binary(max_size=3))
def test_decode_equals_pymodbus(ours: type, theirs: type, payload: bytes, extra: bytes) -> None:
    # Any byte count, odd ones included, with trailing bytes after the payload.
    data = bytes([len(payload)]) + payload + extra
    expected = theirs()
    got = ours()
    try:
        expected.decode(data)
    except ModbusIOException:
        with pytest.raises(ModbusIOException):
            got.decode(data)
        return
    got.decode(data)
    assert list(got.registers) == list(expected.registers)
    assert got.function_code == expected.function_code


@pytest.mark.parametrize(("ours", "_theirs"), PAIRS)
def test_short_packet_is_refused(ours: type, _theirs: type) -> None:
    answer = ours()
    with pytest.raises(ModbusIOException, match="byte_count 4 > length of packet 3"):
        answer.decode(bytes([4, 0, 1]))


def test_description_is_short() -> None:
    answer = HoldingRegistersAnswer(dev_id=7, transaction_id=3)
    answer.decode(bytes([6, 0, 1, 0, 2, 0xFF, 0xFF]))
    assert answer.registers == [1, 2, 65535]
    assert str(answer) == "HoldingRegistersAnswer(dev_id=7, transaction_id=3, 3 registers)"
