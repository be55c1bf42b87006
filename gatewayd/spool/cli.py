"""`gatewayd spool stats CONFIG` and `gatewayd spool dead-letters CONFIG`.

Both open the spool read-only (a WAL reader), so they work while the daemon runs and
never change the file: a damaged file is reported, not moved (that is the daemon's job).
Exit status: 0 ok, 66 (EX_NOINPUT) no spool file yet, 74 (EX_IOERR) unreadable spool,
78 (EX_CONFIG) invalid config.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sqlite3
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from gatewayd.config.cli import load_or_report
from gatewayd.spool import files, stats
from gatewayd.spool.rows import DeadLetter
from gatewayd.spool.stats import SpoolStats


def register(subparsers: Any) -> None:
    """Add `spool stats` and `spool dead-letters`."""
    spool = subparsers.add_parser(
        "spool",
        help="inspect the local spool (safe while the daemon runs)",
        description="Read the spool read-only: its size and backlog, or its dead letters.",
    )
    actions = spool.add_subparsers(dest="spool_command", metavar="ACTION", required=True)
    stats_cmd = actions.add_parser(
        "stats",
        help="points, frames and bytes per kind, oldest row, dead letters, dropped, file size",
    )
    stats_cmd.add_argument("config", type=Path, metavar="CONFIG", help="path to gatewayd.yaml")
    stats_cmd.add_argument("--json", action="store_true", help="print one JSON object")
    stats_cmd.set_defaults(func=run_stats)
    dead = actions.add_parser("dead-letters", help="rows EnOS rejected for good, newest first")
    dead.add_argument("config", type=Path, metavar="CONFIG", help="path to gatewayd.yaml")
    dead.add_argument("--limit", type=int, default=50, metavar="N", help="at most N (50)")
    dead.add_argument("--json", action="store_true", help="print a JSON array")
    dead.set_defaults(func=run_dead_letters)


def _open(config_path: Path) -> tuple[sqlite3.Connection, Path, int] | int:
    """The read-only connection, spool path and cap; or an exit status (message printed)."""
    config = load_or_report(config_path)
    if config is None:
        return os.EX_CONFIG
    path = config.spool.path
    if not path.exists():
        print(f"gatewayd spool: no spool file at {path} (the daemon creates it)", file=sys.stderr)
        return os.EX_NOINPUT
    try:
        return files.connect_read_only(path), path, config.spool.max_bytes
    except sqlite3.Error as exc:
        print(f"gatewayd spool: cannot read {path}: {exc}", file=sys.stderr)
        return os.EX_IOERR


def run_stats(args: argparse.Namespace) -> int:
    """Print the spool statistics."""
    opened = _open(args.config)
    if isinstance(opened, int):
        return opened
    conn, path, max_bytes = opened
    try:
        snapshot = stats.read_stats(conn, path, max_bytes)
    except sqlite3.Error as exc:
        print(f"gatewayd spool: cannot read {path}: {exc}", file=sys.stderr)
        return os.EX_IOERR
    finally:
        conn.close()
    now_ms = int(time.time() * 1000)
    if args.json:
        print(json.dumps(stats_json(snapshot, now_ms), indent=2))
    else:
        print(format_stats(snapshot, now_ms))
    return os.EX_OK


def run_dead_letters(args: argparse.Namespace) -> int:
    """Print the newest dead letters."""
    opened = _open(args.config)
    if isinstance(opened, int):
        return opened
    conn, path, _ = opened
    try:
        letters = stats.read_dead_letters(conn, max(0, args.limit))
    except sqlite3.Error as exc:
        print(f"gatewayd spool: cannot read {path}: {exc}", file=sys.stderr)
        return os.EX_IOERR
    finally:
        conn.close()
    if args.json:
        print(json.dumps([dead_letter_json(letter) for letter in letters], indent=2))
    elif not letters:
        print("no dead letters")
    else:
        print("\n".join(format_dead_letter(letter) for letter in letters))
    return os.EX_OK


# -- formatting (pure: the time comes in as an argument) ---------------------------------


def iso(ts_ms: int) -> str:
    """UTC ISO 8601 with milliseconds, e.g. 2026-05-09T10:15:00.123Z."""
    moment = datetime.fromtimestamp(ts_ms / 1000, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ts_ms % 1000:03d}Z"


def age(ms: int) -> str:
    """A duration for people: 850ms, 42s, 5m 3s, 2h 10m, 3d 4h."""
    if ms < 1000:
        return f"{max(ms, 0)}ms"
    seconds = ms // 1000
    for unit, size, sub_unit, sub_size in (
        ("d", 86400, "h", 3600),
        ("h", 3600, "m", 60),
        ("m", 60, "s", 1),
    ):
        if seconds >= size:
            return f"{seconds // size}{unit} {seconds % size // sub_size}{sub_unit}"
    return f"{seconds}s"


def size(count: int | None) -> str:
    """Bytes for people (binary units)."""
    if count is None:
        return "n/a"
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def _when(ts_ms: int | None, now_ms: int) -> str:
    return "-" if ts_ms is None else f"{iso(ts_ms)} ({age(now_ms - ts_ms)} ago)"


def format_stats(snapshot: SpoolStats, now_ms: int) -> str:
    """The human-readable `spool stats` text."""
    share = 100.0 * snapshot.file_bytes / snapshot.max_bytes
    return "\n".join(
        [
            f"spool         {snapshot.path} (schema {snapshot.schema_version})",
            f"file          {size(snapshot.file_bytes)} of {size(snapshot.max_bytes)} cap"
            f" ({share:.1f}%)",
            f"samples       {snapshot.samples} points in {snapshot.frames} frames,"
            f" {size(snapshot.sample_bytes)}, oldest {_when(snapshot.oldest_sample_ts_ms, now_ms)}",
            f"events        {snapshot.events} rows, {size(snapshot.event_bytes)},"
            f" oldest {_when(snapshot.oldest_event_ts_ms, now_ms)}",
            "in flight     n/a (known only to the running daemon)",
            f"dead letters  {snapshot.dead_letters} points/events,"
            f" {size(snapshot.dead_letter_bytes)} ({snapshot.dropped_dead_letters} older ones"
            " dropped)",
            f"dropped       {snapshot.dropped_samples} sample points, {snapshot.dropped_events}"
            " events (byte cap or full disk)",
            f"not sendable  {snapshot.unsendable_samples} sample points (not good and no quality"
            " indicator in the model, or NaN/infinity)",
            f"last append   {_when(snapshot.last_append_ms, now_ms)}",
        ]
    )


def stats_json(snapshot: SpoolStats, now_ms: int) -> dict[str, Any]:
    """The `spool stats --json` object: every field, plus ISO times and ages in ms."""
    data = dataclasses.asdict(snapshot)
    for key in ("oldest_sample_ts_ms", "oldest_event_ts_ms", "last_append_ms"):
        value = data[key]
        stem = key.removesuffix("_ms")
        data[f"{stem}_iso"] = None if value is None else iso(value)
        data[f"{stem}_age_ms"] = None if value is None else now_ms - value
    return data


def dead_letter_json(letter: DeadLetter) -> dict[str, Any]:
    """One dead letter as a JSON object (kind as text, times also as ISO)."""
    data = letter._asdict()
    data["kind"] = str(letter.kind)
    data["ts_iso"] = iso(letter.ts_ms)
    data["failed_iso"] = iso(letter.failed_ms)
    return data


def format_dead_letter(letter: DeadLetter) -> str:
    """One dead letter as one line."""
    what = (
        f"value={letter.value!r} quality={letter.quality}"
        if letter.params is None
        else f"params={json.dumps(letter.params, sort_keys=True)}"
    )
    return (
        f"{iso(letter.failed_ms)}  code {letter.code}  {letter.kind}  {letter.device}"
        f"  {letter.name}  at {iso(letter.ts_ms)}  {what}  {letter.message}"
    )
