"""Frames the spool held before EnOS shaping moved to gatewayd/uplink/ drain unchanged.

The bodies below are what the encoder wrote while it lived in gatewayd/spool/frames.py
(captured from that code for the samples and blocks of `_cycle`): the on-disk bytes must
stay exactly these, and a spool holding them must deliver the same records after an
upgrade.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from gatewayd.enos.messages import MeasurepointRecord, encode_record
from gatewayd.samples import Quality, Sample, SampleBlock
from gatewayd.spool.frames import FrameEncoder
from gatewayd.spool.rows import Kind
from gatewayd.spool.store import SpoolStore
from gatewayd.uplink.frames import EnosQuality
from gatewayd.uplink.records import bundle_frames

QUALITY = {("inv", "U"), ("inv", "P"), ("meter", "V")}
KEYS = {"inv": ("pk", "inv-k"), "meter": ("pk", "meter-k")}

#: (device, ts_ms, points, body) as the pre-move encoder wrote them; 2 values unsendable.
OLD_FRAMES = [
    (
        "inv",
        1000,
        4,
        '{"U":{"value":400.1,"quality":0},"F":50,"P":{"value":12.5,"quality":1},"status":"run"}',
    ),
    (
        "meter",
        1000,
        4,
        '{"V":{"value":231.5,"quality":0},"Hz":49.98,"E":9007199254740993,"ok":true}',
    ),
    ("meter", 2000, 1, '{"V":{"value":230.0,"quality":2}}'),
]


def _cycle() -> tuple[list[Sample], list[SampleBlock]]:
    samples = [
        Sample("inv", "P", 12.5, 1000, Quality.BAD),
        Sample("inv", "status", "run", 1000),
        Sample("meter", "E", 2**53 + 1, 1000),
        Sample("meter", "ok", True, 1000),
        Sample("meter", "V", 230.0, 2000, Quality.STALE),
        Sample("meter", "I", float("nan"), 2000),
        Sample("meter", "I", 4.5, 2000, Quality.BAD),
    ]
    blocks = [
        SampleBlock("inv", ("U", "F"), [400.1, 50], 1000),
        SampleBlock("meter", ("V", "Hz"), [231.5, 49.98], 1000),
    ]
    return samples, blocks


def test_the_uplinks_shapes_write_the_old_encoders_bytes() -> None:
    """The same cycle gives the same frames, byte for byte, and the same unsendable count."""
    samples, blocks = _cycle()
    frames, unsendable = FrameEncoder(EnosQuality(QUALITY)).encode(samples, blocks)
    assert ([tuple(f) for f in frames], unsendable) == (OLD_FRAMES, 2)


def test_a_spool_of_old_frames_delivers_the_same_records(tmp_path: Path) -> None:
    """Frames written by the old code (raw rows in the v3 table) drain as the records the
    old code sent, and dead-lettering one splits its values and qualities as before."""
    path = tmp_path / "spool.db"
    SpoolStore.open(path).close()  # the current schema, empty
    with sqlite3.connect(path) as conn:
        conn.executemany(
            "INSERT INTO frames (device, ts_ms, points, body) VALUES (?, ?, ?, ?)", OLD_FRAMES
        )
    conn.close()
    store = SpoolStore.open(path, shapes=EnosQuality(QUALITY))
    try:
        frames = store.take_frames(10)
        bundles, unknown = bundle_frames(frames, KEYS.get)
        assert unknown == []
        expected = [
            MeasurepointRecord(
                "pk",
                "inv-k",
                1000,
                {
                    "U": {"value": 400.1, "quality": 0},
                    "F": 50,
                    "P": {"value": 12.5, "quality": 1},
                    "status": "run",
                },
            ),
            MeasurepointRecord(
                "pk",
                "meter-k",
                1000,
                {"V": {"value": 231.5, "quality": 0}, "Hz": 49.98, "E": 2**53 + 1, "ok": True},
            ),
            MeasurepointRecord("pk", "meter-k", 2000, {"V": {"value": 230.0, "quality": 2}}),
        ]
        assert [b.encoded for b in bundles] == [encode_record(r) for r in expected]
        assert store.dead_letter(Kind.SAMPLES, [frames[0].id], 1204, "bad", 5000) == 4
        letters = sorted((d.name, d.value, d.quality) for d in store.dead_letters())
        assert letters == [("F", 50, 0), ("P", 12.5, 1), ("U", 400.1, 0), ("status", "run", 0)]
    finally:
        store.close()
