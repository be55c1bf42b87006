"""Spool rows → EnOS batch records, keeping track of which row carried which point.

A batch record is one device at one instant with many measurepoints; the spool holds one
row per point. `bundle_samples` groups rows into records (pure), remembering the row id of
every point, so a reply can be applied precisely: ack the whole message, or - when EnOS
rejects it - bisect down to the one point it refuses and dead-letter only that row.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass

from gatewayd.enos.messages import MeasurepointRecord, encode_record, point_value
from gatewayd.samples import Quality
from gatewayd.spool.rows import SpooledSample

#: Resolves a gatewayd device name to its EnOS (product key, device key), or None.
KeyLookup = Callable[[str], tuple[str, str] | None]


@dataclass(frozen=True, slots=True)
class Bundle:
    """One batch record and the spool rows it carries, point by point."""

    device: str
    time_ms: int
    record: MeasurepointRecord
    encoded: bytes  # the record's exact bytes inside a batch `params` array
    row_ids: tuple[int, ...]  # in the order of `record.measurepoints`

    def split_points(self) -> list[Bundle]:
        """One bundle per point: the last step of isolating a rejected value."""
        out = []
        points = self.record.measurepoints.items()
        for (name, value), row_id in zip(points, self.row_ids, strict=True):
            record = self.record._replace(measurepoints={name: value})
            out.append(Bundle(self.device, self.time_ms, record, encode_record(record), (row_id,)))
        return out

    @property
    def measurepoints(self) -> tuple[str, ...]:
        return tuple(self.record.measurepoints)


def bundle_samples(
    rows: Iterable[SpooledSample],
    keys: KeyLookup,
    quality_points: Collection[tuple[str, str]],
) -> tuple[list[Bundle], list[int]]:
    """Group rows by (device, time) into records, in first-seen order.

    `quality_points` holds the (device, measurepoint) pairs whose model enables EnOS'
    quality indicator: their values go out as ``{"value", "quality"}``. Rows EnOS cannot
    take - an unknown device, or a non-good value of a point without the quality
    indicator - come back in the second list (the caller acks them as nothing to send).
    A repeated point within one (device, time) - the same instant spooled twice - goes
    to a second record, so no row is silently merged away.
    """
    groups: dict[tuple[str, int, int], tuple[dict[str, object], list[int]]] = {}
    unsendable: list[int] = []
    known: dict[str, tuple[str, str] | None] = {}  # one look-up per device, not per row
    for row in rows:
        device = row.device
        if device not in known:
            known[device] = keys(device)
        if known[device] is None:
            unsendable.append(row.id)
            continue
        with_quality = bool(quality_points) and (device, row.measurepoint) in quality_points
        if row.quality != Quality.GOOD and not with_quality:
            unsendable.append(row.id)
            continue
        value = point_value(row.value, row.quality if with_quality else None)
        generation = 0
        while True:
            points, ids = groups.setdefault((row.device, row.ts_ms, generation), ({}, []))
            if row.measurepoint not in points:
                break
            generation += 1
        points[row.measurepoint] = value
        ids.append(row.id)
    bundles = []
    for (device, time_ms, _), (points, ids) in groups.items():
        product_key, device_key = known[device] or ("", "")
        record = MeasurepointRecord(product_key, device_key, time_ms, points)
        bundles.append(Bundle(device, time_ms, record, encode_record(record), tuple(ids)))
    return bundles, unsendable


def row_ids(bundles: Sequence[Bundle]) -> list[int]:
    """Every row id the bundles carry."""
    return [row_id for bundle in bundles for row_id in bundle.row_ids]
