"""Fleet roll-out: the Ansible role (syntax, lint, a real run) and deploy/install.sh.

Both tools are run for real against scratch directories on this machine, with the
project's own `gatewayd check` as the validator. systemd is not PID 1 here, so the
service-manager side is the one stand-in: a `systemctl` script that records its calls.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support import write_secret

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_DIR = REPO / "deploy" / "ansible"
INSTALL_SH = REPO / "deploy" / "install.sh"
VENV_BIN = Path(sys.executable).parent
GATEWAY_SECRET = "gw-Secret-from-vault-123"

needs_ansible = pytest.mark.skipif(
    not (VENV_BIN / "ansible-playbook").exists(),
    reason="ansible-core not installed (dependency group `deploy`)",
)


def site_config() -> dict[str, Any]:
    """The example site, with the gateway secret moved out into a secret file."""
    config: dict[str, Any] = yaml.safe_load((REPO / "config" / "gatewayd.yaml").read_text())
    del config["gateway"]["device_secret"]
    config["gateway"]["device_secret_file"] = "gateway.secret"
    return config


@pytest.fixture
def gatewayd_bin(tmp_path: Path) -> Path:
    """An executable running this checkout's `gatewayd` (what /usr/bin/gatewayd is on a box)."""
    wrapper = tmp_path / "bin" / "gatewayd"
    wrapper.parent.mkdir()
    wrapper.write_text(f'#!/bin/sh\nPYTHONPATH={REPO} exec {sys.executable} -m gatewayd "$@"\n')
    wrapper.chmod(0o755)
    return wrapper


@pytest.fixture
def systemctl(tmp_path: Path) -> Path:
    """A `systemctl` stand-in: logs each call; `is-active` answers from a state file."""
    script = tmp_path / "bin" / "systemctl"
    script.parent.mkdir(exist_ok=True)
    log, active = tmp_path / "systemctl.log", tmp_path / "systemctl.active"
    script.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {log}\n'
        f'if [ "$1" = is-active ]; then [ -e {active} ]; exit $?; fi\n'
        "exit 0\n"
    )
    script.chmod(0o755)
    return script


def calls(tmp_path: Path) -> list[str]:
    """The systemctl calls recorded so far."""
    log = tmp_path / "systemctl.log"
    return log.read_text().splitlines() if log.exists() else []


def run_install(
    tmp_path: Path, gatewayd_bin: Path, systemctl: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(INSTALL_SH), *args],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
        env={
            **os.environ,
            "GATEWAYD_ETC": str(tmp_path / "etc"),
            "GATEWAYD_BIN": str(gatewayd_bin),
            "SYSTEMD_DIR": str(tmp_path / "systemd"),
            "SYSTEMCTL": str(systemctl),
        },
    )


@pytest.fixture
def site_files(tmp_path: Path) -> tuple[Path, Path]:
    """The site config and its gateway secret as an operator hands them to install.sh."""
    source = tmp_path / "site"
    source.mkdir()
    config = source / "gatewayd.yaml"
    config.write_text(yaml.safe_dump(site_config(), sort_keys=False))
    secret = write_secret(source / "gateway.secret", GATEWAY_SECRET + "\n")
    return config, secret


def test_install_sh_installs_validated_config_and_starts(
    tmp_path: Path, gatewayd_bin: Path, systemctl: Path, site_files: tuple[Path, Path]
) -> None:
    """A good config lands with models, a root-only secret, a credentials drop-in, enable --now."""
    config, secret = site_files
    result = run_install(
        tmp_path, gatewayd_bin, systemctl,
        "--models", str(REPO / "config" / "models"), "--secret", str(secret), str(config),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    etc = tmp_path / "etc"
    assert (etc / "gatewayd.yaml").read_text() == config.read_text()
    assert stat.S_IMODE((etc / "gatewayd.yaml").stat().st_mode) == 0o640  # may hold secrets
    installed_secret = etc / "gateway.secret"
    assert installed_secret.read_text() == GATEWAY_SECRET + "\n"
    assert stat.S_IMODE(installed_secret.stat().st_mode) == 0o600
    assert sorted(path.name for path in (etc / "models").iterdir()) == sorted(
        path.name for path in (REPO / "config" / "models").glob("*.yaml")
    )
    drop_in = tmp_path / "systemd" / "gatewayd.service.d" / "10-credentials.conf"
    assert drop_in.read_text().splitlines()[1:] == [
        "[Service]",
        f"LoadCredential=gateway.secret:{etc}/gateway.secret",
    ]
    assert calls(tmp_path)[:3] == [
        "daemon-reload",
        "is-active --quiet gatewayd.service",
        "enable --now gatewayd.service",
    ]
    assert not list(etc.glob(".staging*"))


def test_install_sh_never_replaces_a_good_config_with_a_bad_one(
    tmp_path: Path, gatewayd_bin: Path, systemctl: Path, site_files: tuple[Path, Path]
) -> None:
    """A config failing `gatewayd check` exits 78 and leaves files and service untouched."""
    config, secret = site_files
    models = str(REPO / "config" / "models")
    first = run_install(
        tmp_path, gatewayd_bin, systemctl, "--models", models, "--secret", str(secret), str(config)
    )
    assert first.returncode == 0, first.stderr
    good = (tmp_path / "etc" / "gatewayd.yaml").read_bytes()
    calls_before = calls(tmp_path)

    bad = site_config()
    bad["devices"][0]["model"] = "no_such_model"
    config.write_text(yaml.safe_dump(bad, sort_keys=False))
    second = run_install(tmp_path, gatewayd_bin, systemctl, str(config))
    assert second.returncode == os.EX_CONFIG
    assert "no_such_model" in second.stderr
    assert "nothing was changed" in second.stderr
    assert (tmp_path / "etc" / "gatewayd.yaml").read_bytes() == good
    assert calls(tmp_path) == calls_before
    assert not list((tmp_path / "etc").glob(".staging*"))


def test_install_sh_reloads_a_running_service_for_a_config_change(
    tmp_path: Path, gatewayd_bin: Path, systemctl: Path, site_files: tuple[Path, Path]
) -> None:
    """With the service active and only the config changed, install.sh reloads, not restarts."""
    config, secret = site_files
    models = str(REPO / "config" / "models")
    first = run_install(
        tmp_path, gatewayd_bin, systemctl, "--models", models, "--secret", str(secret), str(config)
    )
    assert first.returncode == 0, first.stderr
    (tmp_path / "systemctl.active").touch()
    changed = site_config()
    changed["devices"][0]["poll_interval"] = "20s"
    config.write_text(yaml.safe_dump(changed, sort_keys=False))
    seen = len(calls(tmp_path))
    second = run_install(tmp_path, gatewayd_bin, systemctl, str(config))
    assert second.returncode == 0, second.stderr
    assert calls(tmp_path)[seen:][:3] == [
        "daemon-reload",
        "is-active --quiet gatewayd.service",
        "reload gatewayd.service",
    ]
    # The secret installed the first time is still a credential.
    assert (
        "LoadCredential=gateway.secret:"
        in (tmp_path / "systemd" / "gatewayd.service.d" / "10-credentials.conf").read_text()
    )


def test_install_sh_usage_errors(tmp_path: Path, gatewayd_bin: Path, systemctl: Path) -> None:
    """Missing config and badly named secrets are usage errors (64), before anything runs."""
    assert run_install(tmp_path, gatewayd_bin, systemctl).returncode == 64
    plain = tmp_path / "password.txt"
    plain.write_text("x")
    result = run_install(tmp_path, gatewayd_bin, systemctl, "--secret", str(plain), str(plain))
    assert result.returncode == 64
    assert "must be named *.secret" in result.stderr
    assert calls(tmp_path) == []


def test_install_sh_is_valid_bash_and_shellcheck_clean() -> None:
    """`bash -n` and (when installed) shellcheck accept install.sh."""
    subprocess.run(["bash", "-n", str(INSTALL_SH)], check=True)
    if shutil.which("shellcheck"):
        result = subprocess.run(
            ["shellcheck", str(INSTALL_SH)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stdout


def ansible_env(tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{VENV_BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "ANSIBLE_LOCAL_TEMP": str(tmp_path / "ansible-local"),
        "ANSIBLE_REMOTE_TEMP": str(tmp_path / "ansible-remote"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        "ANSIBLE_RETRY_FILES_ENABLED": "0",
        "ANSIBLE_HOME": str(tmp_path / "ansible-home"),
        # Speed only: the role needs no facts unless it installs the package (off here).
        "ANSIBLE_GATHERING": "explicit",
        "ANSIBLE_PIPELINING": "1",
    }


@needs_ansible
def test_playbook_syntax_check(tmp_path: Path) -> None:
    """`ansible-playbook --syntax-check` accepts site.yml with the example inventory."""
    result = subprocess.run(
        [
            str(VENV_BIN / "ansible-playbook"), "--syntax-check",
            "-i", "inventory.example.yml", "site.yml",
        ],
        cwd=ANSIBLE_DIR,
        capture_output=True,
        text=True,
        check=False,
        env=ansible_env(tmp_path),
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert "playbook: site.yml" in result.stdout


@needs_ansible
@pytest.mark.skipif(not (VENV_BIN / "ansible-lint").exists(), reason="ansible-lint not installed")
def test_ansible_lint_production_profile(tmp_path: Path) -> None:
    """ansible-lint (offline, production profile) passes on the playbook and role."""
    result = subprocess.run(
        [str(VENV_BIN / "ansible-lint"), "--offline", "site.yml", "roles/gatewayd"],
        cwd=ANSIBLE_DIR,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env={**ansible_env(tmp_path), "NO_COLOR": "1"},
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Profile 'production' was required, and it passed" in output


def run_playbook(
    tmp_path: Path, gatewayd_bin: Path, config: dict[str, Any]
) -> subprocess.CompletedProcess[str]:
    """site.yml against this machine (connection local) into scratch directories."""
    inventory = tmp_path / "inventory.yml"
    inventory.write_text(
        yaml.safe_dump(
            {
                "gateways": {
                    "hosts": {
                        "localhost": {
                            "ansible_connection": "local",
                            "ansible_python_interpreter": sys.executable,
                        }
                    }
                }
            }
        )
    )
    extra = tmp_path / "vars.json"
    extra.write_text(
        json.dumps(
            {
                "ansible_become": False,  # already root; no sudo needed
                "gatewayd_manage_package": False,
                "gatewayd_manage_service": False,
                "gatewayd_etc_dir": str(tmp_path / "etc"),
                "gatewayd_systemd_dir": str(tmp_path / "systemd"),
                "gatewayd_bin": str(gatewayd_bin),
                "gatewayd_models_dir": str(REPO / "config" / "models"),
                "gatewayd_config": config,
                "gatewayd_secrets": {"gateway.secret": GATEWAY_SECRET},
                "gatewayd_config_group": "root",  # no gatewayd group on a test machine
            }
        )
    )
    return subprocess.run(
        [
            str(VENV_BIN / "ansible-playbook"), "-i", str(inventory), "-e", f"@{extra}",
            "site.yml",
        ],
        cwd=ANSIBLE_DIR,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
        env=ansible_env(tmp_path),
    )  # fmt: skip


def recap_counts(output: str) -> dict[str, int]:
    """The PLAY RECAP numbers for localhost (ok, changed, failed, ...)."""
    line = next(line for line in output.splitlines() if line.startswith("localhost"))
    return {
        key: int(value)
        for key, value in (part.split("=") for part in line.split(":", 1)[1].split())
    }


@pytest.mark.slow  # three real playbook runs: ~10 s each on a loaded 2-core box
@needs_ansible
@pytest.mark.skipif(os.geteuid() != 0, reason="the role sets root ownership")
def test_role_rolls_out_validated_config_idempotently_and_refuses_a_bad_one(
    tmp_path: Path, gatewayd_bin: Path
) -> None:
    """A real run installs the config; a rerun changes nothing; a bad config is stopped."""
    first = run_playbook(tmp_path, gatewayd_bin, site_config())
    assert first.returncode == 0, first.stdout + first.stderr
    etc = tmp_path / "etc"
    installed = yaml.safe_load((etc / "gatewayd.yaml").read_text())
    assert installed["gateway"]["device_secret_file"] == "gateway.secret"
    assert installed["spool"]["path"] == "state/spool.db"  # the inventory's value wins
    assert installed["devices"] == site_config()["devices"]
    assert stat.S_IMODE((etc / "gatewayd.yaml").stat().st_mode) == 0o640  # may hold secrets
    secret = etc / "gateway.secret"
    assert secret.read_text() == GATEWAY_SECRET + "\n"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert GATEWAY_SECRET not in first.stdout
    assert (etc / "models" / "sdm630.yaml").exists()
    drop_in = tmp_path / "systemd" / "gatewayd.service.d" / "10-credentials.conf"
    assert [line for line in drop_in.read_text().splitlines() if not line.startswith("#")] == [
        "[Service]",
        f"LoadCredential=gateway.secret:{etc}/gateway.secret",
    ]

    again = run_playbook(tmp_path, gatewayd_bin, site_config())
    assert again.returncode == 0, again.stdout + again.stderr
    assert recap_counts(again.stdout)["changed"] == 0

    good = (etc / "gatewayd.yaml").read_bytes()
    bad = site_config()
    bad["devices"][0]["bus"] = "no-such-bus"
    refused = run_playbook(tmp_path, gatewayd_bin, bad)
    assert refused.returncode != 0
    assert "Validate the staged config" in refused.stdout
    assert "no-such-bus" in refused.stdout
    assert recap_counts(refused.stdout)["failed"] == 1
    assert (etc / "gatewayd.yaml").read_bytes() == good
