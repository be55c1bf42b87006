"""`gatewayd demo` / `gatewayd emulate` without the `sim` extra: a one-line hint and 69.

Each case is a fresh interpreter in which a `None` entry in `sys.modules` makes the import
fail exactly as on a box where the distribution is not installed: amqtt hidden is a
`pip install gatewayd` without `[sim]`; gatewayd.sim hidden is the Debian package, which
leaves the harness out altogether.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

HINT = "pip install 'gatewayd[sim]'"


def gatewayd_without(hidden: str, *argv: str) -> subprocess.CompletedProcess[str]:
    """Run `gatewayd ARGV` in a fresh interpreter in which `hidden` cannot be imported."""
    script = (
        "import sys\n"
        f"sys.modules[{hidden!r}] = None\n"
        "from gatewayd.cli import main\n"
        "status = main(sys.argv[1:])\n"
        f"assert {hidden!r} not in sys.modules or sys.modules[{hidden!r}] is None\n"
        "sys.exit(status)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", script, *argv],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


@pytest.mark.parametrize("hidden", ["amqtt", "gatewayd.sim"])
@pytest.mark.parametrize(
    "argv",
    [
        ("demo",),
        ("demo", "--duration", "3s", "--outage", "1s", "--json"),
        ("emulate", "--gateway-config", "config/gatewayd.yaml", "--port", "0"),
    ],
)
def test_harness_commands_print_the_hint_and_exit_69(hidden: str, argv: tuple[str, ...]) -> None:
    """One stderr line naming the command, what is missing and the pip command; 69; no stdout."""
    result = gatewayd_without(hidden, *argv)
    assert result.returncode == os.EX_UNAVAILABLE == 69, result.stderr
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"gatewayd {argv[0]}: needs the simulation harness ({hidden} is not installed): {HINT}"
    ]


@pytest.mark.parametrize("hidden", ["amqtt", "gatewayd.sim"])
def test_help_still_lists_the_harness_commands(hidden: str) -> None:
    """`gatewayd --help` works without the extra and still names demo and emulate."""
    result = gatewayd_without(hidden, "--help")
    assert result.returncode == 0, result.stderr
    listed = {line.split()[0] for line in result.stdout.splitlines() if line.startswith("    ")}
    assert {"check", "run", "demo", "emulate"} <= listed
