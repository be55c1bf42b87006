"""Sub-device attributes: read at each login and every `attributes_interval`, sent on change.

A device's attributes are its model's register attributes (nameplate data, read through
the bus task) plus the static ones of its config (which win on a name clash). They go
out with `thing.attribute.update` on the sub-device's own topic (enos-protocol.md §3.6,
#13), at most 200 per request, and only those that differ from what EnOS last accepted
(`SentState`, in the state directory: a restart resends nothing).

Replies: 200 records the values; 1204/1207 (model or format) are bisected down to the
attributes EnOS refuses, each named in one warning and not sent again until its value
changes, while the rest go through; no reply (timeout) is retried after `RETRY_S`; 1009
(the sub-device is not logged in) asks for a login and retries after it. An attribute
that cannot be read is reported once per episode and read again at the next pass; it
never holds back the other attributes, the login or the data.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterator, Mapping
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

FILE_NAME = "attributes.json"
#: EnOS takes at most 200 attributes per request (§3.6, §5).
MAX_PER_REQUEST = 200
#: After a request got no reply: try again this much later (transport trouble is passing).
RETRY_S = 30.0
#: How long a read of a device's attributes may wait for its bus.
READ_TIMEOUT_S = 30.0
#: Reply codes that refuse the request's content, not the transport.
REFUSED = frozenset({1204, 1207})
NOT_LOGGED_IN = frozenset({1009, 1212})

#: Reads a device's register attributes: (values, reason by attribute that failed).
AttributeSource = Callable[[str], Awaitable[tuple[dict[str, Any], dict[str, str]]]]


def canonical(value: Any) -> str:
    """A value as JSON text: how values are compared with what EnOS holds."""
    return json.dumps(value, sort_keys=True)


def changed(current: Mapping[str, Any], sent: Mapping[str, Any]) -> dict[str, Any]:
    """The attributes of `current` that EnOS does not hold with this value."""
    return {
        name: value
        for name, value in current.items()
        if name not in sent or canonical(sent[name]) != canonical(value)
    }


def chunks(values: Mapping[str, Any], size: int = MAX_PER_REQUEST) -> Iterator[dict[str, Any]]:
    """`values` in requests of at most `size` attributes, in name order."""
    names = sorted(values)
    for start in range(0, len(names), size):
        yield {name: values[name] for name in names[start : start + size]}


def has_attributes(config: Config, device: DeviceConfig) -> bool:
    """The device has something to send as attributes."""
    model = config.models.get(device.model)
    return bool(device.attributes) or bool(model is not None and model.attributes)


class AttributeSync(DevicePasses):
    """Keeps each logged-in sub-device's attributes in EnOS equal to what it reads now."""

    def __init__(
        self,
        config: Config,
        sent: SentState,
        source: AttributeSource,
        *,
        clock: Clock,
        ids: IdGenerator,
        request_login: Callable[[], None],
    ) -> None:
        super().__init__(config, clock=clock)
        self._sent = sent
        self._source = source
        self._ids = ids
        self._request_login = request_login
        # Unreadable attributes, an episode per (device, attribute); refused values by
        # device (not sent again until they change).
        self._unreadable = Episodes(log)
        self._refused: dict[str, dict[str, str]] = {}

    def _serves(self, config: DeviceConfig) -> bool:
        return has_attributes(self._config, config)

    def _idle_s(self) -> float:
        return self._config.uplink.attributes_interval

    # ------------------------------------------------------------------ one pass

    async def sync(self, session: GatewaySession, device: SubDevice) -> None:
        """Read `device`'s attributes and send those EnOS does not hold yet."""
        config = self._config_of(device.name)
        if config is None:
            return
        login = device.online_since_ms
        values = {**await self._read(config), **config.attributes}
        key = device_id(device.product_key, device.device_key)
        pending = changed(values, self._sent.get(key))
        refused = self._refused.setdefault(device.name, {})
        for name in list(refused):
            if name not in pending or canonical(pending[name]) != refused[name]:
                del refused[name]  # a new value deserves a new try
            else:
                del pending[name]
        retry = False
        for chunk in chunks(pending):
            outcome = await self._send(session, device, key, chunk)
            if outcome == "not-logged-in":
                retry = True  # a new login passes at once; else try again after RETRY_S
                break
            retry = retry or outcome == "retry"
        interval = RETRY_S if retry else self._config.uplink.attributes_interval
        self._pass_done(device, login, interval)
        log.info("sub-device attribute pass", device=device.name, changed=len(pending),
                 next_s=round(interval))  # fmt: skip

    async def _read(self, config: DeviceConfig) -> dict[str, Any]:
        model = self._config.models.get(config.model)
        if model is None or not model.attributes:
            return {}
        try:
            async with asyncio.timeout(READ_TIMEOUT_S):
                values, errors = await self._source(config.name)
        except Exception as exc:  # the bus is down, the device silent: read again later
            reason = str(exc) or type(exc).__name__
            values, errors = {}, {a.attribute: reason for a in model.attributes}
        self._note_unreadable(config.name, errors)
        return {name: value for name, value in values.items() if name not in errors}

    def _note_unreadable(self, device: str, errors: Mapping[str, str]) -> None:
        """One warning per attribute that starts failing, one line when it reads again."""
        for name in sorted(errors):
            self._unreadable.failed(
                (device, name),
                "sub-device attribute cannot be read; it is read again at the next pass",
                device=device,
                attribute=name,
                reason=errors[name],
            )
        for key in self._unreadable.open:
            if isinstance(key, tuple) and key[0] == device and key[1] not in errors:
                self._unreadable.end(
                    key, "sub-device attribute read again", device=device, attribute=key[1]
                )

    async def _send(
        self, session: GatewaySession, device: SubDevice, key: str, chunk: dict[str, Any]
    ) -> str:
        """Send one request: 'ok', 'refused' (all of it), 'retry' or 'not-logged-in'."""
        request = messages.attribute_update(
            device.product_key, device.device_key, id=self._ids.next_id(), attributes=chunk
        )
        try:
            raw = await session.request(request.topic, request.id, request.payload)
            reply = messages.decode_reply(raw.payload)
        except (ReplyTimeout, messages.MalformedMessage) as exc:
            log.warning("attribute update got no usable reply; retrying", device=device.name,
                        reason=str(exc), retry_s=RETRY_S)  # fmt: skip
            return "retry"
        if reply.ok:
            self._sent.update(key, chunk)
            log.info("sub-device attributes updated", device=device.name, attributes=sorted(chunk))
            return "ok"
        if reply.code in NOT_LOGGED_IN:
            self._request_login()
            return "not-logged-in"
        if reply.code in REFUSED:
            if len(chunk) == 1:
                ((name, value),) = chunk.items()
                self._refused.setdefault(device.name, {})[name] = canonical(value)
                log.warning(
                    "EnOS refused a sub-device attribute; it is not sent again until it"
                    " changes (does the product model declare it, with this type?)",
                    device=device.name,
                    attribute=name,
                    value=value,
                    code=reply.code,
                    message=reply.message,
                )
                return "refused"
            # Which attribute? Halve the request until each refused one stands alone.
            names = sorted(chunk)
            half = len(names) // 2
            outcomes = [
                await self._send(session, device, key, {n: chunk[n] for n in part})
                for part in (names[:half], names[half:])
            ]
            for outcome in ("not-logged-in", "retry"):
                if outcome in outcomes:
                    return outcome
            return "ok"
        log.warning("attribute update failed; retrying later", device=device.name,
                    code=reply.code, message=reply.message, retry_s=RETRY_S)  # fmt: skip
        return "retry"
