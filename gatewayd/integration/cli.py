"""`gatewayd files get|delete CONFIG --device NAME URI`: stored EnOS files (seed 003);
`gatewayd files dead-letters CONFIG`: file events EnOS refused for good.

Uses the config's `integration.http` service account; the device names the asset (its
product and device keys). `get` streams the file to `PATH.part` and renames it to PATH
when complete (`-o -`: to stdout), never holding the whole file in memory.

Exit statuses (sysexits): 0 done; 64 unknown device; 66 (EX_NOINPUT) no such file in
EnOS; 69 (EX_UNAVAILABLE) EnOS unreachable, timed out or answering 5xx; 73 (EX_CANTCREAT)
the output cannot be written; 76 (EX_PROTOCOL) another refusal from EnOS; 77 (EX_NOPERM)
the service account was refused (token service, or a token refused after one refresh);
78 (EX_CONFIG) invalid config or no `integration.http` section.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

from gatewayd.config.cli import load_or_report
from gatewayd.config.models import Config, LogFormat, LogLevel
from gatewayd.config.suggest import hint_for
from gatewayd.integration.message import AssetRef
from gatewayd.integration.replies import (
    IntegrationAuthError,
    IntegrationError,
    IntegrationNotFound,
    IntegrationUnavailable,
)
from gatewayd.logging import configure_logging, register_secret

PROG = "gatewayd files"


def register(subparsers: Any) -> None:
    """Add `files get` and `files delete`."""
    files = subparsers.add_parser(
        "files",
        help="download or delete a file stored in EnOS (integration.http)",
        description="Download or delete a file EnOS stored for a device's file-typed value.",
    )
    actions = files.add_subparsers(dest="files_command", metavar="ACTION", required=True)
    get = actions.add_parser("get", help="download a stored file, streamed to disk")
    delete = actions.add_parser("delete", help="delete a stored file")
    for cmd in (get, delete):
        cmd.add_argument("config", type=Path, metavar="CONFIG", help="path to gatewayd.yaml")
        cmd.add_argument("--device", required=True, metavar="NAME", help="the device's name")
        cmd.add_argument("uri", metavar="URI", help="the file's URI (enos-connect://...)")
    get.add_argument(
        "-o",
        "--output",
        metavar="PATH",
        help="where to save it ('-': stdout; default: the URI's last segment, here)",
    )
    get.set_defaults(func=run_get)
    delete.set_defaults(func=run_delete)
    dead = actions.add_parser(
        "dead-letters", help="file events EnOS refused for good, with its reply"
    )
    dead.add_argument("config", type=Path, metavar="CONFIG", help="path to gatewayd.yaml")
    dead.add_argument("--json", action="store_true", help="one JSON object per line")
    dead.set_defaults(func=run_dead_letters)


def _fail(message: str, status: int) -> int:
    print(f"{PROG}: {message}", file=sys.stderr)
    return status


def _asset(config: Config, name: str) -> AssetRef | None:
    for device in config.devices:
        if device.name == name:
            return AssetRef(product_key=device.product_key, device_key=device.device_key)
    return None


def _prepare(args: argparse.Namespace) -> tuple[Config, AssetRef] | int:
    config = load_or_report(args.config)
    if config is None:
        return os.EX_CONFIG
    if config.integration.http is None:
        return _fail(f"{args.config} has no integration.http section (see README)", os.EX_CONFIG)
    asset = _asset(config, args.device)
    if asset is None:
        hint = hint_for(args.device, [d.name for d in config.devices], known="devices")
        message = f"no device named {args.device!r}" + (f" ({hint})" if hint else "")
        return _fail(message, os.EX_USAGE)
    return config, asset


def _status_of(exc: IntegrationError) -> int:
    if isinstance(exc, IntegrationAuthError):
        return os.EX_NOPERM
    if isinstance(exc, IntegrationNotFound):
        return os.EX_NOINPUT
    if isinstance(exc, IntegrationUnavailable):
        return os.EX_UNAVAILABLE
    return os.EX_PROTOCOL


async def _call(config: Config, action: Callable[[Any], Any]) -> Any:
    # httpx is loaded here, for this command only (it is not needed by the rest of the CLI).
    from gatewayd.integration.http import (  # noqa: PLC0415 - the httpx seam, lazily
        HttpSettings,
        IntegrationClient,
    )

    assert config.integration.http is not None
    # Logs go to stderr (stdout may be the file, `-o -`), and only warnings: the outcome
    # is the command's own one line.
    configure_logging(LogLevel.WARNING, LogFormat.CONSOLE, stream=sys.stderr)
    register_secret(config.integration.http.secret_key)  # never in a log line
    async with IntegrationClient(HttpSettings.from_config(config.integration.http)) as client:
        return await action(client)


def default_output(uri: str) -> Path:
    """The file name `get` saves to without `-o`: the URI's last path segment."""
    name = uri.rstrip("/").rsplit("/", 1)[-1].split("?", 1)[0]
    return Path(name if name not in ("", ".", "..") else "download")


def run_get(args: argparse.Namespace) -> int:
    """Download one stored file."""
    prepared = _prepare(args)
    if isinstance(prepared, int):
        return prepared
    config, asset = prepared
    if args.output == "-":
        out = sys.stdout.buffer
        try:
            asyncio.run(_call(config, lambda c: c.download(args.uri, asset, out.write)))
            out.flush()
        except IntegrationError as exc:
            return _fail(str(exc), _status_of(exc))
        return os.EX_OK
    target = Path(args.output) if args.output else default_output(args.uri)
    partial = target.with_name(target.name + ".part")
    try:
        handle: BinaryIO = partial.open("wb")
    except OSError as exc:
        return _fail(f"cannot write {partial}: {exc.strerror}", os.EX_CANTCREAT)
    try:
        with handle:
            size = asyncio.run(_call(config, lambda c: c.download(args.uri, asset, handle.write)))
            handle.flush()
            os.fsync(handle.fileno())
        partial.replace(target)
    except IntegrationError as exc:
        with contextlib.suppress(OSError):
            partial.unlink()
        return _fail(str(exc), _status_of(exc))
    except OSError as exc:
        with contextlib.suppress(OSError):
            partial.unlink()
        return _fail(f"cannot write {target}: {exc.strerror}", os.EX_CANTCREAT)
    print(f"{target}: {size} bytes", file=sys.stderr)
    return os.EX_OK


def run_delete(args: argparse.Namespace) -> int:
    """Delete one stored file."""
    prepared = _prepare(args)
    if isinstance(prepared, int):
        return prepared
    config, asset = prepared
    try:
        asyncio.run(_call(config, lambda c: c.delete(args.uri, asset)))
    except IntegrationError as exc:
        return _fail(str(exc), _status_of(exc))
    print(f"deleted {args.uri}")
    return os.EX_OK


def run_dead_letters(args: argparse.Namespace) -> int:
    """List the file events kept aside after a permanent refusal (no network, no httpx)."""
    from gatewayd.integration.filestore import read_counts, read_dead_letters  # noqa: PLC0415
    from gatewayd.integration.outbox import store_dir  # noqa: PLC0415

    config = load_or_report(args.config)
    if config is None:
        return os.EX_CONFIG
    letters = read_dead_letters(store_dir(config))
    for letter in letters:
        event = letter.event
        if args.json:
            print(json.dumps({"seq": event.seq, "device": event.device, "event": event.event,
                              "filename": event.filename, "time": event.time_ms,
                              "md5": event.md5, "length": event.length, "code": letter.code,
                              "msg": letter.msg}))  # fmt: skip
        else:
            print(f"{event.seq}\t{event.device}\t{event.event}\t{event.filename}\t"
                  f"{letter.code}\t{letter.msg}")  # fmt: skip
    pending, dropped = read_counts(store_dir(config))
    print(f"{len(letters)} dead letter(s), {pending} pending, {dropped.events} dropped at "
          f"integration.max_bytes ({dropped.bytes} bytes) in {store_dir(config)}",
          file=sys.stderr)  # fmt: skip
    return os.EX_OK
