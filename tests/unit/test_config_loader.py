"""load_config: secret files, credential directory, path resolution, models, `check` output."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from gatewayd.cli import main
from gatewayd.config.errors import ConfigError
from gatewayd.config.loader import load_config
from tests.support import write_secret

MODEL = """\
name: meter
points:
  - {measurepoint: voltage, table: input, address: 0, type: float32}
"""


def write_site(root: Path, gateway_secret: str, device_secret: str, extra: str = "") -> Path:
    """A minimal valid site under `root` with one meter; returns the config path."""
    (root / "models").mkdir(parents=True, exist_ok=True)
    (root / "models" / "meter.yaml").write_text(MODEL)
    config = root / "gatewayd.yaml"
    config.write_text(
        f"""\
gateway:
  product_key: gwPK
  device_key: gwDK
  {gateway_secret}
  broker: {{host: 127.0.0.1}}
spool: {{path: state/spool.db}}
buses: [{{name: rs485, type: rtu, device: /dev/ttyUSB0}}]
devices:
  - name: meter-1
    bus: rs485
    model: meter
    product_key: meterPK
    device_key: meter1
    {device_secret}
{extra}"""
    )
    return config


def test_secret_files_are_read_next_to_the_config(tmp_path: Path) -> None:
    """Relative secret files resolve against the config dir; the trailing newline goes."""
    config = write_site(
        tmp_path, "device_secret_file: gw.secret", "device_secret_file: secrets/meter1"
    )
    write_secret(tmp_path / "gw.secret", "gw-s3cret\n")
    (tmp_path / "secrets").mkdir()
    write_secret(tmp_path / "secrets" / "meter1", "meter-s3cret")
    loaded = load_config(config, environ={})
    assert loaded.gateway.device_secret is not None
    assert loaded.gateway.device_secret.get_secret_value() == "gw-s3cret"
    assert loaded.gateway.device_secret_file == tmp_path / "gw.secret"
    device = loaded.devices[0]
    assert device.device_secret is not None
    assert device.device_secret.get_secret_value() == "meter-s3cret"
    assert device.device_secret_file == tmp_path / "secrets" / "meter1"


def test_credentials_directory_wins_when_the_file_is_there(tmp_path: Path) -> None:
    """With $CREDENTIALS_DIRECTORY set, a relative secret file found there is used first."""
    config = write_site(tmp_path / "etc", "device_secret_file: gw.secret", "device_secret: x")
    write_secret(tmp_path / "etc" / "gw.secret", "from-config-dir\n")
    creds = tmp_path / "creds"
    creds.mkdir()
    write_secret(creds / "gw.secret", "from-credentials\n")
    loaded = load_config(config, environ={"CREDENTIALS_DIRECTORY": str(creds)})
    assert loaded.gateway.device_secret is not None
    assert loaded.gateway.device_secret.get_secret_value() == "from-credentials"
    assert loaded.gateway.device_secret_file == creds / "gw.secret"


def test_credentials_directory_falls_back_to_config_dir(tmp_path: Path) -> None:
    """A secret file missing from $CREDENTIALS_DIRECTORY is read next to the config."""
    config = write_site(tmp_path, "device_secret_file: gw.secret", "device_secret: x")
    write_secret(tmp_path / "gw.secret", "local\n")
    creds = tmp_path / "empty-creds"
    creds.mkdir()
    loaded = load_config(config, environ={"CREDENTIALS_DIRECTORY": str(creds)})
    assert loaded.gateway.device_secret is not None
    assert loaded.gateway.device_secret.get_secret_value() == "local"


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "secret file not found"), ("\n", "secret file is empty"), ("dir", "is a directory")],
)
def test_unusable_secret_file_is_a_located_error(
    tmp_path: Path, content: str | None, message: str
) -> None:
    """Missing, empty or directory secret files are errors at the *_secret_file line."""
    config = write_site(tmp_path, "device_secret_file: gw.secret", "device_secret: x")
    if content == "dir":
        (tmp_path / "gw.secret").mkdir()
    elif content is not None:
        write_secret(tmp_path / "gw.secret", content)
    with pytest.raises(ConfigError) as caught:
        load_config(config, environ={"CREDENTIALS_DIRECTORY": str(tmp_path / "none")})
    (issue,) = caught.value.issues
    assert (issue.line, issue.column, issue.path) == (4, 23, ("gateway", "device_secret_file"))
    assert message in issue.message
    assert issue.hint == "looked in $CREDENTIALS_DIRECTORY and next to the config file"


def test_relative_paths_resolve_against_the_config_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """spool.path and models_dir are absolute in the result, whatever the cwd."""
    config = write_site(tmp_path / "site", "device_secret: a", "device_secret: b")
    monkeypatch.chdir(tmp_path)
    loaded = load_config(Path("site/gatewayd.yaml"), environ={})
    assert loaded.spool.path == tmp_path / "site" / "state" / "spool.db"
    assert loaded.models_dir == tmp_path / "site" / "models"
    assert config.is_absolute()


def test_only_referenced_models_are_loaded(tmp_path: Path) -> None:
    """A broken model file no device uses does not fail the config; models holds the used."""
    config = write_site(tmp_path, "device_secret: a", "device_secret: b")
    (tmp_path / "models" / "unused.yaml").write_text("name: [broken\n")
    loaded = load_config(config, environ={})
    assert list(loaded.models) == ["meter"]
    assert loaded.models["meter"].points[0].measurepoint == "voltage"


def test_inline_models_are_used_before_model_files(tmp_path: Path) -> None:
    """A model under `models:` in gatewayd.yaml is used instead of models/<name>.yaml."""
    inline = """\
models:
  meter:
    name: meter
    points:
      - {measurepoint: inline_point, table: holding, address: 5, type: uint16}
"""
    config = write_site(tmp_path, "device_secret: a", "device_secret: b", inline)
    loaded = load_config(config, environ={})
    assert [p.measurepoint for p in loaded.models["meter"].points] == ["inline_point"]


def test_model_file_errors_name_the_model_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issues inside a model file print its path joined onto the config path as given."""
    write_site(tmp_path / "site", "device_secret: a", "device_secret: b")
    (tmp_path / "site" / "models" / "meter.yaml").write_text(MODEL + "colour: red\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        load_config(Path("site/gatewayd.yaml"), environ={})
    assert caught.value.lines() == [
        "site/models/meter.yaml:4:1: colour: unknown key (known keys: attributes, byte_order, "
        "description, events, file_events, name, points, report, services, timestamps, "
        "word_order)",
        "1 error",
    ]


def test_check_never_prints_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Inline secrets print as ***, file secrets only as their file; neither value leaks."""
    config = write_site(tmp_path, "device_secret: inline-gw-s3cret", "device_secret_file: m.key")
    write_secret(tmp_path / "m.key", "file-meter-s3cret\n")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    assert main(["check", str(config)]) == 0
    out, err = capsys.readouterr()
    assert "s3cret" not in out + err
    printed = yaml.safe_load(out)
    assert printed["gateway"]["device_secret"] == "***"
    assert "device_secret" not in printed["devices"][0]
    assert printed["devices"][0]["device_secret_file"] == str(tmp_path / "m.key")


def test_check_output_loads_back_to_the_same_config(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The printed config is itself a valid config (inline models) equal to the original."""
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    example = Path(__file__).resolve().parents[2] / "config" / "gatewayd.yaml"
    assert main(["check", str(example)]) == 0
    resolved = tmp_path / "resolved.yaml"
    resolved.write_text(capsys.readouterr().out)
    again = load_config(resolved, environ={})
    original = load_config(example, environ={})
    # Secrets print masked, so only they differ.
    assert again.gateway.device_secret is not None
    assert again.gateway.device_secret.get_secret_value() == "***"
    exclude = {"gateway": {"device_secret"}, "devices": {"__all__": {"device_secret"}}}
    assert again.model_dump(exclude=exclude) == original.model_dump(exclude=exclude)


def test_missing_config_file_exits_78_with_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A config path that does not exist is a one-line error and EX_CONFIG."""
    monkeypatch.chdir(tmp_path)
    assert main(["check", "nope.yaml"]) == 78
    out, err = capsys.readouterr()
    assert out == ""
    assert err == "nope.yaml: cannot read: No such file or directory\n1 error\n"


def test_disabled_device_needs_no_secret(tmp_path: Path) -> None:
    """`enabled: false` devices may omit their secret."""
    config = write_site(tmp_path, "device_secret: a", "enabled: false")
    assert load_config(config, environ={}).devices[0].enabled is False


def test_secure_mode_3_reads_the_product_secret_file(tmp_path: Path) -> None:
    """Mode 3 takes product_secret_file and fills product_secret from it."""
    config = write_site(
        tmp_path, "secure_mode: 3\n  product_secret_file: product.secret", "device_secret: b"
    )
    write_secret(tmp_path / "product.secret", "ps\r\n")
    loaded = load_config(config, environ={})
    assert loaded.gateway.product_secret is not None
    assert loaded.gateway.product_secret.get_secret_value() == "ps"
    assert os.path.isabs(str(loaded.gateway.product_secret_file))


ODD_CONFIGS = [
    "- 1\n- 2\n",
    "42\n",
    "gateway: [1]\nbuses: x\ndevices: {a: 1}\n",
    "1: 2\n~: x\ntrue: y\n",
    "a: &a [*a]\n",
    "gateway: !!python/object:os.system {}\n",
    "gateway: {? [a, b] : c}\n",
    "\x00\x01",
    "devices: [{<<: [1, 2]}]\n",
    "devices: [{model: ../../etc/passwd, device_secret_file: ''}]\n",
    "models: [1]\ndevices: [{model: m}]\n",
    "models: {m: {name: m, points: [1, null, {}], events: {a: 1}, services: [x, {writes: q}]}}\n"
    "devices: [{model: m}]\n",
    "gateway: {device_secret_file: /dev/null, product_secret_file: 5}\nmodels_dir: [1]\n",
]


@pytest.mark.parametrize("text", ODD_CONFIGS)
def test_odd_input_is_always_a_config_error(tmp_path: Path, text: str) -> None:
    """Malformed shapes never escape as a traceback: only ConfigError, with located lines."""
    config = tmp_path / "gatewayd.yaml"
    config.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(config, environ={})
    lines = caught.value.lines()
    assert len(lines) >= 2
    assert all(line.startswith(str(config)) for line in lines[:-1])


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_secret_file_is_a_located_error(tmp_path: Path) -> None:
    """A secret file without read permission is reported, not a crash."""
    config = write_site(tmp_path, "device_secret_file: gw.secret", "device_secret: x")
    secret = write_secret(tmp_path / "gw.secret", "s\n")
    secret.chmod(0)
    with pytest.raises(ConfigError) as caught:
        load_config(config, environ={})
    (issue,) = caught.value.issues
    assert issue.message == "secret file is not readable (permission denied) ('gw.secret')"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o620, 0o644], ids=lambda m: f"{m:04o}")
def test_secret_file_open_to_group_or_others_is_refused(tmp_path: Path, mode: int) -> None:
    """Like OpenSSH with a private key: a secret the group or others may read or write is
    an error at the key's line and column, with the chmod that fixes it."""
    config = write_site(tmp_path, "device_secret_file: gw.secret", "device_secret: x")
    write_secret(tmp_path / "gw.secret", "s\n").chmod(mode)
    with pytest.raises(ConfigError) as caught:
        load_config(config, environ={})
    assert caught.value.lines() == [
        f"{config}:4:23: gateway.device_secret_file: secret file is open to group or others "
        f"(mode {mode:04o}) ('gw.secret') (chmod 600 {tmp_path / 'gw.secret'})",
        "1 error",
    ]


@pytest.mark.parametrize("mode", [0o600, 0o400], ids=lambda m: f"{m:04o}")
def test_owner_only_secret_file_is_accepted(tmp_path: Path, mode: int) -> None:
    """0600 and 0400 secret files are read."""
    config = write_site(tmp_path, "device_secret_file: gw.secret", "device_secret: x")
    write_secret(tmp_path / "gw.secret", "s\n").chmod(mode)
    secret = load_config(config, environ={}).gateway.device_secret
    assert secret is not None
    assert secret.get_secret_value() == "s"


def test_open_credential_hint_names_the_file_where_it_was_found(tmp_path: Path) -> None:
    """A too-open secret found in $CREDENTIALS_DIRECTORY: the hint's chmod names that file."""
    config = write_site(tmp_path / "etc", "device_secret_file: gw.secret", "device_secret: x")
    creds = tmp_path / "creds"
    creds.mkdir()
    write_secret(creds / "gw.secret", "c\n").chmod(0o440)
    with pytest.raises(ConfigError) as caught:
        load_config(config, environ={"CREDENTIALS_DIRECTORY": str(creds)})
    (issue,) = caught.value.issues
    assert issue.hint == f"chmod 600 {creds / 'gw.secret'}"


def test_check_and_run_refuse_a_group_readable_secret_with_exit_78(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`gatewayd check` and `gatewayd run` (same loader) both exit 78 on a 0640 secret."""
    config = write_site(tmp_path, "device_secret_file: gw.secret", "device_secret: x")
    write_secret(tmp_path / "gw.secret", "s\n").chmod(0o640)
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    assert main(["check", str(config)]) == 78
    assert main(["run", str(config)]) == 78
    out, err = capsys.readouterr()
    assert out == ""
    assert err.count("secret file is open to group or others (mode 0640)") == 2
