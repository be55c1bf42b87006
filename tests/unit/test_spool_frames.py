"""Frame encoding at write time: grouping, value shapes, size bound, round trip (pure)."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from gatewayd.samples import Quality, Sample, SampleBlock
from gatewayd.spool.frames import (
    FRAME_MAX_BYTES,
    Frame,
    FrameEncoder,
    encode_body,
    parse_body,
)
from gatewayd.uplink.frames import EnosQuality, split_value


def test_values_keep_their_json_types() -> None:
    """bool stays true/false (not 1), uint64 stays exact, text stays text, floats are floats."""
    frames, unsendable = FrameEncoder().encode(
        [
            Sample("d", "b", True, 1),
            Sample("d", "u", 2**64 - 1, 1),
            Sample("d", "s", 'x"y', 1),
            Sample("d", "f", 1.0, 1),
        ]
    )
    assert unsendable == 0
    assert [f.body for f in frames] == ['{"b":true,"u":18446744073709551615,"s":"x\\"y","f":1.0}']


def test_infinite_and_nan_values_are_not_sendable() -> None:
    """NaN and infinity are not JSON: left out and counted, the frame keeps the rest."""
    frames, unsendable = FrameEncoder().encode(
        [Sample("d", "a", float("inf"), 1), Sample("d", "b", 2, 1)]
    )
    assert (unsendable, [f.body for f in frames]) == (1, ['{"b":2}'])


def test_a_cycle_too_big_for_one_frame_is_split_without_losing_a_point() -> None:
    """Bodies stay under FRAME_MAX_BYTES; together the frames hold every point once."""
    samples = [Sample("big", f"point_{i:05d}", i * 1.5, 7) for i in range(4000)]
    frames, _ = FrameEncoder().encode(samples)
    assert len(frames) > 1
    assert all(len(f.body.encode()) <= FRAME_MAX_BYTES for f in frames)
    assert all((f.device, f.ts_ms) == ("big", 7) for f in frames)
    merged: dict[str, object] = {}
    for frame in frames:
        points = parse_body(frame.body)
        assert frame.points == len(points)
        merged.update(points)
    assert merged == {s.measurepoint: s.value for s in samples}


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b"]),
            st.sampled_from(["x", "y", "z"]),
            st.one_of(st.integers(), st.floats(allow_nan=False, allow_infinity=False),
                      st.booleans(), st.text(max_size=5)),
            st.integers(0, 3),
            st.sampled_from(list(Quality)),
        ),
        max_size=40,
    )
)  # fmt: skip
def test_every_sendable_value_is_in_exactly_one_frame(
    rows: list[tuple[str, str, object, int, Quality]],
) -> None:
    """Round trip: each sendable sample is in one frame with its value and quality; per
    device, frames keep first-seen time order."""
    quality = {("a", "x")}
    samples = [Sample(d, p, v, t, q) for d, p, v, t, q in rows]  # type: ignore[arg-type]
    frames, unsendable = FrameEncoder(EnosQuality(quality)).encode(samples)
    got = sorted(
        (f.device, name, json.dumps(split_value(shaped)), f.ts_ms)
        for f in frames
        for name, shaped in parse_body(f.body).items()
    )
    sendable = [s for s in samples if (s.device, s.measurepoint) in quality or not s.quality]
    want = sorted(
        (s.device, s.measurepoint, json.dumps((s.value, int(s.quality))), s.ts_ms) for s in sendable
    )
    assert got == want
    assert unsendable == len(samples) - len(sendable)
    assert all(parse_body(encode_body(parse_body(f.body))) == parse_body(f.body) for f in frames)


BLOCK = st.builds(
    SampleBlock,
    device=st.sampled_from(["inv", "meter"]),
    measurepoints=st.lists(st.sampled_from("abcde"), min_size=1, max_size=6).map(tuple),
    values=st.lists(st.integers(-5, 5), min_size=6, max_size=6),
    ts_ms=st.integers(1, 3),
).map(lambda b: b._replace(values=b.values[: len(b.measurepoints)]))
LOOSE = st.builds(
    Sample,
    st.sampled_from(["inv", "meter"]),
    st.sampled_from("abcde"),
    st.integers(-5, 5),
    st.integers(1, 3),
    st.sampled_from(list(Quality)),
)


@settings(max_examples=400, deadline=None)
@given(
    blocks=st.lists(BLOCK, max_size=5),
    loose=st.lists(LOOSE, max_size=8),
    quality=st.sets(st.tuples(st.sampled_from(["inv", "meter"]), st.sampled_from("abcde"))),
)
def test_blocks_encode_as_their_samples_would(
    blocks: list[SampleBlock], loose: list[Sample], quality: set[tuple[str, str]]
) -> None:
    """Blocks then samples give the frames of the same samples one by one: shared
    instants, repeated points, quality-shaped devices included."""
    encoder = FrameEncoder(EnosQuality(quality))
    one_by_one = [sample for block in blocks for sample in block.samples()] + loose
    assert encoder.encode(loose, blocks) == encoder.encode(one_by_one)


def test_a_block_becomes_one_frame_from_its_columns() -> None:
    block = SampleBlock("inv", ("p", "q"), [1.5, True], 7)
    assert block.points == 2
    assert FrameEncoder().encode([], [block]) == ([Frame("inv", 7, 2, '{"p":1.5,"q":true}')], 0)


def test_two_responses_of_one_instant_share_a_frame() -> None:
    """Two responses of a device stamped in the same millisecond make one frame."""
    blocks = [SampleBlock("inv", ("p",), [1], 7), SampleBlock("inv", ("q", "r"), [2, 3], 7)]
    assert FrameEncoder().encode([], blocks) == ([Frame("inv", 7, 3, '{"p":1,"q":2,"r":3}')], 0)
