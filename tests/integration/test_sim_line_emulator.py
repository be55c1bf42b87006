"""The timing-faithful RS-485 line emulator used by the RTU benchmarks (tests/bench)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from gatewayd.config.models import DeviceModel, Table
from gatewayd.modbus.client import make_client
from gatewayd.sim.device import DeviceSimulator
from tests.bench.line_emulator import LineTiming, emulated_line, frame_gap
from tests.integration.modbus_fixtures import serial_bus, still_units


def test_bytes_follow_the_baud_rate() -> None:
    """A burst goes out back to back, one 11-bit character per 11/baud seconds."""
    line = LineTiming(9600)
    char = 11 / 9600
    assert line.release_times(10.0, 3) == pytest.approx([10 + char, 10 + 2 * char, 10 + 3 * char])
    # More bytes of the same burst queue right behind.
    assert line.release_times(10.0 + char, 2) == pytest.approx([10 + 4 * char, 10 + 5 * char])
    assert line.frames == 1


def test_new_frame_keeps_the_silence() -> None:
    """A frame offered right after another waits for 3.5 characters of silence first."""
    line = LineTiming(9600)
    [end] = line.release_times(0.0, 1)
    answer = line.release_times(end + 0.002, 1)  # a pause > 1.5 chars: a new frame
    assert answer == pytest.approx([end + frame_gap(9600) + 11 / 9600])
    late = line.release_times(1.0, 1)  # long after: no extra delay
    assert late == pytest.approx([1.0 + 11 / 9600])
    assert line.frames == 3


def test_the_other_side_always_starts_a_new_frame() -> None:
    """An answer that comes back faster than 1.5 characters still waits for the silence."""
    line = LineTiming(9600)
    char = 11 / 9600
    [end] = line.release_times(0.0, 8, sender="gateway")[-1:]
    answer = line.release_times(end + 0.1 * char, 1, sender="device")
    assert answer == pytest.approx([end + frame_gap(9600) + char])
    more = line.release_times(end + 0.2 * char, 1, sender="device")  # same burst
    assert more == pytest.approx([end + frame_gap(9600) + 2 * char])
    assert line.frames == 2
    assert line.frame_sizes == {8: 1}


def test_frame_sizes_are_counted_per_frame() -> None:
    """Chunks of one burst add up to one frame; a pause starts the next frame's count."""
    line = LineTiming(9600)
    char = 11 / 9600
    line.release_times(0.0, 5)
    line.release_times(5 * char, 3)  # the same burst: one 8-byte frame so far
    [end] = line.release_times(1.0, 1)[-1:]
    line.release_times(end + 0.5, 2)
    assert dict(line.frame_sizes) == {8: 1, 1: 1}  # finished frames
    assert line.frame_bytes == 2  # the frame still open
    assert line.frames == 3


def test_frame_gap_values() -> None:
    """3.5 characters up to 19200 baud, a fixed 1.75 ms above."""
    assert frame_gap(9600) == pytest.approx(3.5 * 11 / 9600)
    assert frame_gap(19200) == pytest.approx(3.5 * 11 / 19200)
    assert frame_gap(38400) == 0.00175


async def test_client_and_simulator_talk_through_the_line(
    tmp_path: Path, modbus_model: DeviceModel
) -> None:
    """Requests and answers cross the emulated line intact and no faster than the wire."""
    baud = 9600
    expected = [1, 2, 0, 0, 0, 50, 0, 0, 0, 50]  # u32 pinned; i64, u64 at their still 50
    units = still_units(modbus_model, 1)
    async with (
        emulated_line(tmp_path, baud) as (gateway_tty, device_tty),
        DeviceSimulator(units, mode="rtu", serial_port=device_tty, baudrate=baud) as sim,
    ):
        sim.set_value(1, "u32", 0x00010002)
        client = make_client(serial_bus(gateway_tty, baudrate=baud))
        await client.connect()
        started = time.monotonic()
        for _ in range(3):
            assert await client.read(1, Table.HOLDING, 5, 10, timeout=2) == expected
        elapsed = time.monotonic() - started
        await client.close()
    request_bytes, answer_bytes = 8, 5 + 2 * 10
    wire_time = (request_bytes + answer_bytes) * 11 / baud
    # A lower bound only (it cannot flake): a bare pty would be far faster than the wire.
    assert elapsed >= 3 * wire_time
    assert sim.stats(1).requests[3] == 3
