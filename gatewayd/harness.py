"""The simulation harness as an optional guest: `gatewayd demo` and `gatewayd emulate`.

The harness (device simulator, EnOS emulator, demo) lives in `gatewayd.sim` and needs the
`sim` extra (amqtt, the emulator's broker). A plain `pip install gatewayd` and the Debian
package leave it out, so no product module imports it: this module is the one seam, and it
loads the harness's command line by name. Without the harness its two subcommands still
exist and say in one line how to get it, exiting 69 (EX_UNAVAILABLE).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Any

__all__ = ["HARNESS_CLI", "HARNESS_COMMANDS", "SIM_EXTRA_HINT", "harness_missing", "register"]

#: The harness's command-line module, imported by name only (see the module docstring).
HARNESS_CLI = "gatewayd.sim.cli"
#: The subcommands the harness provides, with their one-line help.
HARNESS_COMMANDS: dict[str, str] = {
    "demo": "run a simulated site, the EnOS emulator and gatewayd, and watch data arrive",
    "emulate": "run a local EnOS cloud emulator (MQTT broker + EnOS behaviour)",
}
SIM_EXTRA_HINT = "pip install 'gatewayd[sim]'"
_HARNESS_PACKAGES = ("gatewayd.sim", HARNESS_CLI)


def harness_missing(command: str, missing: str) -> int:
    """Print the one-line hint for `gatewayd COMMAND` without `missing`; the exit status."""
    print(
        f"gatewayd {command}: needs the simulation harness ({missing} is not installed): "
        f"{SIM_EXTRA_HINT}",
        file=sys.stderr,
    )
    return os.EX_UNAVAILABLE


def register(subparsers: Any) -> None:
    """Add the harness's subcommands, or stand-ins that print the hint when it is absent."""
    try:
        harness = importlib.import_module(HARNESS_CLI)
    except ModuleNotFoundError as exc:
        if exc.name not in _HARNESS_PACKAGES:  # a bug inside the harness: show it
            raise
        _register_stand_ins(subparsers, missing="gatewayd.sim")  # the .deb leaves it out
        return
    harness.register(subparsers)


def _register_stand_ins(subparsers: Any, *, missing: str) -> None:
    for command, help_text in HARNESS_COMMANDS.items():
        # No option is known here, so none may be refused before the hint is printed: with
        # a prefix character no argument starts with, every argument is a positional one.
        stand_in = subparsers.add_parser(command, help=help_text, prefix_chars="\0", add_help=False)
        stand_in.add_argument("ignored", nargs=argparse.REMAINDER)
        stand_in.set_defaults(func=lambda _args, command=command: harness_missing(command, missing))
