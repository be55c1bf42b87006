"""Hands out the oldest rows not in flight: the begin of the spool's begin/commit.

The ledger decides which of the rows read belong to a take (and where the next one
starts); this module reads them and shapes them into `SpooledFrame`/`SpooledEvent`.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from gatewayd.spool.ledger import DeliveryLedger, TakeMode
from gatewayd.spool.rows import Kind, SpooledEvent, SpooledFrame
from gatewayd.spool.sqlstore import SqlStore


class Taker:
    """Reads the next rows of a take and puts them in flight."""

    def __init__(self, sql: SqlStore, ledger: DeliveryLedger) -> None:
        self._sql = sql
        self._ledger = ledger

    def frames(
        self,
        limit: int,
        older_than_ms: int | None,
        newer_than_ms: int | None,
        exclude_devices: Collection[str],
    ) -> list[SpooledFrame]:
        """The oldest `limit` frames not in flight (see `SpoolStore.take_frames`)."""
        rows = self._take(Kind.SAMPLES, limit, older_than_ms, newer_than_ms, exclude_devices)
        weigh = self._ledger.weigh
        frames = []
        for row_id, device, points, body, ts_ms in rows:
            weigh(row_id, points)
            frames.append(SpooledFrame(row_id, device, ts_ms, points, body))
        return frames

    def events(
        self,
        limit: int,
        older_than_ms: int | None,
        newer_than_ms: int | None,
        exclude_devices: Collection[str],
    ) -> list[SpooledEvent]:
        """The oldest `limit` events not in flight (see `SpoolStore.take_events`)."""
        rows = self._take(Kind.EVENTS, limit, older_than_ms, newer_than_ms, exclude_devices)
        return [
            SpooledEvent(row_id, device, event_id, json.loads(params), ts_ms)
            for row_id, device, event_id, params, ts_ms in rows
        ]

    def _take(
        self,
        kind: Kind,
        limit: int,
        older_than_ms: int | None,
        newer_than_ms: int | None,
        exclude_devices: Collection[str],
    ) -> list[tuple[Any, ...]]:
        mode = TakeMode.of(older_than_ms, newer_than_ms)
        if limit <= 0:
            return []
        excluded = frozenset(exclude_devices)
        cursor = self._ledger.scan_from(kind, mode, excluded)
        rows = self._sql.select(
            kind,
            cursor,
            self._ledger.window(kind, limit),
            newer_than_ms=newer_than_ms,
            held_json=json.dumps(sorted(excluded)) if excluded else None,
        )
        return self._ledger.take(kind, mode, rows, limit, older_than_ms)
