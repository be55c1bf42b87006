"""Valid settings that weaken the gateway: warned about, never refused.

`config_warnings(config)` is the one list of them, so `gatewayd check` (which prints them
located in the file, `located_warnings`) and the daemon at start (which logs them) say
the same thing. A warning is not an error: `check` still exits 0 and prints the config.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from gatewayd.config.errors import ConfigIssue, DataPath, format_path
from gatewayd.config.models import Config
from gatewayd.config.yamlload import load_yaml_file


@dataclass(frozen=True, slots=True)
class ConfigWarning:
    """One risky setting: where it is in gatewayd.yaml, what it risks, how to undo it."""

    path: DataPath
    message: str
    hint: str

    def render(self) -> str:
        """`dotted.path: warning: message (hint)`, for logs without a file position."""
        return f"{format_path(self.path)}: warning: {self.message} ({self.hint})"


def config_warnings(config: Config) -> list[ConfigWarning]:
    """Every risky setting of a valid `config`, in file order."""
    found: list[ConfigWarning] = []
    tls = config.gateway.broker.tls
    if tls.enabled and not tls.verify:
        found.append(
            ConfigWarning(
                ("gateway", "broker", "tls", "verify"),
                "the broker's TLS certificate is not verified: anyone on the network path "
                "can pose as EnOS and receive the gateway's data and sign-in",
                "remove 'verify: false'; for a private CA give ca_file",
            )
        )
    found += _integration_warnings(config)
    channel = config.integration.mqtt.broker if config.integration.mqtt else None
    if channel is not None and channel.tls.enabled and not channel.tls.verify:
        found.append(
            ConfigWarning(
                ("integration", "mqtt", "broker", "tls", "verify"),
                "the integration channel's TLS certificate is not verified: anyone on "
                "the network path can pose as EnOS and receive the product secret's sign",
                "remove 'verify: false'; for a private CA give ca_file",
            )
        )
    return found


def _integration_warnings(config: Config) -> list[ConfigWarning]:
    """`integration.http` sending its token in clear or to an unverified server."""
    http = config.integration.http
    if http is None:
        return []
    found: list[ConfigWarning] = []
    for key in ("address", "apigw"):
        value = getattr(http, key)
        if value is not None and value.startswith("http://"):
            found.append(
                ConfigWarning(
                    ("integration", "http", key),
                    "plain HTTP: the access token and the uploaded data cross the network "
                    "in clear",
                    "use https://",
                )
            )
    if not http.verify:
        found.append(
            ConfigWarning(
                ("integration", "http", "verify"),
                "the integration server's TLS certificate is not verified: anyone on the "
                "network path can take the access token and the data",
                "remove 'verify: false'; for a private CA give ca_file",
            )
        )
    return found


def located_warnings(path: Path, config: Config) -> list[ConfigIssue]:
    """`config_warnings` of the config loaded from `path`, each at its line and column."""
    warnings = config_warnings(config)
    if not warnings:
        return []
    doc, _ = load_yaml_file(path, str(path))
    located = []
    for warning in warnings:
        message = f"warning: {warning.message}"
        if doc is None:  # the file changed since it was loaded: say it without a position
            located.append(ConfigIssue(str(path), None, None, warning.path, message, warning.hint))
        else:
            located.append(doc.issue(warning.path, message, warning.hint))
    return located
