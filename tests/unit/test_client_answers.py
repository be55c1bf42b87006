"""The client's answer classes: sound answers decode as pymodbus' own; unsound ones to nothing."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymodbus.pdu.register_message import (
    ReadHoldingRegistersResponse,
    ReadInputRegistersResponse,
)

from gatewayd.modbus.client import (
    CoilsAnswer,
    DiscreteInputsAnswer,
    HoldingRegistersAnswer,
    InputRegistersAnswer,
)

PAIRS = [
    (HoldingRegistersAnswer, ReadHoldingRegistersResponse),
    (InputRegistersAnswer, ReadInputRegistersResponse),
]


@pytest.mark.parametrize(("ours", "theirs"), PAIRS)
@given(words=st.lists(st.integers(0, 0xFFFF), max_size=125))
def test_sound_answers_decode_as_pymodbus_does(ours: type, theirs: type, words: list[int]) -> None:
    """An even byte count followed by exactly that many bytes decodes to pymodbus' registers."""
    data = bytes([2 * len(words)]) + b"".join(w.to_bytes(2, "big") for w in words)
    expected = theirs()
    expected.decode(data)
    got = ours()
    got.decode(data)
    assert got.sound
    assert got.byte_count == 2 * len(words)
    assert list(got.registers) == list(expected.registers) == words
    assert got.function_code == expected.function_code


@pytest.mark.parametrize(("ours", "_theirs"), PAIRS)
@given(payload=st.binary(max_size=254), extra=st.binary(max_size=3), shift=st.integers(-3, 3))
def test_unsound_answers_decode_to_nothing(
    ours: type, _theirs: type, payload: bytes, extra: bytes, shift: int
) -> None:
    """An odd byte count, or one that disagrees with the bytes after it, gives no registers
    and `sound = False`, and never raises (pymodbus would let that close the connection)."""
    byte_count = max(0, min(255, len(payload) + shift))
    data = bytes([byte_count]) + payload + extra
    answer = ours()
    answer.decode(data)
    sound = byte_count % 2 == 0 and len(data) == byte_count + 1
    assert answer.sound is sound
    assert answer.byte_count == byte_count
    assert (list(answer.registers) != []) is (sound and byte_count > 0)


@pytest.mark.parametrize("ours", [HoldingRegistersAnswer, InputRegistersAnswer, CoilsAnswer])
def test_empty_answer_is_unsound(ours: type) -> None:
    """A PDU with no byte count at all decodes as unsound, not as an IndexError."""
    answer = ours()
    answer.decode(b"")
    assert answer.sound is False
    assert answer.byte_count == -1


@pytest.mark.parametrize("ours", [CoilsAnswer, DiscreteInputsAnswer])
def test_bit_answers_keep_their_byte_count(ours: type) -> None:
    """FC1/FC2 answers keep the byte count the client compares with ceil(count / 8)."""
    answer = ours()
    answer.decode(bytes([2, 0b0000_0101, 0b1000_0000]))
    assert (answer.sound, answer.byte_count) == (True, 2)
    assert [int(b) for b in answer.bits] == [1, 0, 1, 0, 0, 0, 0, 0] + [0] * 7 + [1]
    answer.decode(bytes([3, 0xFF, 0xFF]))  # the count says one more byte than came
    assert (answer.sound, answer.byte_count, list(answer.bits)) == (False, 3, [])


def test_description_is_short() -> None:
    """The text pymodbus formats on every answer names the register count, not the values."""
    answer = HoldingRegistersAnswer(dev_id=7, transaction_id=3)
    answer.decode(bytes([6, 0, 1, 0, 2, 0xFF, 0xFF]))
    assert answer.registers == [1, 2, 65535]
    assert str(answer) == "HoldingRegistersAnswer(dev_id=7, transaction_id=3, 3 registers)"
