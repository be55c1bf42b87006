"""`gatewayd check CONFIG` and `gatewayd schema [--model]`.

`check` exits 0 and prints the resolved config (defaults filled, units spelled out,
secrets masked) when the config is valid, and exits 78 (EX_CONFIG, which the systemd
unit lists in RestartPreventExitStatus=) with one line per error on stderr when it is
not. A config file that cannot be read is an error like any other: exit 78 too.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from gatewayd.config.errors import ConfigError
from gatewayd.config.loader import load_config
from gatewayd.config.models import Config
from gatewayd.config.render import render_config
from gatewayd.config.risks import located_warnings
from gatewayd.config.schema import schema_text


def register(subparsers: Any) -> None:
    """Add the `check` and `schema` subcommands."""
    check = subparsers.add_parser(
        "check",
        help="validate a config file and print it resolved",
        description=(
            "Validate CONFIG and the device models it references. Valid: print the "
            "resolved config (defaults filled, secrets masked as ***) and exit 0; risky "
            "settings (tls.verify: false) are warned about on stderr. "
            "Invalid: print every error as FILE:LINE:COL: path: message (hint) on "
            "stderr and exit 78 (EX_CONFIG)."
        ),
    )
    check.add_argument("config", type=Path, metavar="CONFIG", help="path to gatewayd.yaml")
    check.add_argument(
        "--cloud",
        action="store_true",
        help="also compare the models with each product's model in EnOS (connects as the"
        " gateway; mismatches print like errors, exit 78)",
    )
    check.set_defaults(func=run_check)

    schema = subparsers.add_parser(
        "schema",
        help="print the JSON Schema of the config file",
        description=(
            "Print the JSON Schema of gatewayd.yaml (or, with --model, of a device model "
            "file) for editors such as VS Code with yaml-language-server."
        ),
    )
    schema.add_argument(
        "--model", action="store_true", help="the schema of a device model file instead"
    )
    schema.set_defaults(func=run_schema)


def load_or_report(path: Path) -> Config | None:
    """The config at `path` for a command; None after printing every error on stderr
    (the caller exits with `os.EX_CONFIG`)."""
    try:
        return load_config(path)
    except ConfigError as exc:
        print(exc.render(), file=sys.stderr)
        return None


def run_check(args: argparse.Namespace) -> int:
    """Validate `args.config`; print the resolved config or the errors."""
    config = load_or_report(args.config)
    if config is None:
        return os.EX_CONFIG
    # Valid but risky settings: said on stderr, the resolved config still goes to stdout.
    for warning in located_warnings(args.config, config):
        print(warning.render(), file=sys.stderr)
    text = yaml.safe_dump(
        render_config(config), sort_keys=False, default_flow_style=False, allow_unicode=True
    )
    if getattr(args, "cloud", False):
        return _check_cloud(args.config, config)
    sys.stdout.write(text)
    return os.EX_OK


def _check_cloud(path: Path, config: Config) -> int:
    """`check --cloud`: the models against EnOS (nothing on stdout)."""
    import asyncio  # noqa: PLC0415 - the MQTT stack only for --cloud

    from gatewayd.app import register_secrets, state_dir  # noqa: PLC0415
    from gatewayd.uplink.cloudcheck import run_cloud_check  # noqa: PLC0415

    register_secrets(config)
    return asyncio.run(run_cloud_check(config, path, state_dir(config)))


def run_schema(args: argparse.Namespace) -> int:
    """Print the JSON Schema."""
    sys.stdout.write(schema_text(model=args.model))
    return os.EX_OK
