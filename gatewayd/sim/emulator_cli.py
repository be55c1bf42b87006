"""`gatewayd emulate`: run the EnOS cloud emulator until SIGINT/SIGTERM.

Serves an `emulator.yaml` (`--config`) or the cloud side of a gatewayd config
(`--gateway-config`, the same identities and points the daemon uses). Prints a one-line
summary to stderr every `--summary-interval` and on exit; `--dump FILE` writes everything
the emulated cloud accepted (live and backfill kept apart) as JSON on shutdown.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from gatewayd.config.errors import ConfigError
from gatewayd.config.loader import load_config
from gatewayd.harness import HARNESS_COMMANDS

if TYPE_CHECKING:  # imported when the command runs: `gatewayd check` skips amqtt
    from gatewayd.sim.emulator import EmulatorConfig, EnosEmulator
    from gatewayd.sim.emulator.http_server import IntegrationHttpServer



def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `emulate` subcommand; its parser."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "emulate",
        help=HARNESS_COMMANDS["emulate"],
        description=(
            "Run an EnOS cloud emulator on HOST:PORT: EnOS CONNECT authentication, "
            "sub-device login, topology, measurepoint post/resume, events and commands, "
            "as documented in gatewayd/enos/PROTOCOL.md. Runs until SIGINT/SIGTERM."
        ),
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, metavar="EMU.yaml", help="emulator config")
    source.add_argument(
        "--gateway-config",
        type=Path,
        metavar="GATEWAYD.yaml",
        help="serve the cloud side of this gatewayd config instead",
    )
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default %(default)s)")
    parser.add_argument(
        "--port", type=int, default=11883, help="listen port (default %(default)s, as EnOS)"
    )
    parser.add_argument(
        "--http-port",
        type=int,
        metavar="PORT",
        help="also serve the HTTP integration channel here (needs the config's 'integration')",
    )
    parser.add_argument("--dump", type=Path, metavar="FILE", help="write records here on exit")
    parser.add_argument(
        "--summary-interval",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="seconds between summary lines on stderr (default %(default)s)",
    )
    parser.set_defaults(func=run_emulate)
    return parser


def _load(args: argparse.Namespace) -> EmulatorConfig:
    from gatewayd.sim.emulator import EmulatorConfig  # noqa: PLC0415 - see TYPE_CHECKING

    if args.config is not None:
        return EmulatorConfig.load(args.config)
    return EmulatorConfig.from_gateway_config(load_config(args.gateway_config))


def run_emulate(args: argparse.Namespace) -> int:
    """Load the config, serve until a signal, dump; returns the exit status."""
    try:
        config = _load(args)
    except ConfigError as exc:
        print(f"gatewayd emulate: {exc}", file=sys.stderr)
        return os.EX_CONFIG
    except (OSError, ValueError, ValidationError) as exc:
        source = args.config or args.gateway_config
        print(f"gatewayd emulate: {source}: {exc}", file=sys.stderr)
        return os.EX_CONFIG
    return asyncio.run(_serve(config, args))


def _summary(emu: EnosEmulator) -> str:
    counts = emu.records.counts()
    online = sum(len(emu.state.online_sub_devices(d)) for d in emu.connected_devices())
    return (
        f"gatewayd emulate: connected={len(emu.connected_devices())} online_sub={online} "
        f"post={counts['post']} resume={counts['resume']} events={counts['events']} "
        f"{emu.stats.summary()}"
    )


async def _serve(config: EmulatorConfig, args: argparse.Namespace) -> int:
    from gatewayd.sim.emulator import EnosEmulator  # noqa: PLC0415 - see TYPE_CHECKING

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    emu = EnosEmulator(config, host=args.host, port=args.port)
    try:
        await emu.start()
    except Exception as exc:  # amqtt wraps bind errors in BrokerError
        print(f"gatewayd emulate: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return os.EX_UNAVAILABLE
    print(f"gatewayd emulate: listening on {args.host}:{args.port}", file=sys.stderr, flush=True)
    http = _start_http(config, args, emu)
    if isinstance(http, int):
        await emu.stop()
        return http
    try:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.summary_interval)
            print(_summary(emu), file=sys.stderr, flush=True)
    finally:
        if http is not None:
            http.stop()
        await emu.stop()
        if args.dump is not None:
            emu.dump(args.dump)
            print(f"gatewayd emulate: records written to {args.dump}", file=sys.stderr)
    return os.EX_OK


def _start_http(
    config: EmulatorConfig, args: argparse.Namespace, emu: EnosEmulator
) -> IntegrationHttpServer | int | None:
    """The HTTP integration channel when `--http-port` asks for it; an exit status on failure."""
    if args.http_port is None:
        return None
    from gatewayd.sim.emulator.http_cloud import (  # noqa: PLC0415 - only with --http-port
        IntegrationCloud,
        IntegrationSpec,
    )
    from gatewayd.sim.emulator.http_server import IntegrationHttpServer  # noqa: PLC0415

    try:
        spec = IntegrationSpec.from_emulator_config(config)
    except ValueError as exc:
        print(f"gatewayd emulate: --http-port: {exc}", file=sys.stderr)
        return os.EX_CONFIG
    try:
        server = IntegrationHttpServer(
            IntegrationCloud(spec, state=emu.state), args.http_port, host=args.host
        )
    except OSError as exc:
        print(
            f"gatewayd emulate: cannot listen on {args.host}:{args.http_port}: {exc.strerror}",
            file=sys.stderr,
        )
        return os.EX_UNAVAILABLE
    server.start()
    print(f"gatewayd emulate: HTTP integration on {server.url}", file=sys.stderr, flush=True)
    return server
