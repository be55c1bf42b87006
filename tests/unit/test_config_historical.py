"""`uplink.historical_events` and `integration.mqtt`: defaults, secrets, file:line errors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from gatewayd.cli import main
from gatewayd.config.errors import ConfigError
from gatewayd.config.loader import load_config
from gatewayd.config.models import HistoricalEvents
from gatewayd.config.risks import config_warnings
from tests.support import write_secret
from tests.unit.test_config_loader import write_site

EVENT_MODEL = """\
name: meter
points:
  - {measurepoint: alarm, table: coil, address: 0, type: bool}
events:
  - {event: alarmOn, rule: bit_set, point: alarm}
"""

MQTT = """\
integration:
  mqtt:
    products:
      meterPK: {product_secret_file: meterPK.secret}
"""


def site(tmp_path: Path, extra: str, *, events: bool = True) -> Path:
    """One meter of product meterPK; its model fires events unless `events` is False."""
    config = write_site(tmp_path, "device_secret: a", "device_secret: b", extra)
    if events:
        (tmp_path / "models" / "meter.yaml").write_text(EVENT_MODEL)
    return config


def errors(config: Path) -> list[str]:
    with pytest.raises(ConfigError) as error:
        load_config(config, environ={})
    return error.value.render().splitlines()


def test_defaults_thing_and_no_channel(tmp_path: Path) -> None:
    """Without the keys: backlog events go by thing.event.post, no integration channel."""
    config = load_config(site(tmp_path, ""), environ={})
    assert config.uplink.historical_events is HistoricalEvents.THING
    assert config.integration.mqtt is None


def test_product_secret_file_is_read_and_broker_defaults_to_none(tmp_path: Path) -> None:
    """The product secret comes from its file (newline stripped); no broker override, a
    60 s idle close."""
    write_secret(tmp_path / "meterPK.secret", "ps-71c0\n")
    config = load_config(
        site(tmp_path, "uplink: {historical_events: integration}\n" + MQTT), environ={}
    )
    assert config.uplink.historical_events is HistoricalEvents.INTEGRATION
    mqtt = config.integration.mqtt
    assert mqtt is not None
    product = mqtt.products["meterPK"]
    assert product.product_secret is not None
    assert product.product_secret.get_secret_value() == "ps-71c0"
    assert product.product_secret_file == tmp_path / "meterPK.secret"
    assert (mqtt.broker, mqtt.idle_close) == (None, 60.0)


def test_integration_mode_without_the_products_channel_is_an_error_at_the_device(
    tmp_path: Path,
) -> None:
    """historical_events: integration and a device whose model fires events, but its
    product has no integration.mqtt entry: one error at the device's product_key line,
    naming the product and the fix."""
    config = site(tmp_path, "uplink: {historical_events: integration}\n")
    lines = errors(config)
    # write_site puts devices[0].product_key on line 12.
    assert lines == [
        f"{config}:12:18: devices[0].product_key: uplink.historical_events is 'integration'"
        " and model 'meter' fires events, but product 'meterPK' has no integration channel"
        " (add integration: {mqtt: {products: {meterPK: {product_secret_file: FILE}}}}, or"
        " set uplink.historical_events: thing)",
        "1 error",
    ]


def test_integration_mode_is_fine_for_a_model_without_events(tmp_path: Path) -> None:
    """A product whose devices fire no events needs no channel."""
    config = load_config(
        site(tmp_path, "uplink: {historical_events: integration}\n", events=False), environ={}
    )
    assert config.integration.mqtt is None


def test_missing_and_doubled_product_secrets_are_errors_at_their_lines(tmp_path: Path) -> None:
    """No secret: error at the product's entry; both inline and file: error at the file key."""
    config = site(
        tmp_path,
        "integration:\n  mqtt:\n    products:\n      meterPK: {}\n"
        "      otherPK: {product_secret: x, product_secret_file: y.secret}\n",
    )
    write_secret(tmp_path / "y.secret", "y")
    lines = errors(config)
    assert lines == [
        f"{config}:18:16: integration.mqtt.products.meterPK: missing: the integration channel"
        " of product 'meterPK' signs with its product secret (set product_secret or"
        " product_secret_file)",
        f"{config}:19:57: integration.mqtt.products.otherPK.product_secret_file: give"
        " product_secret or product_secret_file, not both",
        "2 errors",
    ]


def test_open_secret_file_and_bad_mode_and_unknown_key(tmp_path: Path) -> None:
    """A product secret file others may read is refused (chmod hint); an unknown mode
    and an unknown key of integration.mqtt are errors at their lines."""
    (tmp_path / "meterPK.secret").write_text("ps")
    (tmp_path / "meterPK.secret").chmod(0o644)
    config = site(tmp_path, "uplink: {historical_events: integrate}\n" + MQTT + "    idle: 5s\n")
    assert errors(config) == [
        f"{config}:15:29: uplink.historical_events: input should be 'thing' or 'integration'"
        " (did you mean 'integration'?)",
        f"{config}:19:38: integration.mqtt.products.meterPK.product_secret_file: secret file is"
        f" open to group or others (mode 0644) ('meterPK.secret') (chmod 600"
        f" {tmp_path / 'meterPK.secret'})",
        f"{config}:20:5: integration.mqtt.idle: unknown key (known keys: broker, idle_close,"
        " products)",
        "3 errors",
    ]


def test_check_masks_an_inline_product_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """`gatewayd check` prints an inline product secret as *** and never its text."""
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    inline = MQTT.replace("product_secret_file: meterPK.secret", "product_secret: ps-inline-5e")
    config = site(tmp_path, "uplink: {historical_events: integration}\n" + inline)
    assert main(["check", str(config)]) == 0
    out = capsys.readouterr().out
    assert "ps-inline-5e" not in out
    printed = yaml.safe_load(out)
    assert printed["integration"]["mqtt"]["products"]["meterPK"]["product_secret"] == "***"
    assert printed["uplink"]["historical_events"] == "integration"


def test_an_unverified_integration_broker_is_warned_about(tmp_path: Path) -> None:
    """An integration.mqtt broker override with tls.verify: false is one warning at its key
    (the channel falls back to gateway.broker, whose own warning stays as it was)."""
    write_secret(tmp_path / "meterPK.secret", "ps")
    extra = MQTT + (
        "    broker: {host: other.example, port: 18883, tls: {enabled: true, verify: false}}\n"
    )
    config = load_config(site(tmp_path, extra), environ={})
    assert config.integration.mqtt is not None
    assert config.integration.mqtt.broker is not None
    assert config.integration.mqtt.broker.host == "other.example"
    assert [w.path for w in config_warnings(config)] == [
        ("integration", "mqtt", "broker", "tls", "verify")
    ]
