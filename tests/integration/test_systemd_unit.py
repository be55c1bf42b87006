"""The packaged systemd unit, sysusers.d and tmpfiles.d files, checked by systemd's own tools."""

from __future__ import annotations

import grp
import os
import re
import shutil
import subprocess
import tempfile
from collections import defaultdict
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGING = REPO / "packaging"
UNIT = PACKAGING / "gatewayd.service"
HOST_UNITS = Path("/lib/systemd/system")
MAX_EXPOSURE = 1.5

pytestmark = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed"
)
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, namespaces)")


def unit_settings(path: Path) -> dict[str, list[str]]:
    """`Key=value` lines of a unit file; repeated keys keep every value, in order."""
    settings: dict[str, list[str]] = defaultdict(list)
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings[key.strip()].append(value.strip())
    return settings


def read_lines(path: Path) -> list[str]:
    return path.read_text().splitlines()


def verify_root(tmp_path: Path, *, with_executable: bool = True) -> Path:
    """A scratch root for `systemd-analyze verify --root`: the host's units plus ours.

    verify checks that ExecStart= binaries exist inside the root, so a stand-in
    /usr/bin/gatewayd is created (the real one comes with the package).
    """
    root = tmp_path / "root"
    (root / "usr/lib/systemd").mkdir(parents=True)
    shutil.copytree(HOST_UNITS, root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(UNIT, root / "etc/systemd/system/gatewayd.service")
    (root / "usr/bin").mkdir(parents=True, exist_ok=True)
    (root / "bin").mkdir(exist_ok=True)
    shutil.copy("/bin/kill", root / "bin/kill")
    if with_executable:
        stand_in = root / "usr/bin/gatewayd"
        stand_in.write_text("#!/bin/sh\nexit 0\n")
        stand_in.chmod(0o755)
    return root


def run_verify(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", "gatewayd.service"],
        capture_output=True,
        text=True,
        check=False,
    )


def test_systemd_analyze_verify_is_clean(tmp_path: Path) -> None:
    """`systemd-analyze verify` accepts the unit without a single warning."""
    result = run_verify(verify_root(tmp_path))
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout == ""


def test_verify_catches_what_it_should(tmp_path: Path) -> None:
    """The check is live: an unknown key warns and a missing binary fails."""
    root = verify_root(tmp_path, with_executable=False)
    unit = root / "etc/systemd/system/gatewayd.service"
    unit.write_text(unit.read_text().replace("UMask=0077", "UMask=0077\nProtectSytem=strict"))
    result = run_verify(root)
    assert result.returncode != 0
    assert "Unknown key 'ProtectSytem'" in result.stderr
    assert "/usr/bin/gatewayd is not executable" in result.stderr


def test_credentials_drop_in_verifies(tmp_path: Path) -> None:
    """The LoadCredential= drop-in the deploy tools write is a valid extension of the unit."""
    root = verify_root(tmp_path)
    drop_in = root / "etc/systemd/system/gatewayd.service.d"
    drop_in.mkdir()
    (drop_in / "10-credentials.conf").write_text(
        "[Service]\n"
        "LoadCredential=gateway.secret:/etc/gatewayd/gateway.secret\n"
        "LoadCredential=meter01.secret:/etc/gatewayd/meter01.secret\n"
    )
    result = run_verify(root)
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""


def test_security_exposure_is_at_most_1_5() -> None:
    """`systemd-analyze security --offline=true` rates the sandbox at exposure <= 1.5."""
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(UNIT)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"Overall exposure level for gatewayd\.service: (\d+\.\d+)", result.stdout)
    assert match is not None, result.stdout + result.stderr
    exposure = float(match.group(1))
    assert exposure <= MAX_EXPOSURE, result.stdout
    # What is still open is what a gateway needs: network, serial devices, local sockets.
    open_items = {line.split()[1] for line in result.stdout.splitlines() if line.startswith("✗")}
    assert open_items <= {
        "PrivateNetwork=",
        "RestrictAddressFamilies=~AF_(INET|INET6)",
        "RestrictAddressFamilies=~AF_UNIX",
        "PrivateDevices=",
        "DeviceAllow=",
        "SupplementaryGroups=",
        "RootDirectory=/RootImage=",
        "IPAddressDeny=",
    }, result.stdout


def test_unit_runs_the_daemon_the_way_the_issue_asks() -> None:
    """Notify type, watchdog, restart policy, identity, serial devices and address families."""
    settings = unit_settings(UNIT)
    expected_single = {
        "Type": "notify",
        "ExecStart": "/usr/bin/gatewayd run /etc/gatewayd/gatewayd.yaml",
        "WatchdogSec": "30s",
        "Restart": "on-failure",
        # EX_CONFIG, EX_CANTCREAT, EX_IOERR: a restart would fail the same way.
        "RestartPreventExitStatus": "78 73 74",
        "User": "gatewayd",
        "Group": "gatewayd",
        "SupplementaryGroups": "dialout",
        "StateDirectory": "gatewayd",
        "ConfigurationDirectory": "gatewayd",
        "ProtectSystem": "strict",
        "DevicePolicy": "closed",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "CapabilityBoundingSet": "",
        "NoNewPrivileges": "yes",
        "UMask": "0077",
    }
    assert {key: settings[key] for key in expected_single} == {
        key: [value] for key, value in expected_single.items()
    }
    assert settings["DeviceAllow"] == ["char-ttyS rw", "char-ttyUSB rw", "char-ttyACM rw"]
    # Reload validates first: a bad config fails `systemctl reload` and is never applied.
    assert settings["ExecReload"] == [
        "/usr/bin/gatewayd check /etc/gatewayd/gatewayd.yaml",
        "/bin/kill -HUP $MAINPID",
    ]
    timeout_stop = settings["TimeoutStopSec"][0]
    assert timeout_stop.endswith("s")
    assert int(timeout_stop[:-1]) >= 10


@needs_root
def test_sysusers_and_tmpfiles_create_user_group_and_directories(tmp_path: Path) -> None:
    """systemd-sysusers makes gatewayd (in dialout); systemd-tmpfiles makes its directories."""
    root = tmp_path / "root"
    (root / "usr/lib/sysusers.d").mkdir(parents=True)
    (root / "usr/lib/tmpfiles.d").mkdir(parents=True)
    (root / "etc").mkdir()  # sysusers locks etc/passwd there
    shutil.copy(PACKAGING / "sysusers.d/gatewayd.conf", root / "usr/lib/sysusers.d/")
    shutil.copy(PACKAGING / "tmpfiles.d/gatewayd.conf", root / "usr/lib/tmpfiles.d/")
    subprocess.run(["systemd-sysusers", f"--root={root}"], check=True, capture_output=True)
    subprocess.run(
        ["systemd-tmpfiles", f"--root={root}", "--create"], check=True, capture_output=True
    )
    passwd = {line.split(":")[0]: line.split(":") for line in read_lines(root / "etc/passwd")}
    groups = {line.split(":")[0]: line.split(":") for line in read_lines(root / "etc/group")}
    user = passwd["gatewayd"]
    assert user[5:] == ["/var/lib/gatewayd", "/usr/sbin/nologin"]
    assert "gatewayd" in groups["dialout"][3].split(",")
    state = (root / "var/lib/gatewayd").stat()
    assert (state.st_uid, state.st_gid) == (int(user[2]), int(user[3]))
    assert state.st_mode & 0o777 == 0o750
    assert (root / "etc/gatewayd/models").is_dir()


@needs_root
@pytest.mark.skipif(
    not (shutil.which("setpriv") and shutil.which("unshare")), reason="needs setpriv, unshare"
)
def test_private_users_keeps_supplementary_group_access() -> None:
    """Why PrivateUsers=yes is safe for serial ports: in a user namespace where dialout is
    unmapped (shown as nogroup), the kernel still grants the group's rw on a 0660 node.

    systemd sets the supplementary groups before it creates a system service's user
    namespace, which is the order reproduced here with setpriv, then unshare --user.
    """
    # Under /tmp itself: pytest's tmp_path parents are 0700, closed to `nobody`.
    directory = Path(tempfile.mkdtemp(prefix="gwdev"))
    directory.chmod(0o755)
    node = directory / "ttyUSB-stand-in"
    node.write_text("frame\n")
    shutil.chown(node, "root", "dialout")
    node.chmod(0o660)
    script = f"cat {node} && id -G && cat /proc/self/setgroups"
    result = subprocess.run(
        [
            "setpriv", "--reuid=nobody", "--regid=nogroup", "--groups=dialout", "--",
            "unshare", "--user", "--map-user=65534", "--map-group=65534", "--",
            "sh", "-c", script,
        ],
        capture_output=True,
        text=True,
        check=False,
    )  # fmt: skip
    shutil.rmtree(directory)
    assert result.returncode == 0, result.stderr
    content, gids, setgroups = result.stdout.splitlines()
    assert content == "frame"
    # dialout is invisible in the namespace and cannot be re-added there, yet grants access.
    assert str(grp.getgrnam("dialout").gr_gid) not in gids.split()
    assert setgroups == "deny"
