"""The `gatewayd` command line: one subcommand per job, each in the module that owns it.

Each module listed in `COMMAND_MODULES` exposes `register(subparsers)`, which adds its
subcommand(s) with `set_defaults(func=...)`; `func(args) -> int` is the exit status.
Modules are imported lazily per run so `gatewayd check` does not pay for the MQTT stack.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence

from gatewayd import __version__

#: Modules that contribute subcommands, in `--help` order.
COMMAND_MODULES: tuple[str, ...] = (
    "gatewayd.config.cli",
    "gatewayd.daemon_cli",
    "gatewayd.spool.cli",
    "gatewayd.modbus.cli",
    "gatewayd.integration.cli",
    "gatewayd.uplink.cli",  # topo
    "gatewayd.harness",  # demo, emulate: the optional simulation harness
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="gatewayd",
        description="Edge gateway daemon: Modbus devices to Envision EnOS, store-and-forward.",
    )
    parser.add_argument("--version", action="version", version=f"gatewayd {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    func = getattr(args, "func", None)
    if func is None:
        parser.print_help(sys.stderr)
        return os.EX_USAGE
    # Logs go to stderr from the start, for every command: stdout carries only the
    # command's output (`read --json` is parsed by scripts). Unconfigured, structlog would
    # print to stdout. Warnings and errors only: a one-shot command's progress is its output,
    # and `run` and `demo` configure their own level and destination on top.
    from gatewayd.logging import configure_logging  # noqa: PLC0415 - after argument parsing

    configure_logging(logging.WARNING)
    try:
        status: int = func(args)
    except KeyboardInterrupt:
        return 130
    return status
