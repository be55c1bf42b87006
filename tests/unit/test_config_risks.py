"""Risky but valid settings: `config_warnings` lists them, `gatewayd check` prints them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gatewayd.cli import main
from gatewayd.config.loader import load_config
from gatewayd.config.risks import ConfigWarning, config_warnings
from tests.unit.test_config_loader import write_site


def _site(tmp_path: Path, tls: str) -> Path:
    config = write_site(tmp_path, "device_secret: a", "device_secret: b")
    text = config.read_text().replace(
        "  broker: {host: 127.0.0.1}\n", f"  broker:\n    host: 127.0.0.1\n    tls: {tls}\n"
    )
    config.write_text(text)
    return config


@pytest.mark.parametrize(
    ("tls", "warned"),
    [
        ("{enabled: true, verify: false}", True),
        ("{enabled: true}", False),
        ("{enabled: true, verify: true}", False),
        ("{enabled: false, verify: false}", False),  # no TLS, nothing to verify
    ],
)
def test_verify_false_is_the_one_tls_warning(tmp_path: Path, tls: str, warned: bool) -> None:
    """Only TLS on with verification off is warned about, at gateway.broker.tls.verify."""
    config = load_config(_site(tmp_path, tls), environ={})
    paths = [w.path for w in config_warnings(config)]
    assert paths == ([("gateway", "broker", "tls", "verify")] if warned else [])


def test_check_warns_about_verify_false_and_still_succeeds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`gatewayd check` exits 0, prints the config on stdout and one located warning line."""
    path = _site(tmp_path, "{enabled: true, verify: false}")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    assert main(["check", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err.splitlines() == [
        f"{path}:7:34: gateway.broker.tls.verify: warning: the broker's TLS certificate is "
        "not verified: anyone on the network path can pose as EnOS and receive the "
        "gateway's data and sign-in (remove 'verify: false'; for a private CA give ca_file)"
    ]
    assert yaml.safe_load(out)["gateway"]["broker"]["tls"]["verify"] is False


def test_check_of_a_safe_config_prints_no_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Verification on (the default): nothing on stderr."""
    path = _site(tmp_path, "{enabled: true}")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    assert main(["check", str(path)]) == 0
    assert capsys.readouterr().err == ""


def test_warning_renders_without_a_file_for_logs() -> None:
    """`render()` gives the dotted path, the message and the hint (for the daemon's log)."""
    warning = ConfigWarning(("gateway", "broker", "tls", "verify"), "risk", "undo it")
    assert warning.render() == "gateway.broker.tls.verify: warning: risk (undo it)"
