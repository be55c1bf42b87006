"""A real Debian `mosquitto` broker on a loopback port, for transport-level tests."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support import free_port, wait_until

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"


@dataclass
class Mosquitto:
    """A running broker: where it listens and how to stop/restart it."""

    port: int
    conf: Path
    process: subprocess.Popen[bytes]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)

    def start(self) -> None:
        self.process = _launch(self.conf, self.port)


def _accepting(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _launch(conf: Path, port: int) -> subprocess.Popen[bytes]:
    log = (conf.parent / "mosquitto.log").open("wb")
    process = subprocess.Popen([MOSQUITTO, "-c", str(conf)], stderr=log, stdout=log)
    wait_until(lambda: _accepting(port) or process.poll() is not None, 10, "mosquitto to listen")
    if process.poll() is not None:
        raise RuntimeError("mosquitto exited at start")
    return process


def start_mosquitto(
    tmp: Path, *, password_file: Path | None = None, extra: Sequence[str] = ()
) -> Mosquitto:
    """Start mosquitto on a free port; anonymous unless a password file is given.

    `extra` lines are appended to its configuration (e.g. queue limits).
    """
    if not Path(MOSQUITTO).exists():
        pytest.fail("mosquitto is not installed (make setup installs it with apt-get)")
    port = free_port()
    conf = tmp / "mosquitto.conf"
    lines = [f"listener {port} 127.0.0.1", "persistence false"]
    if os.geteuid() == 0:
        # As root mosquitto drops to user "mosquitto", which cannot read files in tmp_path.
        lines.append("user root")
    if password_file is None:
        lines.append("allow_anonymous true")
    else:
        lines += ["allow_anonymous false", f"password_file {password_file}"]
    lines += extra
    conf.write_text("\n".join(lines) + "\n")
    return Mosquitto(port, conf, _launch(conf, port))


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    """An anonymous mosquitto broker, stopped after the test."""
    broker = start_mosquitto(tmp_path)
    yield broker
    if broker.process.poll() is None:
        broker.stop()
