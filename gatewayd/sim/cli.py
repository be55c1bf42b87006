"""The harness's subcommands (`demo`, `emulate`), loaded by `gatewayd.harness`.

Registering them imports only argparse-level code; running one first checks that the
`sim` extra is installed, so a wheel installed without it prints the one-line hint
instead of an ImportError from deep inside the emulator.
"""

from __future__ import annotations

import argparse
import importlib
from collections.abc import Callable
from typing import Any

from gatewayd.harness import harness_missing
from gatewayd.sim import emulator_cli
from gatewayd.sim.demo import cli as demo_cli

__all__ = ["SIM_REQUIREMENTS", "register"]

#: Top-level modules of the `sim` extra's distributions (pyproject.toml keeps them in step).
SIM_REQUIREMENTS: tuple[str, ...] = ("amqtt",)

Command = Callable[[argparse.Namespace], int]


def register(subparsers: Any) -> None:
    """Add `gatewayd demo` and `gatewayd emulate`, each behind the extra's check."""
    for command, module in (("demo", demo_cli), ("emulate", emulator_cli)):
        parser = module.register(subparsers)
        parser.set_defaults(func=_with_extra(command, parser.get_default("func")))


def _with_extra(command: str, run: Command) -> Command:
    """`run`, preceded by the check that every module of the `sim` extra imports."""

    def checked(args: argparse.Namespace) -> int:
        for name in SIM_REQUIREMENTS:
            try:
                importlib.import_module(name)
            except ImportError:
                return harness_missing(command, name)
        return run(args)

    return checked
