"""The shipped example configs load, and the shipped JSON Schemas match the models."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import yaml

from gatewayd.cli import main
from gatewayd.config.loader import load_config
from gatewayd.config.schema import schema_text

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "gatewayd.yaml"


def test_example_config_loads_with_every_model() -> None:
    """config/gatewayd.yaml validates and carries the three models its devices use."""
    config = load_config(EXAMPLE, environ={})
    assert [d.name for d in config.devices] == ["inverter-1", "plc-1", "meter-1", "meter-2"]
    assert sorted(config.models) == ["generic_plc", "sdm630", "sunspec_inverter"]
    assert [b.name for b in config.buses] == ["plant-tcp", "meters-rs485"]
    assert config.models["sdm630"].points[0].measurepoint == "voltage_l1"
    assert config.spool.path == ROOT / "config" / "state" / "spool.db"
    assert config.models_dir == ROOT / "config" / "models"


@pytest.mark.parametrize("cwd", ["/", "config", "tests"])
def test_check_passes_on_example_from_any_cwd(
    cwd: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`gatewayd check` exits 0 on the example whatever the working directory."""
    monkeypatch.chdir(ROOT / cwd if cwd != "/" else "/")
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    status = main(["check", os.path.relpath(EXAMPLE)])
    out, err = capsys.readouterr()
    assert (status, err) == (0, "")
    printed = yaml.safe_load(out)
    assert printed["gateway"]["device_secret"] == "***"
    assert printed["devices"][2]["poll_interval"] == "5s"
    assert printed["spool"]["max_bytes"] == "256MiB"


@pytest.mark.parametrize(
    ("shipped", "model"), [("gatewayd.schema.json", False), ("model.schema.json", True)]
)
def test_shipped_schema_is_in_sync(shipped: str, model: bool) -> None:
    """config/*.schema.json equal what `gatewayd schema` generates (regenerate if not)."""
    text = (ROOT / "config" / shipped).read_text(encoding="utf-8")
    assert text == schema_text(model=model), f"run: gatewayd schema > config/{shipped}"


def test_schema_command_prints_json(capsys: pytest.CaptureFixture[str]) -> None:
    """`gatewayd schema` prints valid JSON describing the top-level sections."""
    assert main(["schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert {"gateway", "buses", "devices", "spool"} <= set(schema["properties"])
    assert schema["required"] == ["gateway"]


def test_examples_point_editors_at_the_schema() -> None:
    """Every example YAML starts with a yaml-language-server schema comment that resolves."""
    files = [EXAMPLE, *sorted((ROOT / "config" / "models").glob("*.yaml"))]
    assert len(files) == 4
    for file in files:
        first = file.read_text(encoding="utf-8").splitlines()[0]
        prefix = "# yaml-language-server: $schema="
        assert first.startswith(prefix), file
        assert (file.parent / first.removeprefix(prefix)).is_file(), file
