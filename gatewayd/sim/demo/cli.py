"""`gatewayd demo`: a simulated site, the EnOS emulator and the daemon, shown live."""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
from typing import Any

from gatewayd.config.units import parse_duration
from gatewayd.harness import HARNESS_COMMANDS

__all__ = ["register", "run_demo"]


def _duration(text: str) -> float:
    """argparse type: '30s', '2m', '500ms' → seconds (a bare number is refused, with a hint)."""
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def register(subparsers: Any) -> argparse.ArgumentParser:
    """Add the `demo` subcommand; its parser."""
    demo: argparse.ArgumentParser = subparsers.add_parser(
        "demo",
        help=HARNESS_COMMANDS["demo"],
        description=(
            "Start simulated Modbus devices (an inverter and a PLC over Modbus TCP, two "
            "SDM630 meters over RTU on a socat pty pair), the EnOS emulator and the gateway "
            "daemon in this process, on loopback ports, and show live what arrives in the "
            "cloud. Ctrl-C stops everything and prints a summary."
        ),
    )
    demo.add_argument(
        "--outage", type=_duration, metavar="DURATION",
        help="cut the uplink this long (e.g. 30s) to watch the spool fill and drain via resume",
    )  # fmt: skip
    demo.add_argument(
        "--outage-after", type=_duration, default=10.0, metavar="DURATION",
        help="when the outage starts (default: 10s)",
    )  # fmt: skip
    demo.add_argument(
        "--duration", type=_duration, metavar="DURATION",
        help="stop by itself after this long (default: run until Ctrl-C)",
    )  # fmt: skip
    demo.add_argument("--json", action="store_true", help="also print the summary as JSON")
    demo.add_argument(
        "--keep", action="store_true", help="keep the scratch site, spool and log on exit"
    )
    demo.add_argument(
        "--no-socat", dest="use_socat", action="store_false",
        help="put the meters on RTU over TCP even when socat is installed",
    )  # fmt: skip
    demo.set_defaults(func=run_demo)
    return demo


def run_demo(args: argparse.Namespace) -> int:
    """Run the demo until Ctrl-C/SIGTERM or `--duration`; 0 when nothing was lost."""
    from gatewayd.sim.demo.runner import DemoOptions, DemoRunner  # noqa: PLC0415 (heavy imports)

    options = DemoOptions(
        duration=args.duration,
        outage=args.outage,
        outage_after=args.outage_after,
        json=args.json,
        keep=args.keep,
        use_socat=args.use_socat,
    )
    runner = DemoRunner(
        options,
        sys.stdout,
        tty=sys.stdout.isatty(),
        width=lambda: shutil.get_terminal_size().columns,
    )
    return asyncio.run(runner.run())
