"""The daemon's import footprint: what `gatewayd run` loads and what it must not."""

from __future__ import annotations

import subprocess
import sys


def _modules_after(statement: str) -> set[str]:
    """Top-level module names loaded by a fresh interpreter after `statement`."""
    listing = "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))"
    code = f"{statement}\nimport sys\n{listing}"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    return set(out.stdout.split())


def test_daemon_import_leaves_out_rich_and_the_emulator_broker() -> None:
    """Importing the daemon loads structlog and pydantic but not rich, pygments or amqtt."""
    loaded = _modules_after("import gatewayd.app, gatewayd.daemon_cli")
    assert {"structlog", "pydantic", "paho"} <= loaded
    assert not loaded & {"rich", "pygments", "amqtt", "typer"}


def test_rich_stays_importable_for_everything_else() -> None:
    """Hiding rich from structlog's import does not hide it from the rest of the process."""
    loaded = _modules_after(
        "import gatewayd, structlog.dev\nassert structlog.dev.rich is None\nimport rich"
    )
    assert "rich" in loaded
