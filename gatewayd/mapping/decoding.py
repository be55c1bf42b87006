"""Raw responses → decoded values: the mapping stage's first step (pure, no I/O).

The poller hands over each good response as it came off the wire: the request it answers
(which points, which register or bit range) with its words and timestamp (`RawResponse`).
A `ResponseDecoder` turns those into values with a `BlockDecoder` compiled once per request
layout and cached: a steady plan compiles nothing after its first cycle. The compiled
decoders depend on the model alone, so the devices of one model share them (`ModelDecoders`,
handed out by the daemon's `SharedDecoders`: about 24 MiB of a 200 x 1000-point site when
each device compiled its own); what a device saw last (its words and values) stays its own.
Each response becomes one `DecodedBlock` (indices, values, one timestamp) rather than an
object per point: the poll hot path. Points whose registers do not decode (a BCD nibble
over 9, a bad string) fail on their own, with the codec's error text and their raw
registers.

The daemon's mapping stage (`stage.DeviceMapping`) owns one decoder per device; a command's
read-back and `gatewayd read` decode with one of their own, so they show the same values.
"""

from __future__ import annotations

from array import array
from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise
from typing import NamedTuple, Protocol

from gatewayd.config.enums import Order
from gatewayd.mapping.blockdecode import BlockDecoder, BlockValues
from gatewayd.modbus.specs import PointSpec
from gatewayd.samples import Value

__all__ = [
    "Decoded",
    "DecodedBlock",
    "ModelDecoders",
    "PointReading",
    "RawResponse",
    "RequestLayout",
    "ResponseDecoder",
    "SharedDecoders",
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


@dataclass(frozen=True, slots=True, eq=False)
class CompiledLayout:
    """One request layout compiled: its block decoder and points (pure, shareable)."""

    block: BlockDecoder
    indices: tuple[int, ...]  # model indices, in request (address) order
    measurepoints: tuple[str, ...]
    ascending: bool  # `indices` strictly ascending


class ModelDecoders:
    """One model's compiled decoders, one per request layout, for all its devices.

    `points` are the model's points, `orders` their (byte, word) order, same order
    (`codec.point_orders` resolves a point's from its own, the device's and the model's).
    """

    def __init__(self, points: Sequence[PointSpec], orders: Sequence[tuple[Order, Order]]) -> None:
        if len(points) != len(orders):
            raise ValueError(f"{len(points)} points but {len(orders)} orders")
        self.points = points if isinstance(points, tuple) else tuple(points)
        self.orders = orders if isinstance(orders, tuple) else tuple(orders)
        self._compiled: dict[Hashable, CompiledLayout] = {}

    def compiled(self, request: RequestLayout) -> CompiledLayout:
        """`request`'s compiled decoder (compiled on first use, then cached)."""
        compiled = self._compiled.get(request)
        if compiled is None:
            if len(self._compiled) >= DECODER_CACHE_SIZE:
                self._compiled.clear()  # plans are few and stable; this only bounds a pathology
            indices = request.points
            compiled = self._compiled[request] = CompiledLayout(
                BlockDecoder(
                    [self.points[i] for i in indices],
                    [self.orders[i] for i in indices],
                    start=request.start,
                    count=request.count,
                ),
                indices,
                tuple(self.points[i].measurepoint for i in indices),
                _ascending(indices),
            )
        return compiled

    def __len__(self) -> int:
        return len(self._compiled)


class SharedDecoders:
    """Hands every device of one model the same `ModelDecoders` (the daemon keeps one).

    A model is known by the identity of its points and orders tuples: the pollers' model
    layouts (`modbus.layout.Layouts`) give each device of a model the same two tuples.
    """

    def __init__(self) -> None:
        self._by_key: dict[tuple[int, int], ModelDecoders] = {}

    def of(
        self, points: tuple[PointSpec, ...], orders: tuple[tuple[Order, Order], ...]
    ) -> ModelDecoders:
        """The decoders shared by the devices whose model has these `points` and `orders`."""
        # By identity: the entry holds both tuples, so their ids are not reused while cached.
        key = (id(points), id(orders))
        decoders = self._by_key.get(key)
        if decoders is None:
            decoders = self._by_key[key] = ModelDecoders(points, orders)
        return decoders

    def __len__(self) -> int:
        return len(self._by_key)


class ResponseDecoder:
    """Decodes one device's responses, with a compiled decoder cached per request layout.

    `points` are the device model's points, `orders` their (byte, word) order, same order.
    `shared`: the model's compiled decoders, shared with its other devices (by default the
    decoder compiles its own); the words and values of the last response of each layout
    are this device's.
    """

    def __init__(
        self,
        points: Sequence[PointSpec],
        orders: Sequence[tuple[Order, Order]],
        *,
        shared: ModelDecoders | None = None,
    ) -> None:
        if shared is None:
            shared = ModelDecoders(points, orders)
        elif tuple(points) != shared.points or tuple(orders) != shared.orders:
            raise ValueError("the shared decoders are compiled for other points or orders")
        self.shared = shared
        self.points = shared.points
        self.orders = shared.orders
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
        # values are steady between polls, and one comparison costs next to nothing. The
        # words are kept as 16-bit registers, 2 bytes each (a list of ints kept about 36:
        # 13 MiB of a 200 x 1000-point site); a word out of 0..65535 is not kept at all.
        try:
            packed: array[int] | None = array("H", words)
        except (OverflowError, TypeError):
            packed = None
        if packed is None or decoder.last_words != packed:
            decoder.last_words = packed
            decoder.last = decoder.compiled.block.decode(words)
        decoded = decoder.last
        assert decoded is not None
        compiled = decoder.compiled
        if not decoded.errors:
            out.blocks.append(
                DecodedBlock(
                    compiled.indices,
                    compiled.measurepoints,
                    decoded.values,  # type: ignore[arg-type]  # no errors: no None in it
                    decoded.nonfinite,
                    response.ts_ms,
                    words,
                    compiled.block.spans,
                    compiled.ascending,
                )
            )
            return
        _split_failures(compiled, decoded, words, response.ts_ms, out)

    def _compile(self, request: RequestLayout) -> _LayoutDecoder:
        """This device's cache entry for `request` (the compiled part is the model's)."""
        if len(self._decoders) >= DECODER_CACHE_SIZE:
            self._decoders.clear()  # plans are few and stable; this only bounds a pathology
        decoder = self._decoders[request] = _LayoutDecoder(self.shared.compiled(request))
        return decoder


def _split_failures(
    decoder: CompiledLayout,
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
    """One device's entry for one request layout: the model's compiled decoder and this
    device's last response (a cache: its words and what they decoded to)."""

    compiled: CompiledLayout
    last_words: array[int] | None = None
    last: BlockValues | None = None


def _ascending(indices: Sequence[int]) -> bool:
    return all(a < b for a, b in pairwise(indices))
