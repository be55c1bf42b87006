"""Native journald entries, written through systemd-python into a real systemd-journald.

The journald runs as a *journal namespace* instance (`systemd-journald NAMESPACE`: no kmsg,
no audit, no syslog socket) inside a private mount namespace (`unshare --mount`) where
temporary directories are bind-mounted over /run and /var/log. The host's /run and journal
are never touched. libsystemd always sends to /run/systemd/journal/socket, so inside that
namespace a symlink `journal -> journal.NAMESPACE` points it at the test instance, and the
logging process is started inside the same mount namespace with `nsenter`. That exercises
the production path unchanged: `configure_logging(fmt=journald)` -> `systemd.journal.send`.
Entries are read back from the namespace's journal files with `journalctl --directory`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support import wait_until

JOURNALD = "/lib/systemd/systemd-journald"
REPO = Path(__file__).resolve().parents[2]
SECRET = "dev1ce-Secret-9f8e7d"
PASSWORD = "mqtt-Passw0rd-xyz"

pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="needs root for a private mount namespace"),
    pytest.mark.skipif(
        not (os.path.exists(JOURNALD) and shutil.which("unshare") and shutil.which("nsenter")),
        reason="needs systemd-journald, unshare and nsenter",
    ),
]

try:
    import systemd.journal  # noqa: F401

    HAVE_SYSTEMD_PYTHON = True
except ImportError:
    HAVE_SYSTEMD_PYTHON = False


@dataclass
class Journald:
    """A running namespaced journald and where its journal files live."""

    pid: int
    root: Path

    def journal_dir(self) -> Path | None:
        """The directory holding this instance's journal files, once journald made it."""
        parent = self.root / "varlog" / "journal"
        found = list(parent.iterdir()) if parent.exists() else []
        return found[0] if len(found) == 1 else None

    def read(self, *matches: str) -> list[dict[str, Any]]:
        """Entries matching journalctl `matches`, as dicts (journalctl -o json)."""
        directory = self.journal_dir()
        if directory is None:
            return []
        result = subprocess.run(
            ["journalctl", "--directory", str(directory), "-o", "json", *matches],
            capture_output=True,
            text=True,
            check=False,
        )
        return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]

    def run_inside(self, script: str, **env: str) -> subprocess.CompletedProcess[str]:
        """Run a Python `script` in the journald's mount namespace (libsystemd reaches it)."""
        return subprocess.run(
            # The script goes in on stdin: in argv it would show up in _CMDLINE= fields.
            ["nsenter", "--target", str(self.pid), "--mount", "--", sys.executable, "-"],
            input=script,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env={**os.environ, "PYTHONPATH": str(REPO), **env},
        )


@pytest.fixture
def journald() -> Iterator[Journald]:
    """A throw-away systemd-journald namespace instance in a private mount namespace."""
    root = Path(tempfile.mkdtemp(prefix="gwjournal"))
    (root / "run").mkdir()
    (root / "varlog").mkdir()
    namespace = "gwtest" + uuid.uuid4().hex[:8]
    log_file = (root / "journald.log").open("w")
    process = subprocess.Popen(
        [
            "unshare", "--mount", "--propagation", "private", "--",
            "sh", "-c", 'mount --bind "$1" /run && mount --bind "$2" /var/log && exec "$3" "$4"',
            "sh", str(root / "run"), str(root / "varlog"), JOURNALD, namespace,
        ],
        stdout=log_file,
        stderr=subprocess.STDOUT,
        env={**os.environ, "SYSTEMD_LOG_TARGET": "console"},
    )  # fmt: skip
    socket_dir = root / "run" / "systemd" / f"journal.{namespace}"
    try:
        wait_until(
            lambda: (socket_dir / "socket").exists() or process.poll() is not None,
            timeout=20,
            what="journald socket",
        )
        if process.poll() is not None:
            pytest.fail(f"journald exited: {(root / 'journald.log').read_text()}")
        (root / "run" / "systemd" / "journal").symlink_to(socket_dir.name)
        instance = Journald(process.pid, root)
        wait_until(instance.read, timeout=20, what="journald's own start entry")
        yield instance
    finally:
        process.terminate()
        process.wait(timeout=20)
        log_file.close()
        shutil.rmtree(root)


LOGGING_SCRIPT = textwrap.dedent(
    f"""
    import logging
    import structlog
    from gatewayd.config.models import LogFormat
    from gatewayd.episodes import Episodes
    from gatewayd.logging import configure_logging, register_secret

    register_secret({SECRET!r})
    register_secret({PASSWORD!r})
    assert configure_logging("info", LogFormat.JOURNALD) is LogFormat.JOURNALD
    log = structlog.get_logger("gatewayd.poller")
    edge = Episodes(log)
    for _ in range(5):  # five failed polls: one warning
        edge.failed("meter-1", "device unreachable", device="meter-1", bus="rs485-1",
                    unit_id=3, error="timeout")
    edge.ok("meter-1", "device recovered", device="meter-1", bus="rs485-1", unit_id=3)
    log.info("event raised", device="meter-2", bus="tcp-a", unit_id=1, event_id="overvoltage")
    log.error("login failed", device_secret={SECRET!r}, detail="using {PASSWORD}")
    log.debug("below the level: never sent", device="meter-1")
    logging.getLogger("pymodbus.logging").info("library chatter: dropped")
    logging.getLogger("paho.mqtt.client").warning("socket error with {SECRET}")
    print("sent")
    """
)


@pytest.mark.skipif(not HAVE_SYSTEMD_PYTHON, reason="systemd-python not installed")
def test_entries_are_native_fields_filterable_by_device(journald: Journald) -> None:
    """journalctl DEVICE=meter-1 finds exactly the edge-logged pair, with mapped priorities."""
    result = journald.run_inside(LOGGING_SCRIPT)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "sent"
    ours = ["SYSLOG_IDENTIFIER=gatewayd"]
    wait_until(lambda: len(journald.read(*ours)) == 5, what="five gatewayd entries")

    meter_1 = journald.read("DEVICE=meter-1")
    assert [entry["MESSAGE"].split(" ")[0:2] for entry in meter_1] == [
        ["device", "unreachable"],
        ["device", "recovered"],
    ]
    assert [entry["PRIORITY"] for entry in meter_1] == ["4", "6"]
    warning, recovered = meter_1
    assert warning["BUS"] == "rs485-1"
    assert warning["UNIT_ID"] == "3"
    assert warning["ERROR"] == "timeout"
    assert warning["SYSLOG_IDENTIFIER"] == "gatewayd"
    assert warning["LOGGER"] == "gatewayd.poller"
    assert warning["_TRANSPORT"] == "journal"  # native protocol, not a stdout stream
    assert recovered["FAILURES"] == "5"

    (event,) = journald.read("EVENT=overvoltage")
    assert (event["DEVICE"], event["BUS"], event["UNIT_ID"]) == ("meter-2", "tcp-a", "1")

    # journalctl -p warning: priority 0..4 only, i.e. the warning, error and paho lines.
    urgent = journald.read(*ours, "--priority", "warning")
    assert sorted(entry["PRIORITY"] for entry in urgent) == ["3", "4", "4"]
    (paho,) = journald.read("LOGGER=paho.mqtt.client")
    assert paho["MESSAGE"] == "socket error with ***"


@pytest.mark.skipif(not HAVE_SYSTEMD_PYTHON, reason="systemd-python not installed")
def test_no_secret_reaches_the_journal(journald: Journald) -> None:
    """Neither key-named nor registered secrets appear in any field of any entry."""
    result = journald.run_inside(LOGGING_SCRIPT)
    assert result.returncode == 0, result.stderr
    wait_until(
        lambda: len(journald.read("SYSLOG_IDENTIFIER=gatewayd")) == 5, what="gatewayd entries"
    )
    everything = json.dumps(journald.read())
    assert SECRET not in everything
    assert PASSWORD not in everything
    (failed,) = journald.read("LOGGER=gatewayd.poller", "PRIORITY=3")
    assert failed["DEVICE_SECRET"] == "***"
    assert failed["DETAIL"] == "using ***"


@pytest.mark.skipif(not HAVE_SYSTEMD_PYTHON, reason="systemd-python not installed")
def test_auto_format_picks_journald_on_the_journal_stream(journald: Journald) -> None:
    """With stderr connected to journald like systemd does it, AUTO sends native entries."""
    script = textwrap.dedent(
        """
        import os, socket, sys
        # What systemd does for StandardError=journal: a stream connection to journald,
        # a header naming the identifier, the socket as fd 2, JOURNAL_STREAM=dev:inode.
        stream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        stream.connect("/run/systemd/journal/stdout")
        stream.sendall(b"gatewayd\\n\\n6\\n0\\n0\\n0\\n0\\n")
        os.dup2(stream.fileno(), 2)
        info = os.fstat(2)
        os.environ["JOURNAL_STREAM"] = f"{info.st_dev}:{info.st_ino}"

        import structlog
        from gatewayd.config.models import LogFormat
        from gatewayd.logging import configure_logging

        print(configure_logging("info", LogFormat.AUTO).value)
        structlog.get_logger("gatewayd.x").warning("auto chose journald", device="meter-7")
        print("plain stderr line", file=sys.stderr, flush=True)
        """
    )
    result = journald.run_inside(script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "journald"
    wait_until(lambda: journald.read("DEVICE=meter-7"), what="native entry")
    wait_until(lambda: journald.read("_TRANSPORT=stdout"), what="stream line")
    (native,) = journald.read("DEVICE=meter-7")
    assert native["_TRANSPORT"] == "journal"
    assert native["PRIORITY"] == "4"
    # The stream still carries whatever is written to stderr directly, as systemd would.
    (stream_line,) = journald.read("_TRANSPORT=stdout")
    assert stream_line["MESSAGE"] == "plain stderr line"
    assert stream_line["SYSLOG_IDENTIFIER"] == "gatewayd"


def test_without_systemd_python_journald_falls_back_to_json(journald: Journald) -> None:
    """With systemd-python hidden, format journald writes JSON lines and sends no entry."""
    script = textwrap.dedent(
        """
        import sys
        sys.modules["systemd"] = None  # what an install without the `systemd` extra sees
        import structlog
        from gatewayd.config.models import LogFormat
        from gatewayd.logging import configure_logging

        print(configure_logging("info", LogFormat.JOURNALD).value)
        structlog.get_logger("gatewayd.x").warning("fallback line", device="meter-9")
        """
    )
    result = journald.run_inside(script)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "json"
    line = json.loads(result.stderr.strip().splitlines()[-1])
    assert (line["event"], line["device"], line["level"]) == ("fallback line", "meter-9", "warning")
    assert journald.read("DEVICE=meter-9") == []
