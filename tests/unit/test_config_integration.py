"""The `integration.http` config section: defaults, secret key rules, masking, warnings."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gatewayd.cli import main
from gatewayd.config.errors import ConfigError
from gatewayd.config.loader import load_config
from gatewayd.config.risks import config_warnings
from tests.support import write_secret
from tests.unit.test_config_loader import write_site


def _with_integration(tmp_path: Path, http: str) -> Path:
    config = write_site(tmp_path, "device_secret: a", "device_secret: b")
    config.write_text(config.read_text() + f"integration:\n  http:\n{http}")
    return config


HTTP = """\
    address: iot-http.example.com
    org_id: o15
    access_key: ak-gateway
    secret_key_file: sa.secret
"""


def test_secret_key_file_is_read_and_defaults_are_safe(tmp_path: Path) -> None:
    """The file's secret (no newline) is loaded; TLS verification on, 10 s/30 s timeouts."""
    write_secret(tmp_path / "sa.secret", "sk-9f2c\n")
    config = load_config(_with_integration(tmp_path, HTTP), environ={})
    http = config.integration.http
    assert http is not None
    assert http.secret_key is not None
    assert http.secret_key.get_secret_value() == "sk-9f2c"
    assert http.secret_key_file == tmp_path / "sa.secret"
    assert (http.verify, http.connect_timeout, http.timeout, http.apigw) == (True, 10.0, 30.0, None)
    assert config_warnings(config) == []


def test_no_integration_section_means_none(tmp_path: Path) -> None:
    """Without the section, integration.http is None (nothing loads httpx)."""
    config = load_config(write_site(tmp_path, "device_secret: a", "device_secret: b"), environ={})
    assert config.integration.http is None


def test_secret_key_file_under_credentials_directory(tmp_path: Path) -> None:
    """A relative secret_key_file is looked up in $CREDENTIALS_DIRECTORY first (as device ones)."""
    creds = tmp_path / "creds"
    creds.mkdir()
    write_secret(creds / "sa.secret", "from-credentials")
    config = load_config(
        _with_integration(tmp_path, HTTP), environ={"CREDENTIALS_DIRECTORY": str(creds)}
    )
    assert config.integration.http is not None
    assert config.integration.http.secret_key is not None
    assert config.integration.http.secret_key.get_secret_value() == "from-credentials"


def test_secret_key_file_missing_is_an_error_at_its_line(tmp_path: Path) -> None:
    """A missing secret file is reported at integration.http.secret_key_file."""
    with pytest.raises(ConfigError) as error:
        load_config(_with_integration(tmp_path, HTTP), environ={})
    lines = error.value.render().splitlines()
    assert any(
        "integration.http.secret_key_file: secret file not found ('sa.secret')" in line
        for line in lines
    ), lines


def test_check_masks_the_inline_secret_key_and_hides_a_file_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`check` prints secret_key as *** and never the secret read from secret_key_file."""
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    inline = HTTP.replace("secret_key_file: sa.secret", "secret_key: sk-inline-9f2c")
    assert main(["check", str(_with_integration(tmp_path, inline))]) == 0
    out = capsys.readouterr().out
    assert "sk-inline-9f2c" not in out
    assert yaml.safe_load(out)["integration"]["http"]["secret_key"] == "***"
    other = tmp_path / "other"
    other.mkdir()
    write_secret(other / "sa.secret", "sk-file-77aa")
    assert main(["check", str(_with_integration(other, HTTP))]) == 0
    out = capsys.readouterr().out
    assert "sk-file-77aa" not in out
    http = yaml.safe_load(out)["integration"]["http"]
    assert "secret_key" not in http
    assert http["secret_key_file"] == str(other / "sa.secret")


def test_plain_http_and_verify_false_are_warned_about(tmp_path: Path) -> None:
    """http:// (token in clear) and verify: false each give one warning at their key."""
    write_secret(tmp_path / "sa.secret", "sk")
    risky = HTTP.replace("iot-http.example.com", "http://10.0.0.5:8080") + "    verify: false\n"
    config = load_config(_with_integration(tmp_path, risky), environ={})
    assert [w.path for w in config_warnings(config)] == [
        ("integration", "http", "address"),
        ("integration", "http", "verify"),
    ]
