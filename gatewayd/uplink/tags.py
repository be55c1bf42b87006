"""Sub-device tags: the config's tags kept equal in EnOS, at each login and after a reload.

A device's tags are the top-level `default_tags` overlaid with its own `tags`, values as
text (EnOS tag values are strings). Tags that differ from what EnOS last accepted go out
with `thing.tag.update`; tags EnOS accepted before that the config no longer has are
removed with `thing.tag.delete` (enos-protocol.md §3.6 #16). What EnOS holds is kept in
`tags.json` in the state directory, so a restart sends nothing that did not change.

A refusal is logged once per device and code and tried again at the next login or
reload; a request without a reply is tried again after `RETRY_S`; 1009 asks for a login.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import structlog

from gatewayd.clock import Clock
from gatewayd.config.models import Config, DeviceConfig
from gatewayd.enos import messages
from gatewayd.enos.ids import IdGenerator
from gatewayd.enos.session import GatewaySession, ReplyTimeout
from gatewayd.episodes import Episodes
from gatewayd.uplink.devicepasses import DevicePasses
from gatewayd.uplink.sentstate import SentState, device_id
from gatewayd.uplink.subdevices import SubDevice

log = structlog.get_logger(__name__)

FILE_NAME = "tags.json"
RETRY_S = 30.0
NOT_LOGGED_IN = frozenset({1009, 1212})
#: Tags only change with the config: without a login or a reload, look again this rarely.
IDLE_S = 3600.0


def tag_text(value: Any) -> str:
    """A config value as EnOS tag text (YAML `true` is "true", not "True")."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def wanted_tags(config: Config, device: DeviceConfig) -> dict[str, str]:
    """The tags `device` should carry in EnOS."""
    merged = {**config.default_tags, **device.tags}
    return {key: tag_text(value) for key, value in merged.items()}


def tag_changes(
    wanted: Mapping[str, str], sent: Mapping[str, Any]
) -> tuple[dict[str, str], list[str]]:
    """(tags to update, keys to delete) to turn what EnOS holds into `wanted`."""
    updates = {k: v for k, v in wanted.items() if sent.get(k) != v}
    deletions = sorted(k for k in sent if k not in wanted)
    return updates, deletions


class TagSync(DevicePasses):
    """Keeps each logged-in sub-device's tags in EnOS equal to the config's."""

    def __init__(
        self,
        config: Config,
        sent: SentState,
        *,
        clock: Clock,
        ids: IdGenerator,
        request_login: Callable[[], None],
    ) -> None:
        super().__init__(config, clock=clock)
        self._sent = sent
        self._ids = ids
        self._request_login = request_login
        self._refusals = Episodes(log)  # by (device, method)

    def _idle_s(self) -> float:
        return IDLE_S

    async def sync(self, session: GatewaySession, device: SubDevice) -> None:
        """Send `device`'s changed tags and delete the ones the config dropped."""
        config = self._config_of(device.name)
        if config is None:
            return
        login = device.online_since_ms
        key = device_id(device.product_key, device.device_key)
        updates, deletions = tag_changes(wanted_tags(self._config, config), self._sent.get(key))
        outcome = "ok"
        if updates:
            request = messages.tag_update(
                device.product_key, device.device_key, id=self._ids.next_id(), tags=updates
            )
            outcome = await self._send(session, device, request)
            if outcome == "ok":
                self._sent.update(key, updates)
                log.info("sub-device tags updated", device=device.name, tags=sorted(updates))
        if deletions and outcome in ("ok", "refused"):
            request = messages.tag_delete(
                device.product_key, device.device_key, id=self._ids.next_id(), keys=deletions
            )
            outcome = await self._send(session, device, request)
            if outcome == "ok":
                self._sent.remove(key, deletions)
                log.info("sub-device tags deleted", device=device.name, tags=deletions)
        # A refusal waits for the next login or reload (a config or cloud change).
        wait = RETRY_S if outcome in ("retry", "not-logged-in") else IDLE_S * 24
        self._pass_done(device, login, wait)

    async def _send(
        self, session: GatewaySession, device: SubDevice, request: messages.Request
    ) -> str:
        """'ok', 'refused', 'retry' or 'not-logged-in'."""
        try:
            raw = await session.request(request.topic, request.id, request.payload)
            reply = messages.decode_reply(raw.payload)
        except (ReplyTimeout, messages.MalformedMessage) as exc:
            log.warning("tag request got no usable reply; retrying", device=device.name,
                        method=request.method, reason=str(exc), retry_s=RETRY_S)  # fmt: skip
            return "retry"
        if reply.ok:
            accepted = "EnOS accepts the sub-device's tags again"
            key = (device.name, request.method)
            self._refusals.end(key, accepted, device=device.name, method=request.method)
            return "ok"
        if reply.code in NOT_LOGGED_IN:
            self._request_login()
            return "not-logged-in"
        self._refusals.failed(
            (device.name, request.method),
            "EnOS refused a sub-device's tags; tried again at its next login",
            device=device.name, method=request.method, code=reply.code, message=reply.message,
        )  # fmt: skip
        return "refused"
