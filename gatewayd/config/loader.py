"""`load_config(path)`: YAML files in, a validated, resolved `Config` out, or every error.

Order of work: parse `gatewayd.yaml` (line-tracking), validate it with pydantic, load
and validate each model the devices reference (`models_dir/<name>.yaml`, or inline under
`models:`), run the cross-checks pydantic cannot express (`site_rules`, `model_rules`),
read secret files. Every issue of every file is collected; if there is any, one
`ConfigError` carries them all, sorted by file and position.

The returned `Config` is self-contained: relative paths (`spool.path`, `models_dir`,
TLS files, secret files) are absolute, resolved against the config file's directory;
`device_secret`/`product_secret` hold the secrets read from their files; `models` holds
every model a device references.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import SecretStr, ValidationError

from gatewayd.config.capture_rules import check_captures
from gatewayd.config.errormap import validation_issues
from gatewayd.config.errors import ConfigError, ConfigIssue, DataPath
from gatewayd.config.model_rules import check_model
from gatewayd.config.models import (
    BrokerConfig,
    Config,
    DeviceConfig,
    DeviceModel,
    GatewayConfig,
    HistoricalEvents,
    IntegrationConfig,
    TlsConfig,
)
from gatewayd.config.secretfiles import (
    SecretFileError,
    SecretFileTooOpenError,
    read_secret,
    resolve_secret_file,
)
from gatewayd.config.site_rules import check_site
from gatewayd.config.suggest import hint_for
from gatewayd.config.yamlload import YamlDocument, load_yaml_file

__all__ = ["ConfigError", "load_config"]


def load_config(path: Path, *, environ: Mapping[str, str] | None = None) -> Config:
    """Load and validate `path`; raise `ConfigError` holding every issue found.

    `environ` (default `os.environ`) supplies `$CREDENTIALS_DIRECTORY` for secret files.
    """
    return _Load(Path(path), os.environ if environ is None else environ).run()


def _abs(path: Path) -> Path:
    """Absolute and normalised, without resolving symlinks (/etc/gatewayd may be one)."""
    return Path(os.path.abspath(path))


class _Load:
    """One loading run: the files read so far and the issues found in them."""

    def __init__(self, path: Path, environ: Mapping[str, str]) -> None:
        self.path = path
        self.environ = environ
        self.shown_dir = path.parent  # as the user gave it: for printing
        self.abs_dir = _abs(path).parent  # for resolving
        self.issues: list[ConfigIssue] = []
        # (section path, "device"/"product") → (absolute file, secret) for secret files
        self.secrets: dict[DataPath, tuple[Path, SecretStr]] = {}
        self.file_order: list[str] = [str(path)]
        # model name → (its document, its path there): for checks needing the site too
        self.model_at: dict[str, tuple[YamlDocument, DataPath]] = {}

    # ------------------------------------------------------------------ orchestration

    def run(self) -> Config:
        doc, issues = load_yaml_file(self.path, str(self.path))
        self.issues += issues
        if doc is None:
            raise ConfigError(self.issues)
        if not isinstance(doc.data, dict):
            message = "file is empty" if doc.data is None else "expected a mapping at the top"
            self.issues.append(doc.issue((), message, "start from config/gatewayd.yaml"))
            raise ConfigError(self._sorted())
        data = dict(doc.data)
        inline = data.pop("models", None)
        config = self._validate(Config, data, doc, ())
        self.issues += check_site(doc, data)
        self.secrets = self._read_secret_files(doc, data)
        models = self._load_models(doc, data, inline, config)
        if config is None:
            raise ConfigError(self._sorted())
        resolved = self._resolve(doc, config, models)
        if self.issues:
            raise ConfigError(self._sorted())
        return resolved

    def _validate(self, model: type[Any], data: Any, doc: YamlDocument, prefix: DataPath) -> Any:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            self.issues += validation_issues(exc, doc, model, data, prefix)
            return None

    def _sorted(self) -> list[ConfigIssue]:
        order = {name: i for i, name in enumerate(self.file_order)}
        unique = dict.fromkeys(self.issues)  # a merged anchor may repeat an issue
        return sorted(
            unique,
            key=lambda x: (order.get(x.file, len(order)), x.line or 0, x.column or 0),
        )

    # ------------------------------------------------------------------ models

    def _load_models(
        self,
        doc: YamlDocument,
        data: dict[str, Any],
        inline: object,
        config: Config | None,
    ) -> dict[str, DeviceModel]:
        """Every model a device references, validated and checked."""
        models: dict[str, DeviceModel] = {}
        inline_raw: dict[str, Any] = {}
        if inline is not None and not isinstance(inline, dict):
            self.issues.append(doc.issue(("models",), "expected a mapping of model name to model"))
        elif isinstance(inline, dict):
            inline_raw = {str(k): v for k, v in inline.items()}
        for name, raw in inline_raw.items():
            model = self._check_one_model(doc, ("models", name), raw, name, f"its key '{name}'")
            if model is not None:
                models[name] = model
        models_dir = self._models_dir(data, config)
        for name, device_index in self._referenced_models(data).items():
            if name in inline_raw:
                continue
            at: DataPath = ("devices", device_index, "model")
            if models_dir is None:
                continue  # the bad models_dir is reported already
            if "/" in name or "\\" in name or name.startswith("."):
                self.issues.append(
                    doc.issue(
                        at,
                        f"model name '{name}' must be a plain name",
                        f"the file {name}.yaml in models_dir",
                    )
                )
                continue
            shown = models_dir if models_dir.is_absolute() else self.shown_dir / models_dir
            file = self.abs_dir / models_dir / f"{name}.yaml"
            if not file.is_file():
                available = list(inline_raw) + _model_stems(self.abs_dir / models_dir)
                self.issues.append(
                    doc.issue(
                        at,
                        f"model '{name}' not found in {shown}/",
                        hint_for(name, available, known="available models"),
                    )
                )
                continue
            display = str(shown / f"{name}.yaml")
            self.file_order.append(display)
            model_doc, issues = load_yaml_file(file, display)
            self.issues += issues
            if model_doc is None:
                continue
            model = self._check_one_model(
                model_doc, (), model_doc.data, name, f"its file name '{name}.yaml'"
            )
            if model is not None:
                models[name] = model
        return models

    def _check_one_model(
        self, doc: YamlDocument, prefix: DataPath, raw: Any, name: str, named_by: str
    ) -> DeviceModel | None:
        if not isinstance(raw, dict):
            self.issues.append(doc.issue(prefix, "expected a model: a mapping with points"))
            return None
        model: DeviceModel | None = self._validate(DeviceModel, raw, doc, prefix)
        self.issues += check_model(doc, prefix, raw)
        self.model_at[name] = (doc, prefix)
        written = raw.get("name")
        if isinstance(written, str) and written != name:
            self.issues.append(
                doc.issue(
                    (*prefix, "name"),
                    f"model name '{written}' differs from {named_by}",
                    "make them the same",
                )
            )
        return model

    def _models_dir(self, data: dict[str, Any], config: Config | None) -> Path | None:
        if config is not None:
            return config.models_dir
        raw = data.get("models_dir", "models")
        return Path(raw) if isinstance(raw, str) else None

    @staticmethod
    def _referenced_models(data: dict[str, Any]) -> dict[str, int]:
        """Model name → index of the first device that references it."""
        found: dict[str, int] = {}
        devices = data.get("devices")
        if not isinstance(devices, list):
            return found
        for index, device in enumerate(devices):
            if isinstance(device, dict) and isinstance(device.get("model"), str):
                found.setdefault(device["model"], index)
        return found

    # ------------------------------------------------------------------ resolution

    def _resolve(self, doc: YamlDocument, config: Config, models: dict[str, DeviceModel]) -> Config:
        """Absolute paths, secrets read from their files, models attached."""
        gateway = self._resolve_gateway(doc, config.gateway)
        devices = []
        for index, device in enumerate(config.devices):
            model = models.get(device.model)
            if model is not None:
                self._check_point_reports(doc, index, device, model)
                self._check_historical_channel(doc, index, device, model, config)
                self.issues += check_captures(
                    *self.model_at[device.model], device, model, config.integration
                )
            update: dict[str, Any] = {}
            found = self.secrets.get(("devices", index, "device_secret_file"))
            if found is not None:
                update = {"device_secret_file": found[0], "device_secret": found[1]}
            devices.append(device.model_copy(update=update))
        return config.model_copy(
            update={
                "gateway": gateway,
                "integration": self._resolve_integration(doc, config, models),
                "spool": config.spool.model_copy(
                    update={"path": self._abs_path(config.spool.path)}
                ),
                "models_dir": self._abs_path(config.models_dir),
                "devices": devices,
                "models": {d.model: models[d.model] for d in config.devices if d.model in models},
            }
        )

    def _check_point_reports(
        self, doc: YamlDocument, index: int, device: DeviceConfig, model: DeviceModel
    ) -> None:
        """Every measurepoint a device's `point_reports` names is one of its model's."""
        known = [p.measurepoint for p in model.points]
        for name in device.point_reports:
            if name not in known:
                self.issues.append(
                    doc.issue(
                        ("devices", index, "point_reports", name),
                        f"model '{model.name}' has no measurepoint '{name}'",
                        hint_for(name, known, known="its measurepoints"),
                    )
                )

    def _check_historical_channel(
        self,
        doc: YamlDocument,
        index: int,
        device: DeviceConfig,
        model: DeviceModel,
        config: Config,
    ) -> None:
        """With `historical_events: integration`, a device whose model fires events needs
        its product's integration channel: its backlog events could go nowhere else."""
        if config.uplink.historical_events is not HistoricalEvents.INTEGRATION:
            return
        if not model.events or not device.enabled:
            return
        mqtt = config.integration.mqtt
        pk = device.product_key
        if mqtt is not None and pk in mqtt.products:
            return
        self.issues.append(
            doc.issue(
                ("devices", index, "product_key"),
                f"uplink.historical_events is 'integration' and model '{model.name}' fires"
                f" events, but product '{pk}' has no integration channel",
                f"add integration: {{mqtt: {{products: {{{pk}: {{product_secret_file: FILE}}}}}}}},"
                " or set uplink.historical_events: thing",
            )
        )

    def _resolve_gateway(self, doc: YamlDocument, gateway: GatewayConfig) -> GatewayConfig:
        update: dict[str, Any] = {}
        for kind in ("device", "product"):
            found = self.secrets.get(("gateway", f"{kind}_secret_file"))
            if found is not None:
                update[f"{kind}_secret_file"] = found[0]
                update[f"{kind}_secret"] = found[1]
        broker = self._resolve_broker(doc, gateway.broker, ("gateway", "broker"))
        return gateway.model_copy(update={**update, "broker": broker})

    def _resolve_broker(
        self, doc: YamlDocument, broker: BrokerConfig, at: DataPath
    ) -> BrokerConfig:
        """The broker with its TLS files made absolute (and checked when TLS is on)."""
        tls = broker.tls
        tls_update: dict[str, Any] = {}
        for name in ("ca_file", "cert_file", "key_file"):
            value = getattr(tls, name)
            if value is None:
                continue
            tls_update[name] = self._abs_path(value)
            if tls.enabled and not tls_update[name].is_file():
                self.issues.append(
                    doc.issue(
                        (*at, "tls", name),
                        f"file '{value}' not found",
                        "relative paths are read next to the config file"
                        if not value.is_absolute()
                        else None,
                    )
                )
        return broker.model_copy(update={"tls": _copy(tls, tls_update)})

    def _resolve_integration(
        self, doc: YamlDocument, config: Config, models: dict[str, DeviceModel]
    ) -> IntegrationConfig:
        """`integration.http` with its secret key read and its CA file made absolute;
        the outbox made absolute; file events only with `integration.http`;
        `integration.mqtt` with its product secrets read."""
        integration = self._resolve_outbox(doc, config.integration)
        integration = self._resolve_integration_mqtt(doc, integration)
        http = integration.http
        if http is None:
            self._file_events_need_http(doc, config, models)
            return integration
        update: dict[str, Any] = {}
        found = self.secrets.get(("integration", "http", "secret_key_file"))
        if found is not None:
            update = {"secret_key_file": found[0], "secret_key": found[1]}
        if http.ca_file is not None:
            update["ca_file"] = self._abs_path(http.ca_file)
            if not update["ca_file"].is_file():
                self.issues.append(
                    doc.issue(
                        ("integration", "http", "ca_file"), f"file '{http.ca_file}' not found"
                    )
                )
        return integration.model_copy(update={"http": http.model_copy(update=update)})

    def _resolve_integration_mqtt(
        self, doc: YamlDocument, integration: IntegrationConfig
    ) -> IntegrationConfig:
        mqtt = integration.mqtt
        if mqtt is None:
            return integration
        if mqtt.broker is not None:
            broker = self._resolve_broker(doc, mqtt.broker, ("integration", "mqtt", "broker"))
            mqtt = mqtt.model_copy(update={"broker": broker})
        products = {}
        for pk, product in mqtt.products.items():
            found = self.secrets.get(("integration", "mqtt", "products", pk, "product_secret_file"))
            update = (
                {}
                if found is None
                else {"product_secret_file": found[0], "product_secret": found[1]}
            )
            products[pk] = product.model_copy(update=update)
        return integration.model_copy(
            update={"mqtt": mqtt.model_copy(update={"products": products})}
        )

    def _resolve_outbox(
        self, doc: YamlDocument, integration: IntegrationConfig
    ) -> IntegrationConfig:
        if integration.outbox is None:
            return integration
        at: DataPath = ("integration", "outbox")
        if integration.http is None:
            self.issues.append(
                doc.issue(
                    at,
                    "the outbox's files are uploaded over integration.http, "
                    "which is not configured",
                    "add an integration.http section (see README), or remove outbox",
                )
            )
        outbox = self._abs_path(integration.outbox)
        if not outbox.is_dir():
            # Not created here: who may drop files into it (owner, group, mode) is the site's call.
            self.issues.append(
                doc.issue(
                    at,
                    f"directory '{integration.outbox}' does not exist",
                    f"create it for the software that drops files, e.g. mkdir -m 0770 {outbox}",
                )
            )
        return integration.model_copy(update={"outbox": outbox})

    def _file_events_need_http(
        self, doc: YamlDocument, config: Config, models: dict[str, DeviceModel]
    ) -> None:
        """A device whose model declares file events needs integration.http to upload them."""
        for index, device in enumerate(config.devices):
            model = models.get(device.model)
            if model is not None and model.file_events:
                self.issues.append(
                    doc.issue(
                        ("devices", index, "model"),
                        f"model '{model.name}' declares file_events, which are uploaded over "
                        "integration.http, which is not configured",
                        "add an integration.http section (see README)",
                    )
                )
                return

    def _read_secret_files(
        self, doc: YamlDocument, data: dict[str, Any]
    ) -> dict[DataPath, tuple[Path, SecretStr]]:
        """Read every `*_secret_file` written (valid section or not), keyed by its path."""
        both = ("device_secret_file", "product_secret_file")
        sections: list[tuple[DataPath, object, tuple[str, ...]]] = [
            (("gateway",), data.get("gateway"), both)
        ]
        integration = data.get("integration")
        if isinstance(integration, dict):
            sections.append(
                (("integration", "http"), integration.get("http"), ("secret_key_file",))
            )
            mqtt = integration.get("mqtt")
            products = mqtt.get("products") if isinstance(mqtt, dict) else None
            if isinstance(products, dict):
                sections += [
                    (("integration", "mqtt", "products", pk), product, ("product_secret_file",))
                    for pk, product in products.items()
                ]
        devices = data.get("devices")
        if isinstance(devices, list):
            sections += [
                (("devices", i), device, ("device_secret_file",))
                for i, device in enumerate(devices)
            ]
        found: dict[DataPath, tuple[Path, SecretStr]] = {}
        for at, section, keys in sections:
            if not isinstance(section, dict):
                continue
            for key in keys:
                value = section.get(key)
                if value == "":
                    self.issues.append(doc.issue((*at, key), "empty file name"))
                elif isinstance(value, str):
                    secret = self._secret(doc, (*at, key), Path(value))
                    if secret is not None:
                        found[(*at, key)] = secret
        return found

    def _secret(
        self, doc: YamlDocument, at: DataPath, value: Path
    ) -> tuple[Path, SecretStr] | None:
        file = resolve_secret_file(value, self.abs_dir, self.environ)
        try:
            return file, SecretStr(read_secret(file))
        except SecretFileTooOpenError as exc:
            # Named as the user sees it: next to the config as given, else where it was found.
            fix = self.shown_dir / value if file == _abs(self.abs_dir / value) else file
            self.issues.append(doc.issue(at, f"{exc} ('{value}')", f"chmod 600 {fix}"))
            return None
        except SecretFileError as exc:
            hint = None
            if not value.is_absolute():
                hint = "looked next to the config file"
                if self.environ.get("CREDENTIALS_DIRECTORY"):
                    hint = "looked in $CREDENTIALS_DIRECTORY and next to the config file"
            self.issues.append(doc.issue(at, f"{exc} ('{value}')", hint))
            return None

    def _abs_path(self, value: Path) -> Path:
        return value if value.is_absolute() else _abs(self.abs_dir / value)


def _copy(model: TlsConfig, update: dict[str, Any]) -> TlsConfig:
    return model.model_copy(update=update) if update else model


def _model_stems(directory: Path) -> list[str]:
    try:
        return sorted(p.stem for p in directory.glob("*.yaml"))
    except OSError:
        return []
