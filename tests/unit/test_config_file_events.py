"""Config of file events: integration.outbox, integration.max_bytes and models' file_events."""

from __future__ import annotations

from pathlib import Path

import pytest

from gatewayd.config.errors import ConfigError
from gatewayd.config.loader import load_config
from tests.support import write_secret
from tests.unit.test_config_loader import MODEL, write_site

HTTP = """\
  http:
    address: iot-http.example.com
    org_id: o15
    access_key: ak-gateway
    secret_key_file: sa.secret
"""
FILE_EVENTS = """\
file_events:
  - {event: tripRecord, file_param: capture, params: {reason: int, note: string}}
"""


def _site(tmp_path: Path, integration: str, model_extra: str = "") -> Path:
    config = write_site(tmp_path, "device_secret: a", "device_secret: b")
    write_secret(tmp_path / "sa.secret", "sk")
    (tmp_path / "models" / "meter.yaml").write_text(MODEL + model_extra)
    config.write_text(config.read_text() + "integration:\n" + integration)
    return config


def _errors(config: Path) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(config, environ={})
    return caught.value.lines()


def test_outbox_is_resolved_next_to_the_config_and_max_bytes_defaults_to_1_gib(
    tmp_path: Path,
) -> None:
    """A relative outbox is made absolute; the byte cap is 1 GiB unless given; the model's
    file events are loaded with their params' types."""
    (tmp_path / "outbox").mkdir()
    config = load_config(_site(tmp_path, HTTP + "  outbox: outbox\n", FILE_EVENTS), environ={})
    assert config.integration.outbox == tmp_path / "outbox"
    assert config.integration.max_bytes == 1 << 30
    (event,) = config.models["meter"].file_events
    assert (event.event, event.file_param, event.params) == (
        "tripRecord",
        "capture",
        {"reason": "int", "note": "string"},
    )


def test_max_bytes_needs_a_unit(tmp_path: Path) -> None:
    """`max_bytes: 5` is refused with the unit hint, like the spool's."""
    lines = _errors(_site(tmp_path, HTTP + "  max_bytes: 5\n"))
    assert any("integration.max_bytes" in line and "has no unit" in line for line in lines), lines


def test_a_missing_outbox_is_an_error_with_the_fix(tmp_path: Path) -> None:
    """The outbox is not created by the gateway: a missing one names the mkdir to run."""
    lines = _errors(_site(tmp_path, HTTP + "  outbox: drops\n"))
    assert lines == [
        f"{tmp_path}/gatewayd.yaml:21:11: integration.outbox: directory 'drops' does not exist "
        f"(create it for the software that drops files, e.g. mkdir -m 0770 {tmp_path}/drops)",
        "1 error",
    ]


def test_an_outbox_without_integration_http_is_an_error(tmp_path: Path) -> None:
    """Files in the outbox could never be uploaded without integration.http."""
    (tmp_path / "outbox").mkdir()
    lines = _errors(_site(tmp_path, "  outbox: outbox\n"))
    assert lines == [
        f"{tmp_path}/gatewayd.yaml:16:11: integration.outbox: the outbox's files are uploaded "
        "over integration.http, which is not configured (add an integration.http section "
        "(see README), or remove outbox)",
        "1 error",
    ]


def test_file_events_without_integration_http_are_an_error_at_the_device(tmp_path: Path) -> None:
    """A device whose model declares file_events needs integration.http."""
    config = write_site(tmp_path, "device_secret: a", "device_secret: b")
    (tmp_path / "models" / "meter.yaml").write_text(MODEL + FILE_EVENTS)
    lines = _errors(config)
    assert lines == [
        f"{tmp_path}/gatewayd.yaml:11:12: devices[0].model: model 'meter' declares file_events, "
        "which are uploaded over integration.http, which is not configured (add an "
        "integration.http section (see README))",
        "1 error",
    ]


@pytest.mark.parametrize(
    ("file_events", "message"),
    [
        (
            "file_events: [{event: trip, file_param: rec, params: {rec: int}}]\n",
            "'rec' is the file_param; do not list it in params",
        ),
        (
            "file_events: [{event: trip, file_param: rec, params: {n: double}}]\n",
            "file_events[0].params.n",
        ),
        (
            "file_events: [{event: trip, file_param: a}, {event: trip, file_param: b}]\n",
            "file_events declares trip more than once",
        ),
        ("file_events: [{event: trip, file_param: a, colour: red}]\n", "colour: unknown key"),
    ],
    ids=["file-param-in-params", "bad-type", "twice", "unknown-key"],
)
def test_bad_file_events_are_errors_in_the_model_file(
    tmp_path: Path, file_events: str, message: str
) -> None:
    """file_events are strict: types, duplicates, unknown keys, the file param apart."""
    lines = _errors(_site(tmp_path, HTTP, file_events))
    assert any("models/meter.yaml" in line and message in line for line in lines), lines
