"""`gatewayd run` and `gatewayd status`: the daemon and a look at the running one."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from gatewayd.config.cli import load_or_report

#: Files 0600, directories 0700 (the unit sets UMask=0077 too; this covers other starts).
PRIVATE_UMASK = 0o077
#: A status file older than this means the daemon is not running (it rewrites every 5 s).
STALE_STATUS_S = 30.0


def register(subparsers: Any) -> None:
    """Add the `run` and `status` subcommands."""
    run = subparsers.add_parser(
        "run",
        help="run the gateway daemon",
        description=(
            "Poll the Modbus devices of CONFIG, commit every sample to the spool and deliver "
            "it to EnOS until SIGTERM/SIGINT. SIGHUP reloads the configuration (a bad one "
            "is refused and the running one kept). Exit 78 on a configuration error, 73 "
            "when the spool cannot be written or created (read-only file or directory), "
            "74 on another I/O error opening it."
        ),
    )
    run.add_argument("config", type=Path, metavar="CONFIG", help="path to gatewayd.yaml")
    run.set_defaults(func=run_run)

    status = subparsers.add_parser(
        "status",
        help="show the running daemon's health",
        description=(
            "Print the summary the daemon reports to systemd plus per-device health and "
            "spool figures, read from the status file it keeps next to the spool."
        ),
    )
    status.add_argument("config", type=Path, metavar="CONFIG", help="path to gatewayd.yaml")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(func=run_status)


def run_run(args: argparse.Namespace) -> int:
    """Start the daemon on `args.config`."""
    from gatewayd.app import Daemon  # noqa: PLC0415 (keep `gatewayd check` light)
    from gatewayd.commands import command_handler_factory  # noqa: PLC0415
    from gatewayd.logging import configure_logging  # noqa: PLC0415
    from gatewayd.spool.openerror import SpoolOpenError  # noqa: PLC0415

    # Everything the daemon writes (spool, reserve, status, the activated secret) is
    # private whoever starts it: a shell's umask 022 would make them world-readable.
    os.umask(PRIVATE_UMASK)
    config = load_or_report(args.config)
    if config is None:
        return os.EX_CONFIG
    configure_logging(config.logging.level, config.logging.format)
    daemon = Daemon(args.config, config, commands=command_handler_factory)
    try:
        return asyncio.run(daemon.run())
    except SpoolOpenError as exc:
        # One line with the path and the fix instead of a traceback; a sysexits status the
        # unit does not restart on (RestartPreventExitStatus=), since a restart fails alike.
        print(f"gatewayd: {exc.render()}", file=sys.stderr)
        return exc.exit_status


def run_status(args: argparse.Namespace) -> int:
    """Print the daemon's last status report."""
    from gatewayd.app import STATUS_FILE, state_dir  # noqa: PLC0415

    config = load_or_report(args.config)
    if config is None:
        return os.EX_CONFIG
    path = state_dir(config) / STATUS_FILE
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        print(f"gatewayd is not running (no status file at {path})", file=sys.stderr)
        return os.EX_UNAVAILABLE
    age = time.time() - report["updated_ms"] / 1000
    report["age_s"] = round(age, 1)
    report["running"] = age < STALE_STATUS_S
    if args.json:
        print(json.dumps(report, indent=2))
        return 0 if report["running"] else os.EX_UNAVAILABLE
    state = "running" if report["running"] else f"NOT RUNNING (last report {age:.0f}s ago)"
    print(f"gatewayd {state}, pid {report['pid']}")
    print(
        f"  devices {report['devices_up']}/{report['devices_total']} up, "
        f"{report['points_per_second']:.0f} points/s, uplink {report['uplink']}"
    )
    print(
        f"  spool: {report['backlog_rows']} rows waiting, {report['dead_letters']} dead letters, "
        f"{report['dropped_rows']} dropped; {report['delivered_points']} points delivered"
    )
    if report.get("last_error"):
        print(f"  last uplink error: {report['last_error']}")
    # A status file of an older gatewayd has neither key; None: the feature is not in use.
    if channel := report.get("historical_events"):
        print(
            f"  historical events (integration channel): {channel['events']} delivered in "
            f"{channel['messages']} messages, {channel['dead_lettered']} dead letters, "
            f"{channel['timeouts']} timeouts; {channel['connects']} connects "
            f"({channel['refused_connects']} refused)"
        )
    if files := report.get("file_events"):
        print(
            f"  file events: {files['pending']} waiting, {files['dead_letters']} dead letters, "
            f"{files['dropped']} dropped; {files['delivered']} delivered, "
            f"{files['retries']} retries"
        )
    for device in report["devices"]:
        error = f"  ({device['last_error']})" if device.get("last_error") else ""
        # A status file of an older gatewayd has no report-filter counts.
        sent = (
            f", {device['polled_per_minute']}/min polled, {device['sent_per_minute']}/min sent"
            if "sent_per_minute" in device
            else ""
        )
        print(
            f"  {device['device']:<20} {device['bus']:<12} unit {device['unit_id']:<3} "
            f"{device['state']:<9} {device['points_per_second']:>7.1f} points/s{sent}{error}"
        )
    for name, points in sorted(report.get("withheld", {}).items()):
        print(f"  {name}: not in the cloud model, withheld: {', '.join(points)}")
    return 0 if report["running"] else os.EX_UNAVAILABLE
