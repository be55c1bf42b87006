"""Size-bounded packing of measurepoint records into post.batch / resume.batch messages.

EnOS refuses messages of 512 KiB or more (1008, and the SDKs refuse them client-side), so
every batch we publish must stay below that, without dropping or duplicating a record.

How: each record is serialised exactly once (`messages.encode_record`); a batch payload is
``head + b",".join(records) + tail`` (see `messages.batch_envelope`), so its size is known
exactly from the record sizes -- nothing is re-serialised while packing. Records are packed
greedily in input order (the spool hands them oldest-first, and the order is kept). A record
that alone does not fit in an empty message is split by measurepoints into records with the
same device and time; the first part fills the room left in the current message. A single
measurepoint too big for any message cannot be sent at all: it is reported in `unsendable`
(never silently dropped) so the caller can dead-letter it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from gatewayd.enos.messages import (
    MeasurepointRecord,
    Request,
    batch_envelope,
    dumps,
    encode_record,
)

#: EnOS' message limit; a payload must be strictly smaller.
MAX_PAYLOAD_BYTES = 512 * 1024
#: What we aim for by default: 1 KiB of margin below the limit.
DEFAULT_MAX_BATCH_BYTES = MAX_PAYLOAD_BYTES - 1024
#: Room reserved for the request id when sizing envelopes (a generator id is <= 20 digits).
ID_RESERVE = 24


@dataclass(frozen=True, slots=True)
class RecordBatch:
    """Records that go into one message.

    `sources[i]` is the index (in the input sequence) of the record `records[i]` came from;
    the parts of a split record share their source index. `encoded[i]` is the exact bytes of
    `records[i]` inside the ``params`` array.
    """

    records: tuple[MeasurepointRecord, ...]
    sources: tuple[int, ...]
    encoded: tuple[bytes, ...] = field(repr=False)


@dataclass(frozen=True, slots=True)
class Unsendable:
    """A measurepoint value that does not fit in any message on its own."""

    source: int  # index of the input record
    measurepoint: str
    size: int  # bytes of the smallest record carrying only this point


@dataclass(frozen=True, slots=True)
class SplitResult:
    """The batches, in input order, and what could not be sent."""

    batches: list[RecordBatch]
    unsendable: list[Unsendable]


class _Packer:
    """Accumulates encoded records into batches whose record section fits `budget`."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.batches: list[RecordBatch] = []
        self._records: list[MeasurepointRecord] = []
        self._sources: list[int] = []
        self._encoded: list[bytes] = []
        self._used = 0  # bytes of records + separating commas in the open batch

    def room(self) -> int:
        """Bytes a further record may take in the open batch (its comma already deducted)."""
        return self.budget - self._used - (1 if self._encoded else 0)

    def add(self, record: MeasurepointRecord, source: int, encoded: bytes) -> None:
        """Append to the open batch, opening a new one first if it does not fit."""
        if len(encoded) > self.room():
            self.flush()
        self._used += len(encoded) + (1 if self._encoded else 0)
        self._records.append(record)
        self._sources.append(source)
        self._encoded.append(encoded)

    def flush(self) -> None:
        """Close the open batch (if it has anything)."""
        if self._encoded:
            self.batches.append(
                RecordBatch(tuple(self._records), tuple(self._sources), tuple(self._encoded))
            )
            self._records, self._sources, self._encoded, self._used = [], [], [], 0


def split_records(
    records: Sequence[MeasurepointRecord],
    *,
    overhead: int,
    max_bytes: int = DEFAULT_MAX_BATCH_BYTES,
) -> SplitResult:
    """Pack `records` into batches whose messages are at most `max_bytes` each.

    `overhead` is the envelope size (payload with an empty ``params`` array). Raises
    ValueError when `max_bytes` reaches the EnOS limit or leaves no room for records, and
    (from the JSON encoder) for NaN/Infinity values.
    """
    if max_bytes >= MAX_PAYLOAD_BYTES:
        raise ValueError(f"max_bytes must be below EnOS' {MAX_PAYLOAD_BYTES} B limit")
    budget = max_bytes - overhead
    if budget <= 0:
        raise ValueError(f"max_bytes {max_bytes} leaves no room after the {overhead} B envelope")
    packer = _Packer(budget)
    unsendable: list[Unsendable] = []
    for source, record in enumerate(records):
        encoded = encode_record(record)
        if len(encoded) <= budget:
            packer.add(record, source, encoded)
        else:
            _split_oversized(record, source, packer, unsendable)
    packer.flush()
    return SplitResult(packer.batches, unsendable)


def _point_size(name: str, value: Any) -> int:
    # Bytes of `"name":value` inside the measurepoints object (exact: same encoder).
    return len(dumps({name: value})) - 2


def _split_oversized(
    record: MeasurepointRecord, source: int, packer: _Packer, unsendable: list[Unsendable]
) -> None:
    """Split one record by measurepoints into parts that each fit a message."""
    base = len(encode_record(record._replace(measurepoints={})))
    points = list(record.measurepoints.items())
    sizes = [_point_size(name, value) for name, value in points]
    if not points:  # only absurdly long keys make an empty record oversized
        unsendable.append(Unsendable(source, "", base))
        return

    part: dict[str, Any] = {}
    part_len = base
    room = packer.room()

    def emit() -> None:
        sub = record._replace(measurepoints=part)
        packer.add(sub, source, encode_record(sub))

    for (name, value), size in zip(points, sizes, strict=True):
        if base + size > packer.budget:
            unsendable.append(Unsendable(source, name, base + size))
            continue
        grown = part_len + size + (1 if part else 0)
        if grown > room:
            if part:
                emit()
            # The open batch cannot take more of this record: continue in a fresh one.
            packer.flush()
            room = packer.budget
            part, part_len = {}, base
            grown = base + size
        part[name] = value
        part_len = grown
    if part:
        emit()


@dataclass(frozen=True, slots=True)
class BatchMessage:
    """One encoded batch request and the records it carries (see `RecordBatch`)."""

    request: Request
    records: tuple[MeasurepointRecord, ...]
    sources: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class EncodedBatches:
    """The messages to publish, in input order, and what could not be sent."""

    messages: list[BatchMessage]
    unsendable: list[Unsendable]


def encode_batches(
    gw_pk: str,
    gw_dk: str,
    records: Sequence[MeasurepointRecord],
    *,
    next_id: Callable[[], str],
    resume: bool,
    allow_offline_sub_device: bool = False,
    skip_invalid_measurepoints: bool = False,
    max_bytes: int = DEFAULT_MAX_BATCH_BYTES,
) -> EncodedBatches:
    """Split `records` and encode each part as a post.batch (or resume.batch) request.

    `next_id` is called once per message (e.g. an `IdGenerator`); ids must be at most
    `ID_RESERVE` characters. Every payload is at most `max_bytes`.
    """
    flags = {
        "resume": resume,
        "allow_offline_sub_device": allow_offline_sub_device,
        "skip_invalid_measurepoints": skip_invalid_measurepoints,
    }
    _, _, head, tail = batch_envelope(gw_pk, gw_dk, id="0" * ID_RESERVE, **flags)
    split = split_records(records, overhead=len(head) + len(tail), max_bytes=max_bytes)
    out: list[BatchMessage] = []
    for batch in split.batches:
        msg_id = next_id()
        if len(msg_id) > ID_RESERVE:
            raise ValueError(f"request id {msg_id!r} is longer than {ID_RESERVE} characters")
        topic, method, head, tail = batch_envelope(gw_pk, gw_dk, id=msg_id, **flags)
        payload = head + b",".join(batch.encoded) + tail
        out.append(
            BatchMessage(Request(topic, msg_id, method, payload), batch.records, batch.sources)
        )
    return EncodedBatches(out, split.unsendable)
