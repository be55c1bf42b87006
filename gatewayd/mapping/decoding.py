"""Raw responses → decoded values: the mapping stage's first step (pure, no I/O).

The poller hands over each good response as it came off the wire: the request it answers
(which points, which register or bit range) with its words and timestamp (`RawResponse`).
A `ResponseDecoder` turns those into values with a `BlockDecoder` compiled once per request
layout and cached: a steady plan compiles nothing after its first cycle. Each response
becomes one `DecodedBlock` (indices, values, one timestamp) rather than an object per point:
the poll hot path. Points whose registers do not decode (a BCD nibble over 9, a bad string)
fail on their own, with the codec's error text and their raw registers.

The daemon's mapping stage (`stage.DeviceMapping`) owns one decoder per device; a command's
read-back and `gatewayd read` decode with one of their own, so they show the same values.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import NamedTuple, Protocol

from gatewayd.config.enums import Order
from gatewayd.mapping.blockdecode import BlockDecoder, BlockValues
from gatewayd.modbus.specs import PointSpec
from gatewayd.samples import Value

__all__ = [
    "Decoded",
    "DecodedBlock",
    "PointReading",
    "RawResponse",
    "RequestLayout",
    "ResponseDecoder",
]

#: Distinct request layouts whose compiled decoder is kept (far above any real plan's count).
DECODER_CACHE_SIZE = 1024


class RequestLayout(Hashable, Protocol):
    """What a response answers: its points (model indices, in address order) and range.

    Hashable and equal by value (the planner's `ReadRequest` fits): the decoder cache key.
    """

    @property
    def points(self) -> tuple[int, ...]: ...
    @property
    def start(self) -> int: ...  # first register (or bit) read
    @property
    def count(self) -> int: ...  # registers (or bits) read


class RawResponse(Protocol):
    """One good answer as the poller read it."""

    @property
    def request(self) -> RequestLayout: ...
    @property
    def words(self) -> Sequence[int]: ...  # registers, or 0/1 per bit
    @property
    def ts_ms(self) -> int: ...  # the poll's time or the response's, Unix ms


@dataclass(frozen=True, slots=True)
class PointReading:
    """One point's decoded reading: a value with its raw registers, or why it has none."""

    index: int  # position of the point in the model's `points`
    value: Value | None  # None when the registers did not decode
    raw: tuple[int, ...]  # registers (or bits) as read
    ts_ms: int
    error: str | None = None


@dataclass(slots=True)  # not frozen: built per response, and frozen __init__ is slow
class DecodedBlock:
    """The decoded values of one response: points (model indices) with their values.

    One block per response keeps the hot path free of per-point objects; `readings()`
    expands it into `PointReading`s for callers that want those.
    """

    indices: tuple[int, ...]  # model indices, in request (address) order
    measurepoints: tuple[str, ...]  # the points' measurepoint ids, same order
    values: list[Value]  # shared with later cycles while the registers stay the same: read-only
    nonfinite: tuple[int, ...]  # positions in `values` holding NaN or ±inf
    ts_ms: int
    words: Sequence[int]  # the response
    spans: tuple[tuple[int, int], ...]  # (first, end) word of each point in `words`
    ascending: bool  # `indices` strictly ascending (the mapper's sample order for free)

    def readings(self) -> list[PointReading]:
        """One `PointReading` per point, with its raw registers."""
        words = self.words
        return [
            PointReading(index, value, tuple(words[begin:end]), self.ts_ms)
            for index, value, (begin, end) in zip(
                self.indices, self.values, self.spans, strict=True
            )
        ]


class Decoded(NamedTuple):
    """What a set of responses decoded to: good blocks, and the points that did not decode."""

    blocks: list[DecodedBlock]
    failed: list[PointReading]  # value None, with the codec's error and the raw registers

    @property
    def good(self) -> list[PointReading]:
        """The good readings, one per point, in the order they were read."""
        return [reading for block in self.blocks for reading in block.readings()]


class ResponseDecoder:
    """Decodes one device's responses, with a compiled decoder cached per request layout.

    `points` are the device model's points, `orders` their (byte, word) order, same order
    (`codec.point_orders` resolves a point's from its own, the device's and the model's).
    """

    def __init__(self, points: Sequence[PointSpec], orders: Sequence[tuple[Order, Order]]) -> None:
        if len(points) != len(orders):
            raise ValueError(f"{len(points)} points but {len(orders)} orders")
        self.points = tuple(points)
        self.orders = tuple(orders)
        self._decoders: dict[Hashable, _LayoutDecoder] = {}

    def decode(self, responses: Iterable[RawResponse]) -> Decoded:
        """The values of every response, in order; points that did not decode fail alone."""
        out = Decoded([], [])
        for response in responses:
            self.decode_into(response, out)
        return out

    def decode_into(self, response: RawResponse, out: Decoded) -> None:
        """Decode one response, adding its block (and any failed points) to `out`."""
        request = response.request
        decoder = self._decoders.get(request)
        if decoder is None:
            decoder = self._compile(request)
        words = response.words
        # Registers that did not change decode to the values they gave last time: most plant
        # values are steady between polls, and one list comparison costs next to nothing.
        if decoder.last_words != words:
            decoder.last_words = list(words)
            decoder.last = decoder.block.decode(words)
        decoded = decoder.last
        assert decoded is not None
        if not decoded.errors:
            out.blocks.append(
                DecodedBlock(
                    decoder.indices,
                    decoder.measurepoints,
                    decoded.values,  # type: ignore[arg-type]  # no errors: no None in it
                    decoded.nonfinite,
                    response.ts_ms,
                    words,
                    decoder.block.spans,
                    decoder.ascending,
                )
            )
            return
        _split_failures(decoder, decoded, words, response.ts_ms, out)

    def _compile(self, request: RequestLayout) -> _LayoutDecoder:
        """The decoder of `request`'s responses (compiled once, then cached)."""
        if len(self._decoders) >= DECODER_CACHE_SIZE:
            self._decoders.clear()  # plans are few and stable; this only bounds a pathology
        indices = request.points
        decoder = _LayoutDecoder(
            BlockDecoder(
                [self.points[i] for i in indices],
                [self.orders[i] for i in indices],
                start=request.start,
                count=request.count,
            ),
            indices,
            tuple(self.points[i].measurepoint for i in indices),
        )
        self._decoders[request] = decoder
        return decoder


def _split_failures(
    decoder: _LayoutDecoder,
    decoded: BlockValues,
    words: Sequence[int],
    ts_ms: int,
    out: Decoded,
) -> None:
    """The rare path: some points did not decode; they fail, the others are good."""
    spans = decoder.block.spans
    errors = dict(decoded.errors)
    for position, error in decoded.errors:
        begin, end = spans[position]
        out.failed.append(
            PointReading(decoder.indices[position], None, tuple(words[begin:end]), ts_ms, error)
        )
    keep = [p for p in range(len(decoder.indices)) if p not in errors]
    if not keep:
        return
    renumber = {p: n for n, p in enumerate(keep)}
    indices = tuple(decoder.indices[p] for p in keep)
    values: list[Value] = []
    for p in keep:
        value = decoded.values[p]
        assert value is not None  # only failed positions hold None
        values.append(value)
    out.blocks.append(
        DecodedBlock(
            indices,
            tuple(decoder.measurepoints[p] for p in keep),
            values,
            tuple(renumber[p] for p in decoded.nonfinite),
            ts_ms,
            words,
            tuple(spans[p] for p in keep),
            _ascending(indices),
        )
    )


@dataclass(slots=True)
class _LayoutDecoder:
    """One request layout's compiled decoder, its points and its last response (a cache)."""

    block: BlockDecoder
    indices: tuple[int, ...]
    measurepoints: tuple[str, ...]
    ascending: bool = field(init=False)
    last_words: list[int] | None = None
    last: BlockValues | None = None

    def __post_init__(self) -> None:
        self.ascending = _ascending(self.indices)


def _ascending(indices: Sequence[int]) -> bool:
    return all(a < b for a, b in pairwise(indices))
