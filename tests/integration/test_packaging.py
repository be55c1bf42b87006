"""The Debian package: build it once per session, inspect it, extract it, run its gatewayd.

The build (packaging/build-deb.sh, what `make deb` runs) takes its Python dependencies
from pip's cache or the package registry: that is build time. Everything after it is
offline: the extracted tree runs `gatewayd check` from its bundled venv with `python -I`.
The extracted tree lives under a scratch prefix, not /; the package's /usr/bin/gatewayd
wrapper finds its venv relative to itself, and the venv (a symlink to /usr/bin/python3
plus pyvenv.cfg) works wherever it sits, so the test runs the very files the box would.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "packaging" / "build-deb.sh"
EX_CONFIG = 78

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(
        not (shutil.which("dpkg-deb") and Path("/usr/bin/python3").exists()),
        reason="needs dpkg-deb and the system python3",
    ),
]


@dataclass(frozen=True)
class BuiltPackage:
    """A built .deb and where it was staged."""

    deb: Path
    workdir: Path


@pytest.fixture(scope="session")
def package(tmp_path_factory: pytest.TempPathFactory) -> BuiltPackage:
    """packaging/build-deb.sh run once for the whole session."""
    out = tmp_path_factory.mktemp("dist")
    work = tmp_path_factory.mktemp("debwork")
    result = subprocess.run(
        [str(BUILD), str(out)],
        capture_output=True,
        text=True,
        check=False,
        timeout=540,
        env={**os.environ, "WORKDIR": str(work), "PIP_PYTHON": sys.executable},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    deb = Path(result.stdout.strip().splitlines()[-1])
    assert deb.parent == out
    return BuiltPackage(deb, work)


@pytest.fixture(scope="session")
def extracted(package: BuiltPackage, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package unpacked into a scratch root with `dpkg -x`."""
    root = tmp_path_factory.mktemp("scratchroot")
    subprocess.run(["dpkg", "-x", str(package.deb), str(root)], check=True)
    return root


def project_version() -> str:
    version: str = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    return version


def deb_field(deb: Path, field: str) -> str:
    return subprocess.run(
        ["dpkg-deb", "--field", str(deb), field], capture_output=True, text=True, check=True
    ).stdout.strip()


def test_file_name_and_control_fields(package: BuiltPackage) -> None:
    """dist/gatewayd_<version>_<arch>.deb with matching control fields and dependencies."""
    arch = subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert package.deb.name == f"gatewayd_{project_version()}_{arch}.deb"
    assert deb_field(package.deb, "Package") == "gatewayd"
    assert deb_field(package.deb, "Version") == project_version()
    assert deb_field(package.deb, "Architecture") == arch
    depends = [part.strip() for part in deb_field(package.deb, "Depends").split(",")]
    assert "python3 (>= 3.11)" in depends
    assert "python3 (<< 3.12)" in depends  # the bundled venv is bound to 3.11


def test_contents_are_root_owned_and_complete(package: BuiltPackage) -> None:
    """The daemon, the wrapper, the unit, sysusers/tmpfiles and the example config ship."""
    listing = subprocess.run(
        ["dpkg-deb", "--contents", str(package.deb)], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    # mode owner size date time ./path [-> target]
    entries = {line.split()[5].removeprefix("."): line.split() for line in listing}
    for wanted in (
        "/usr/bin/gatewayd",
        "/usr/lib/gatewayd/bin/python",
        "/usr/lib/gatewayd/pyvenv.cfg",
        "/lib/systemd/system/gatewayd.service",
        "/usr/lib/sysusers.d/gatewayd.conf",
        "/usr/lib/tmpfiles.d/gatewayd.conf",
        "/etc/gatewayd/gatewayd.yaml",
        "/etc/gatewayd/models/sdm630.yaml",
        "/usr/share/doc/gatewayd/README.md",
    ):
        assert wanted in entries, wanted
    assert entries["/usr/bin/gatewayd"][0] == "-rwxr-xr-x"
    # The config may hold inline secrets: never world-readable, from unpacking on.
    assert entries["/etc/gatewayd/gatewayd.yaml"][0] == "-rw-r-----"
    assert {fields[1] for fields in entries.values()} == {"root/root"}
    assert not any("/site-packages/pip/" in path for path in entries)  # no pip shipped
    assert any(path.endswith(".pyc") for path in entries)  # byte-compiled at build time


def test_conffiles_and_maintainer_scripts(package: BuiltPackage) -> None:
    """Every file under /etc is a conffile; postinst/prerm/postrm are valid sh."""
    control = package.workdir / package.deb.stem / "DEBIAN"
    models = sorted(path.name for path in (REPO / "config" / "models").glob("*.yaml"))
    assert (control / "conffiles").read_text().splitlines() == [
        "/etc/gatewayd/gatewayd.yaml",
        *(f"/etc/gatewayd/models/{name}" for name in models),
    ]
    for script in ("postinst", "prerm", "postrm"):
        path = control / script
        assert os.access(path, os.X_OK), script
        subprocess.run(["sh", "-n", str(path)], check=True)
    postinst = (control / "postinst").read_text()
    assert "systemd-sysusers gatewayd.conf" in postinst
    assert "systemd-tmpfiles --create gatewayd.conf" in postinst
    # ... then the config goes to the service's group, 0640 (unless a statoverride says).
    assert "config=/etc/gatewayd/gatewayd.yaml" in postinst
    assert [line.strip() for line in postinst.splitlines() if "$config\"" in line][-2:] == [
        'chown root:gatewayd "$config"',
        'chmod 0640 "$config"',
    ]
    commands = [line for line in postinst.splitlines() if not line.lstrip().startswith("#")]
    # A fresh install never enables or starts the example config.
    assert not [line for line in commands if re.search(r"systemctl (enable|start)\b", line)]


def test_extracted_gatewayd_checks_the_shipped_config(extracted: Path) -> None:
    """The scratch-installed `gatewayd check` accepts the shipped example and masks secrets."""
    config = extracted / "etc/gatewayd/gatewayd.yaml"
    result = subprocess.run(
        [str(extracted / "usr/bin/gatewayd"), "check", str(config)],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},  # nothing from the dev venv
    )
    assert result.returncode == 0, result.stderr
    resolved = yaml.safe_load(result.stdout)
    assert resolved["spool"]["path"] == "/var/lib/gatewayd/spool.db"
    assert resolved["gateway"]["device_secret"] == "***"
    assert {device["name"] for device in resolved["devices"]} >= {"meter-1", "inverter-1"}
    assert "demo-gateway-secret" not in result.stdout


def test_extracted_gatewayd_rejects_a_broken_config(extracted: Path, tmp_path: Path) -> None:
    """A bad config exits 78 (EX_CONFIG) with the error on stderr."""
    broken = tmp_path / "gatewayd.yaml"
    text = (extracted / "etc/gatewayd/gatewayd.yaml").read_text()
    broken.write_text(text.replace("models_dir: models", "models_dir: models\nbogus_key: 1"))
    shutil.copytree(extracted / "etc/gatewayd/models", tmp_path / "models")
    result = subprocess.run(
        [str(extracted / "usr/bin/gatewayd"), "check", str(broken)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == EX_CONFIG
    assert "bogus_key" in result.stderr


def test_bundled_venv_is_self_contained_on_system_python(
    extracted: Path, package: BuiltPackage
) -> None:
    """The venv runs on /usr/bin/python3, imports every dependency isolated, names no build path."""
    venv = extracted / "usr/lib/gatewayd"
    cfg = dict(
        line.split(" = ", 1) for line in (venv / "pyvenv.cfg").read_text().splitlines() if line
    )
    assert cfg["home"] == "/usr/bin"
    assert cfg["include-system-site-packages"] == "false"
    assert os.readlink(venv / "bin/python3") == "/usr/bin/python3"
    probe = (
        "import sys, aiomqtt, amqtt, paho.mqtt, pydantic, pymodbus, serial, structlog, yaml, "
        "systemd.journal, systemd.daemon, gatewayd.cli; print(sys.prefix)"
    )
    result = subprocess.run(
        [str(venv / "bin/python"), "-I", "-c", probe],
        capture_output=True,
        text=True,
        check=False,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(venv)
    assert (venv / "bin/gatewayd").read_text().startswith("#!/usr/lib/gatewayd/bin/python\n")
    leaked = subprocess.run(
        ["grep", "-rlI", "-F", str(package.workdir), str(extracted)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert leaked.stdout == ""


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_packaging_scripts_are_shellcheck_clean() -> None:
    """build-deb.sh and the maintainer scripts pass shellcheck."""
    scripts = [BUILD, *sorted((REPO / "packaging" / "debian").iterdir())]
    result = subprocess.run(
        ["shellcheck", *map(str, scripts)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stdout
