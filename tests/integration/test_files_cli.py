"""`gatewayd files get|delete` as a subprocess against the emulated cloud on loopback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from gatewayd.sim.emulator.http_cloud import StoredFile
from gatewayd.sim.emulator.http_server import IntegrationHttpServer
from tests.integration.integration_http_support import (
    ACCESS_KEY,
    ORG,
    SECRET_KEY,
    integration_server,
)
from tests.support import free_port, write_secret

__all__ = ["integration_server"]

URI = f"enos-connect://{ORG}/assetMeter1/41.bin"
MODEL = """\
name: meter
points:
  - {measurepoint: voltage, table: holding, address: 0, type: uint16}
"""


def _site(root: Path, address: str, secret: str = SECRET_KEY, integration: bool = True) -> Path:
    """A site whose meter-1 is the emulator's asset, with integration.http at `address`."""
    (root / "models").mkdir(parents=True, exist_ok=True)
    (root / "models" / "meter.yaml").write_text(MODEL)
    write_secret(root / "sa.secret", secret)
    section = f"""\
integration:
  http:
    address: {address}
    org_id: {ORG}
    access_key: {ACCESS_KEY}
    secret_key_file: sa.secret
    connect_timeout: 5s
    timeout: 20s
"""
    config = root / "gatewayd.yaml"
    config.write_text(
        f"""\
gateway:
  product_key: gwPK
  device_key: gwDK
  device_secret: gw-secret
  broker: {{host: 127.0.0.1}}
spool: {{path: state/spool.db}}
buses: [{{name: rs485, type: rtu, device: /dev/ttyUSB0}}]
devices:
  - {{name: meter-1, bus: rs485, model: meter, product_key: subPK, device_key: meter1,
     device_secret: m1}}
{section if integration else ""}"""
    )
    return config


def _files(*args: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    env = {**os.environ}
    env.pop("CREDENTIALS_DIRECTORY", None)
    return subprocess.run(
        [sys.executable, "-m", "gatewayd", "files", *args],
        capture_output=True,
        cwd=cwd,
        env=env,
        timeout=120,
        check=False,
    )


def _store(server: IntegrationHttpServer, data: bytes) -> None:
    cloud = server.cloud
    asset = cloud.spec.assets[0]
    cloud.files[URI] = StoredFile(URI, asset, "tripRecord", "trip.bin", data)


@pytest.fixture
def payload() -> bytes:
    """3 MiB of random bytes: many chunks on the wire."""
    return os.urandom(3 << 20)


def test_get_streams_the_file_to_disk(
    integration_server: IntegrationHttpServer, tmp_path: Path, payload: bytes
) -> None:
    """Exit 0, the bytes intact at PATH, no PATH.part left, the size on stderr."""
    _store(integration_server, payload)
    config = _site(tmp_path, integration_server.url)
    out = tmp_path / "got.bin"
    done = _files("get", str(config), "--device", "meter-1", URI, "-o", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert out.read_bytes() == payload
    assert not (tmp_path / "got.bin.part").exists()
    assert done.stderr.decode().strip() == f"{out}: {len(payload)} bytes"


def test_get_to_stdout_and_to_the_default_name(
    integration_server: IntegrationHttpServer, tmp_path: Path, payload: bytes
) -> None:
    """`-o -` writes only the bytes to stdout; no -o saves as the URI's last segment."""
    _store(integration_server, payload)
    config = _site(tmp_path, integration_server.url)
    piped = _files("get", str(config), "--device", "meter-1", URI, "-o", "-", cwd=tmp_path)
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout == payload
    named = _files("get", str(config), "--device", "meter-1", URI, cwd=tmp_path)
    assert named.returncode == 0, named.stderr
    assert (tmp_path / "41.bin").read_bytes() == payload


def test_a_401_is_followed_by_one_refresh_and_success(
    integration_server: IntegrationHttpServer, tmp_path: Path
) -> None:
    """One refused download: a second token request, the download again, exit 0."""
    _store(integration_server, b"abc")
    integration_server.cloud.faults.fail_next(1, status=401, endpoint="download")
    config = _site(tmp_path, integration_server.url)
    done = _files("get", str(config), "--device", "meter-1", URI, "-o", "-", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, b"abc"), done.stderr
    assert integration_server.cloud.calls["token"] == 2
    assert integration_server.cloud.calls["download"] == 2


def test_refused_twice_or_by_the_token_service_exits_77(
    integration_server: IntegrationHttpServer, tmp_path: Path
) -> None:
    """Auth failures are EX_NOPERM with one line; the secret key is never printed."""
    _store(integration_server, b"abc")
    integration_server.cloud.faults.fail_next(2, status=401, endpoint="download")
    config = _site(tmp_path, integration_server.url)
    twice = _files("get", str(config), "--device", "meter-1", URI, "-o", "-", cwd=tmp_path)
    assert twice.returncode == 77
    assert twice.stdout == b""
    assert twice.stderr.decode().startswith("gatewayd files: EnOS refused the token")
    other = tmp_path / "wrong"
    other.mkdir()
    wrong = _site(other, integration_server.url, secret="not-the-secret-key")
    refused = _files("delete", str(wrong), "--device", "meter-1", URI, cwd=other)
    err = refused.stderr.decode()
    assert refused.returncode == 77
    assert len(err.splitlines()) == 1
    assert "status 1003" in err
    assert "not-the-secret-key" not in err
    assert URI in integration_server.cloud.files  # nothing deleted


def test_delete_then_get_is_not_found(
    integration_server: IntegrationHttpServer, tmp_path: Path
) -> None:
    """Delete exits 0 and removes it; a get afterwards exits 66 and leaves no file behind."""
    _store(integration_server, b"abc")
    config = _site(tmp_path, integration_server.url)
    deleted = _files("delete", str(config), "--device", "meter-1", URI, cwd=tmp_path)
    assert deleted.returncode == 0, deleted.stderr
    assert deleted.stdout.decode() == f"deleted {URI}\n"
    assert integration_server.cloud.files == {}
    out = tmp_path / "x.bin"
    missing = _files("get", str(config), "--device", "meter-1", URI, "-o", str(out), cwd=tmp_path)
    assert missing.returncode == 66
    assert missing.stderr.decode() == f"gatewayd files: not found: file not found: {URI}\n"
    assert not out.exists()
    assert not (tmp_path / "x.bin.part").exists()
    again = _files("delete", str(config), "--device", "meter-1", URI, cwd=tmp_path)
    assert again.returncode == 66


def test_network_failures_exit_69(
    integration_server: IntegrationHttpServer, tmp_path: Path
) -> None:
    """Connection refused and an injected 503 are EX_UNAVAILABLE with a one-line reason."""
    refused_site = tmp_path / "refused"
    refused_site.mkdir()
    config = _site(refused_site, f"http://127.0.0.1:{free_port()}")
    refused = _files("get", str(config), "--device", "meter-1", URI, "-o", "-", cwd=tmp_path)
    err = refused.stderr.decode()
    assert refused.returncode == 69
    assert "connection failed" in err
    assert len(err.splitlines()) == 1
    _store(integration_server, b"abc")
    integration_server.cloud.faults.fail_next(1, status=503, endpoint="delete")
    config = _site(tmp_path, integration_server.url)
    busy = _files("delete", str(config), "--device", "meter-1", URI, cwd=tmp_path)
    assert busy.returncode == 69
    assert busy.stderr.decode() == "gatewayd files: EnOS answered HTTP 503: injected fault\n"


def test_unknown_device_and_missing_section(tmp_path: Path) -> None:
    """A misspelt device is a usage error with a hint; no integration.http is EX_CONFIG."""
    config = _site(tmp_path, "http://127.0.0.1:9")
    typo = _files("get", str(config), "--device", "meter-2", URI, cwd=tmp_path)
    assert typo.returncode == 64
    assert "no device named 'meter-2'" in typo.stderr.decode()
    assert "meter-1" in typo.stderr.decode()
    bare = tmp_path / "bare"
    bare.mkdir()
    without = _site(bare, "unused", integration=False)
    none = _files("delete", str(without), "--device", "meter-1", URI, cwd=bare)
    assert none.returncode == 78
    assert "has no integration.http section" in none.stderr.decode()
