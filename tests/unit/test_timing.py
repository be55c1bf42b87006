"""Wire-time model: frame sizes, character and gap times, break-even gap, gap_fill resolution."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gatewayd.config.models import RtuOverTcpBus, SerialBus, Table, TcpBus
from gatewayd.modbus.planner import ReadRequest
from gatewayd.modbus.timing import (
    break_even_gap,
    bus_cycle_time,
    char_time,
    cycle_wire_time,
    frame_gap,
    inter_frame_delay,
    read_frame_bytes,
    request_wire_time,
    resolve_gap_fill,
    write_frame_bytes,
)

H, C = Table.HOLDING, Table.COIL


def test_frame_sizes_match_the_spec() -> None:
    """RTU and TCP request/response sizes for reads and writes."""
    assert read_frame_bytes(H, 10) == (8, 25)
    assert read_frame_bytes(C, 10) == (8, 7)  # 10 bits in 2 bytes
    assert read_frame_bytes(H, 10, tcp=True) == (12, 29)
    assert write_frame_bytes(H, 1) == (8, 8)  # FC6 echoes the request
    assert write_frame_bytes(C, 1) == (8, 8)  # FC5
    assert write_frame_bytes(H, 3) == (15, 8)  # FC16: 9 + 6 data bytes
    assert write_frame_bytes(C, 9) == (11, 8)  # FC15: 9 + 2 data bytes
    assert write_frame_bytes(H, 3, tcp=True) == (19, 12)


def test_char_time_and_frame_gap() -> None:
    """11 bits per char; 3.5 chars of silence, fixed at 1.75 ms above 19200 baud."""
    assert char_time(9600) == pytest.approx(11 / 9600)
    assert frame_gap(9600) == pytest.approx(3.5 * 11 / 9600)
    assert frame_gap(19200) == pytest.approx(3.5 * 11 / 19200)
    assert frame_gap(38400) == 0.00175
    assert frame_gap(115200) == 0.00175


def test_request_wire_time_rtu_by_hand() -> None:
    """A 10-register read at 9600: 33 bytes + 2 gaps + turnaround."""
    c = 11 / 9600
    assert request_wire_time(H, 10, 9600, 0.005) == pytest.approx(33 * c + 7 * c + 0.005)
    plan = [ReadRequest(H, 0, 10, (0,)), ReadRequest(H, 50, 10, (1,))]
    assert cycle_wire_time(plan, 9600, 0.005) == pytest.approx(2 * (40 * c + 0.005))


def test_request_wire_time_tcp_is_dominated_by_round_trip() -> None:
    """Over TCP a read costs about turnaround + round trip, whatever its size."""
    small = request_wire_time(H, 1, None, 0.005)
    large = request_wire_time(H, 125, None, 0.005)
    assert 0.006 < small < large < 0.0065


def test_break_even_gap_by_hand() -> None:
    """9600 baud, 5 ms turnaround: (13c + 7c + 5 ms) / 2c = 12.18 → 12 registers."""
    assert break_even_gap(9600, 0.005) == 12
    assert break_even_gap(115200, 0.005) == 51
    assert break_even_gap(9600, 0.0, bits=10) == 10  # (13 + 7) / 2
    assert break_even_gap(None, 0.005) == 124


@given(st.sampled_from([1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200]),
       st.floats(0, 0.05), st.integers(1, 60))
def test_break_even_is_where_reading_through_stops_paying(
    baudrate: int, turnaround: float, width: int
) -> None:
    """Merging over the break-even gap is no slower than two requests; one more is slower."""
    g = break_even_gap(baudrate, turnaround)
    if g >= 124:
        return
    split = 2 * request_wire_time(H, width, baudrate, turnaround)
    assert request_wire_time(H, 2 * width + g, baudrate, turnaround) <= split + 1e-12
    assert request_wire_time(H, 2 * width + g + 1, baudrate, turnaround) > split


def test_resolve_gap_fill_per_bus_type() -> None:
    """Explicit numbers pass through; auto uses the bus's baud rate, framing and link."""
    serial = SerialBus(name="s", type="rtu", device="/dev/null", baudrate=9600, parity="E")
    assert resolve_gap_fill(serial) == 12
    assert resolve_gap_fill(serial.model_copy(update={"gap_fill": 3})) == 3
    tcp = TcpBus(name="t", type="tcp", host="127.0.0.1")
    assert resolve_gap_fill(tcp) == 124
    bridged = RtuOverTcpBus(name="r", type="rtu_over_tcp", host="127.0.0.1", baudrate=115200)
    assert resolve_gap_fill(bridged) == 56  # (13c + 2 gaps + 5 ms + 1 ms hop) / 2c, c=95.5 µs
    n81 = SerialBus(name="s", type="rtu", device="/dev/null", baudrate=9600, turnaround="0s")
    assert resolve_gap_fill(n81) == 10  # 10-bit characters: (13 + 7) / 2


def test_inter_frame_delay_and_bus_cycle_time() -> None:
    """auto silence is the spec's; a fixed delay wins; bus_cycle_time uses the bus framing."""
    serial = SerialBus(name="s", type="rtu", device="/dev/null", baudrate=9600)
    assert inter_frame_delay(serial) == pytest.approx(3.5 * 10 / 9600)
    fixed = serial.model_copy(update={"inter_frame_delay": 0.01})
    assert inter_frame_delay(fixed) == 0.01
    plan = [ReadRequest(H, 0, 10, (0,))]
    c = 10 / 9600
    assert bus_cycle_time(serial, plan) == pytest.approx(40 * c + 0.005)
