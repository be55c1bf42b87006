"""`gatewayd check --cloud CONFIG`: the YAML models against each product's model in EnOS.

One gateway session (`oneshot`: the CONNECT counts in `connects.json`): per product, one
of its sub-devices is logged in, its model fetched with `thing.tsltemplate.get` and the
sub-device logged out again; every device of the product is compared (`modelcheck`).
Mismatches print like local config errors, `FILE:LINE:COL: path: message`, at the item
in the model file (or, for a static attribute, in gatewayd.yaml), then a count.

Exit statuses: 0 the models match; 78 mismatches (or an invalid config); 69 EnOS
unreachable or no model could be fetched; 75 the CONNECT budget is spent.
"""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

from gatewayd.config.errors import ConfigIssue, count_line
from gatewayd.config.models import Config, DeviceConfig
from gatewayd.config.yamlload import YamlDocument, load_yaml_file
from gatewayd.enos import messages
from gatewayd.enos.ids import IdGenerator
from gatewayd.enos.session import BrokerUnavailable, GatewaySession, ReplyTimeout
from gatewayd.uplink.cloudmodel import fetch_model
from gatewayd.uplink.modelcheck import CloudModel, check_model
from gatewayd.uplink.oneshot import BudgetSpent, gateway_session

EX_OK = 0
EX_UNAVAILABLE = 69
EX_TEMPFAIL = 75
EX_CONFIG = 78
PROG = "gatewayd check --cloud"


class _Documents:
    """The YAML documents mismatches point into, loaded once each."""

    def __init__(self, config_path: Path) -> None:
        self._config_path = config_path
        self._cache: dict[str, YamlDocument | None] = {}
        main = self._load(config_path, str(config_path))
        self.main = main
        data = main.data if main is not None and isinstance(main.data, dict) else {}
        inline = data.get("models")
        self._inline: dict[str, object] = inline if isinstance(inline, dict) else {}
        self._models_dir = Path(str(data.get("models_dir", "models")))

    def _load(self, path: Path, shown: str) -> YamlDocument | None:
        if shown not in self._cache:
            self._cache[shown] = load_yaml_file(path, shown)[0]
        return self._cache[shown]

    def model(self, name: str) -> tuple[YamlDocument | None, tuple[str, ...]]:
        """The document and path prefix of model `name` (as the loader found it)."""
        if name in self._inline:
            return self.main, ("models", name)
        directory = self._models_dir
        shown = directory if directory.is_absolute() else self._config_path.parent / directory
        return self._load(shown / f"{name}.yaml", str(shown / f"{name}.yaml")), ()


async def _login(
    session: GatewaySession, config: Config, device: DeviceConfig, ids: IdGenerator
) -> str:
    """Log `device` in; "" or why not."""
    gw = config.gateway
    secret = device.device_secret.get_secret_value() if device.device_secret else ""
    request = messages.combine_login(
        gw.product_key, gw.device_key, id=ids.next_id(),
        device=messages.SubDeviceCredentials(device.product_key, device.device_key, secret),
        timestamp=str(int(time.time() * 1000)), sign_method=gw.sign_method,
    )  # fmt: skip
    try:
        raw = await session.request(request.topic, request.id, request.payload)
        reply = messages.decode_reply(raw.payload)
    except (ReplyTimeout, messages.MalformedMessage) as exc:
        return str(exc)
    return "" if reply.ok else f"login refused: {reply.code} {reply.message}".strip()


async def _logout(
    session: GatewaySession, config: Config, device: DeviceConfig, ids: IdGenerator
) -> None:
    gw = config.gateway
    ref = messages.DeviceRef(device.product_key, device.device_key)
    request = messages.combine_logout(gw.product_key, gw.device_key, id=ids.next_id(), device=ref)
    with contextlib.suppress(ReplyTimeout):  # the session's end logs it out anyway
        await session.request(request.topic, request.id, request.payload, timeout=5)


async def fetch_models(
    session: GatewaySession, config: Config
) -> tuple[dict[str, CloudModel], list[str]]:
    """Each product's cloud model, and the reasons the others could not be fetched."""
    ids = IdGenerator.from_time_ms(int(time.time() * 1000))
    models: dict[str, CloudModel] = {}
    problems: list[str] = []
    for product_key in sorted({d.product_key for d in config.devices if d.enabled}):
        device = next(d for d in config.devices if d.enabled and d.product_key == product_key)
        why = await _login(session, config, device, ids)
        if why:
            problems.append(f"product {product_key}: cannot log {device.name} in: {why}")
            continue
        model, why = await fetch_model(session, device.product_key, device.device_key,
                                       ids.next_id())  # fmt: skip
        await _logout(session, config, device, ids)
        if model is None:
            problems.append(f"product {product_key}: {why}")
        else:
            models[product_key] = model
    return models, problems


def mismatch_issues(
    config: Config, config_path: Path, models: dict[str, CloudModel]
) -> list[ConfigIssue]:
    """Every mismatch, located, deduplicated (devices sharing a model share its lines)."""
    docs = _Documents(config_path)
    issues: dict[str, ConfigIssue] = {}
    for index, device in enumerate(config.devices):
        cloud = models.get(device.product_key)
        model = config.models.get(device.model)
        if cloud is None or model is None or not device.enabled:
            continue
        for mismatch in check_model(model, cloud, device=(index, device)):
            prefix: tuple[str, ...] = ()
            if mismatch.in_config:
                doc = docs.main
            else:
                doc, prefix = docs.model(device.model)
            path = (*prefix, *mismatch.path)
            if doc is None:
                issue = ConfigIssue(str(config_path), None, None, path, mismatch.message)
            else:
                issue = doc.issue(path, mismatch.message, key=mismatch.in_config)
            issues.setdefault(issue.render(), issue)
    return sorted(issues.values(), key=lambda i: (i.file, i.line or 0, i.column or 0))


async def run_cloud_check(config: Config, config_path: Path, state_dir: Path) -> int:
    """The command: fetch, compare, print; the exit status."""
    try:
        async with gateway_session(config, state_dir) as session:
            models, problems = await fetch_models(session, config)
    except BudgetSpent as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return EX_TEMPFAIL
    except BrokerUnavailable as exc:
        print(f"{PROG}: cannot connect to EnOS: {exc}", file=sys.stderr)
        return EX_UNAVAILABLE
    for problem in problems:
        print(f"{PROG}: {problem}", file=sys.stderr)
    issues = mismatch_issues(config, config_path, models)
    for issue in issues:
        print(issue.render(), file=sys.stderr)
    if issues:
        print(count_line(len(issues)), file=sys.stderr)
        return EX_CONFIG
    return EX_UNAVAILABLE if problems else EX_OK
