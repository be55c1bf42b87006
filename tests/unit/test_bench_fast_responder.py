"""The benchmark responder's Modbus TCP framing and answers, checked byte by byte from the spec."""

from __future__ import annotations

import struct

import pytest

from tests.bench.fast_responder import (
    FrameSplitter,
    FramingError,
    Responder,
    answer_body,
    float32_image,
    handle,
)

#: Unit 7: holding float32 points at 0 and 2 (7.0, 7.125); input registers: none.
IMAGE = float32_image([7], {3: [0, 2], 4: []})


def _read(tid: int, unit: int, function: int, address: int, count: int) -> bytes:
    """A read request as a client writes it: MBAP (tid, protocol 0, length 6) + PDU."""
    return struct.pack(">HHHBBHH", tid, 0, 6, unit, function, address, count)


def test_splitter_returns_whole_frames_across_reads() -> None:
    """Two frames split at arbitrary bytes come out whole, in order, the remainder kept."""
    stream = _read(1, 7, 3, 0, 2) + _read(2, 7, 3, 2, 2)
    splitter = FrameSplitter()
    got = [f for i in range(0, len(stream), 5) for f in splitter.feed(stream[i : i + 5])]
    assert got == [stream[:12], stream[12:]]
    assert splitter.feed(b"") == []


def test_splitter_refuses_a_length_that_cannot_be_a_frame() -> None:
    """A length field of 1 or 255 is no MBAP frame: the stream cannot be framed."""
    for length in (1, 255):
        with pytest.raises(FramingError):
            FrameSplitter().feed(struct.pack(">HHHB", 1, 0, length, 7))


def test_read_answers_the_image_bytes_with_the_request_tid() -> None:
    """FC3 of 4 registers at 0: length 11, byte count 8, the two floats, same tid and unit."""
    answer = Responder(IMAGE).answer(_read(0xBEEF, 7, 3, 0, 4))
    assert answer == struct.pack(">HHHBBB", 0xBEEF, 0, 11, 7, 3, 8) + struct.pack(">ff", 7, 7.125)


def test_memoised_answer_keeps_each_requests_tid_and_counts_each_request() -> None:
    """The second identical read gets its own tid; both are counted for the unit."""
    responder = Responder(IMAGE)
    first = responder.answer(_read(1, 7, 3, 2, 2))
    second = responder.answer(_read(2, 7, 3, 2, 2))
    assert first is not None
    assert second is not None
    assert (first[:2], second[:2], first[2:]) == (b"\x00\x01", b"\x00\x02", second[2:])
    assert responder.requests == {7: 2}
    assert handle(responder, "stats") == {"requests": {7: 2}}
    assert handle(responder, "reset") == {"ok": True}
    assert responder.requests == {}
    assert handle(responder, "quit") is None


@pytest.mark.parametrize(
    ("request_", "unit", "function", "code"),
    [
        (_read(1, 7, 3, 2, 3)[2:], 7, 3, 0x02),  # one register past the image
        (_read(1, 7, 4, 0, 1)[2:], 7, 4, 0x02),  # an empty input table
        (_read(1, 7, 3, 0, 0)[2:], 7, 3, 0x03),  # count 0
        (_read(1, 7, 3, 0, 126)[2:], 7, 3, 0x03),  # count over 125
        (_read(1, 9, 3, 0, 1)[2:], 9, 3, 0x0B),  # no such unit on the bus
        (struct.pack(">HHBBHH", 0, 6, 7, 6, 1, 5), 7, 6, 0x01),  # a write: not served
        (struct.pack(">HHBBH", 0, 4, 7, 3, 0), 7, 3, 0x03),  # FC3 PDU too short
    ],
)
def test_bad_requests_get_their_exception(
    request_: bytes, unit: int, function: int, code: int
) -> None:
    """Each refusal is an exception answer: the unit, function | 0x80 and the spec's code."""
    expected = struct.pack(">HHBBB", 0, 3, unit, function | 0x80, code)
    assert answer_body(IMAGE, request_) == expected


def test_a_frame_of_another_protocol_gets_no_answer() -> None:
    """Protocol id 1 is not Modbus: dropped, not answered."""
    frame = struct.pack(">HHHBBHH", 1, 1, 6, 7, 3, 0, 1)
    assert Responder(IMAGE).answer(frame) is None
