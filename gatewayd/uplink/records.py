"""Spool frames → EnOS batch records, by concatenating their pre-encoded text.

A frame already holds the exact JSON of a record's ``measurepoints`` (`spool.frames`), so
a record is the device's key prefix, that text and the time: no per-point work on the
drain path. Only when EnOS rejects a value does a frame get parsed, to find and
dead-letter that one point (`point_record`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, NamedTuple

from gatewayd.enos.messages import MeasurepointRecord, encode_record
from gatewayd.spool.frames import encode_body, parse_body
from gatewayd.spool.rows import SpooledFrame

#: Resolves a gatewayd device name to its EnOS (product key, device key), or None.
KeyLookup = Callable[[str], tuple[str, str] | None]


class Bundle(NamedTuple):
    """One batch record: a frame and its exact bytes inside a batch `params` array."""

    frame: SpooledFrame
    encoded: bytes

    @property
    def device(self) -> str:
        return self.frame.device

    @property
    def points(self) -> int:
        return self.frame.points


def record_prefix(product_key: str, device_key: str) -> str:
    """The text of a record up to its ``measurepoints`` value (as `encode_record` writes)."""
    keys = json.dumps(
        {"productKey": product_key, "deviceKey": device_key},
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return keys[:-1] + ',"measurepoints":'


def withhold(frame: SpooledFrame, points: frozenset[str]) -> SpooledFrame | None:
    """`frame` without `points` (the cloud model lacks them); None when nothing is left."""
    kept = {k: v for k, v in parse_body(frame.body).items() if k not in points}
    if not kept:
        return None
    return frame._replace(body=encode_body(kept), points=len(kept))


def bundle_frames(
    frames: Iterable[SpooledFrame],
    keys: KeyLookup,
    withheld: Mapping[str, frozenset[str]] | None = None,
) -> tuple[list[Bundle], list[int]]:
    """The records of `frames`, in order, and the ids of frames of devices EnOS does not
    know (unknown or deleted: the caller acks them as nothing to send). Points in
    `withheld` (by device: measurepoints the cloud model lacks, which would make EnOS
    refuse the whole batch with 1204) are left out; a frame of nothing else is acked."""
    prefixes: dict[str, bytes | None] = {}  # one look-up per device, not per frame
    bundles: list[Bundle] = []
    unknown: list[int] = []
    for frame in frames:
        device = frame.device
        if device in prefixes:
            prefix = prefixes[device]
        else:
            found = keys(device)
            prefix = None if found is None else record_prefix(*found).encode()
            prefixes[device] = prefix
        if prefix is None:
            unknown.append(frame.id)
            continue
        if withheld and (drop := withheld.get(device)):
            kept = withhold(frame, drop)
            if kept is None:
                unknown.append(frame.id)
                continue
            frame = kept  # noqa: PLW2901 (the frame as it is sent)
        encoded = b'%s%s,"time":%d}' % (prefix, frame.body.encode(), frame.ts_ms)
        bundles.append(Bundle(frame, encoded))
    return bundles, unknown


def point_record(keys: tuple[str, str], frame: SpooledFrame, points: Mapping[str, Any]) -> bytes:
    """One record of some of a frame's (already shaped) points: the bisection path."""
    return encode_record(MeasurepointRecord(*keys, frame.ts_ms, dict(points)))


def frame_ids(bundles: Sequence[Bundle]) -> list[int]:
    """Every frame id the bundles carry."""
    return [bundle.frame.id for bundle in bundles]


def point_count(bundles: Sequence[Bundle]) -> int:
    """How many points the bundles carry."""
    return sum(bundle.frame.points for bundle in bundles)
