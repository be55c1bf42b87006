"""The daemon's model check: each product's model fetched once, mismatches logged once.

At the start of a session (after the logins, before delivery), for each product with a
logged-in sub-device not checked yet, `thing.tsltemplate.get` on that sub-device's topic
(enos-protocol.md §3.6 #17) gives the cloud model; `modelcheck.check_model` compares each
device of the product with it. Every mismatch is logged once per process; measurepoints
the cloud model lacks are withheld from delivery (`withheld`), so they cannot make a
whole batch fail with 1204, and are listed by `gatewayd status`. A reload checks again.
"""

from __future__ import annotations

import asyncio

import structlog

from gatewayd.config.errors import format_path
from gatewayd.config.models import Config
from gatewayd.enos import messages
from gatewayd.enos.ids import IdGenerator
from gatewayd.enos.session import GatewaySession
from gatewayd.uplink.asking import lookup_timeout, reply_data
from gatewayd.uplink.modelcheck import CloudModel, Mismatch, check_model
from gatewayd.uplink.subdevices import SubDevice, SubDeviceRegistry

log = structlog.get_logger(__name__)


async def fetch_model(
    session: GatewaySession,
    product_key: str,
    device_key: str,
    msg_id: str,
    *,
    timeout: float | None = None,
) -> tuple[CloudModel | None, str]:
    """(the product's cloud model, "") or (None, why not), asked on the device's topic.

    `timeout`: how long to wait for the reply (None: the session's reply timeout).
    """
    request = messages.tsl_template_get(product_key, device_key, id=msg_id)
    data, why_not = await reply_data(session, request, timeout=timeout)
    if why_not:
        return None, why_not
    model = CloudModel.parse(data)
    if model is None:
        return None, "thing.tsltemplate.get reply data is not an object"
    return model, ""


class CloudModelCheck:
    """Per device: what differs from its product's cloud model, and what is withheld."""

    def __init__(self) -> None:
        self._models: dict[str, CloudModel] = {}  # by product key
        self._logged: set[tuple[str, str]] = set()  # (device, rendered mismatch)
        self._failed: set[str] = set()  # products whose model could not be read (warned)
        #: Per device name: measurepoints the cloud model lacks (delivery leaves them out).
        self.withheld: dict[str, frozenset[str]] = {}
        #: Per device name: every mismatch found (status, tests).
        self.mismatches: dict[str, list[Mismatch]] = {}

    def reconfigure(self) -> None:
        """A reload: models and devices may have changed; fetch and compare again."""
        self._models.clear()

    async def run(
        self, session: GatewaySession, config: Config, registry: SubDeviceRegistry, ids: IdGenerator
    ) -> None:
        """Fetch the models of products not checked yet, through a logged-in sub-device.

        The products are asked at once, each given up after the lookup timeout, so a cloud
        that does not answer holds the session's first data back by one lookup timeout,
        not by one reply timeout per product.
        """
        asking: list[tuple[str, SubDevice]] = []
        for product_key in sorted({d.product_key for d in config.devices if d.enabled}):
            if product_key in self._models:
                continue
            device = next((d for d in registry if d.product_key == product_key and d.online), None)
            if device is None:
                continue  # tried again at the next session
            asking.append((product_key, device))
        timeout = lookup_timeout(config.uplink.reply_timeout)
        # A task group, not gather: a lost session cancels the other lookups too. Its
        # cause goes on as the session raised it (BrokerUnavailable), not wrapped in a
        # group: the uplink's reconnect loop tells a lost connection from a bug by type.
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(fetch_model(session, *d.keys, ids.next_id(), timeout=timeout))
                    for _, d in asking
                ]
        except BaseExceptionGroup as failed:
            raise failed.exceptions[0] from None
        for (product_key, _), task in zip(asking, tasks, strict=True):
            model, why = task.result()
            if model is None:
                if product_key not in self._failed:
                    self._failed.add(product_key)
                    log.warning("cannot read the product's cloud model; sending every point",
                                product_key=product_key, reason=why)  # fmt: skip
                continue
            self._failed.discard(product_key)
            self._models[product_key] = model
            self._compare(config, product_key, model)

    def _compare(self, config: Config, product_key: str, cloud: CloudModel) -> None:
        for index, device in enumerate(config.devices):
            model = config.models.get(device.model)
            if device.product_key != product_key or model is None:
                continue
            found = check_model(model, cloud, device=(index, device))
            self.mismatches[device.name] = found
            self.withheld[device.name] = frozenset(m.point for m in found if m.point)
            for mismatch in found:
                text = f"{format_path(mismatch.path)}: {mismatch.message}"
                if (device.name, text) in self._logged:
                    continue
                self._logged.add((device.name, text))
                where = "gatewayd.yaml" if mismatch.in_config else f"model {device.model}"
                log.warning("device differs from its product's cloud model", device=device.name,
                            where=where, mismatch=text)  # fmt: skip
