"""`tls.verify: false` is never silent: `gatewayd check` and every uplink start warn."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest
import yaml

from gatewayd.config.cli import EX_OK, run_check
from gatewayd.config.models import BrokerConfig
from gatewayd.enos.tlscheck import insecure_tls_warnings


def test_tls_without_verification_is_warned_about() -> None:
    """verify: false gives one clear warning; verified TLS and plain TCP give none."""
    insecure = BrokerConfig.model_validate(
        {"host": "h", "port": 18883, "tls": {"enabled": True, "verify": False}}
    )
    (warning,) = insecure_tls_warnings(insecure)
    assert "gateway.broker.tls.verify: false" in warning
    assert "h:18883" in warning
    assert "not authenticated" in warning
    assert insecure_tls_warnings(BrokerConfig.model_validate({"host": "h"})) == []
    verified = BrokerConfig.model_validate({"host": "h", "tls": {"enabled": True}})
    assert insecure_tls_warnings(verified) == []


@pytest.mark.parametrize(("verify", "warned"), [(False, 1), (True, 0)])
def test_check_warns_on_stderr_and_still_passes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], verify: bool, warned: int
) -> None:
    """`gatewayd check` on a valid config with verify off: exit 0, one warning line."""
    path = tmp_path / "gatewayd.yaml"
    config = {
        "gateway": {
            "product_key": "gwPK",
            "device_key": "gwDK",
            "device_secret": "gwSecret",
            "broker": {"host": "mqtt.example", "port": 18883,
                       "tls": {"enabled": True, "verify": verify}},
        },
        "spool": {"path": "spool.db"},
    }  # fmt: skip
    path.write_text(yaml.safe_dump(config))
    assert run_check(argparse.Namespace(config=path)) == EX_OK
    err = capsys.readouterr().err.splitlines()
    assert (
        len([line for line in err if "warning: TLS certificate verification is off" in line])
        == warned
    )
    assert len(err) == warned
