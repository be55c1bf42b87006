"""The emulated cloud's answer to every upstream message (PROTOCOL.md §3-§5, §8).

`Responder.handle` is pure apart from the state and records it owns: it takes the
connection, topic, payload and the current time, changes state / records what it accepted,
and returns an `Outcome` -- the reply to publish (the server decides whether the client
subscribed to it, and applies reply faults), or the device's reply to a pending command.

Order of checks on a request, as §8 lists them: size (1008; the id is still echoed when
the JSON is readable, so the sender can split and resend), empty (1251), JSON (1220),
topic ownership (1009: not a topic this connection may write -- another device's, a
sub-device that is not logged in, a downstream topic, an unknown topic), method/topic
consistency (1260), then the method's own checks.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gatewayd.enos import messages, topics
from gatewayd.enos.codes import ReplyCode
from gatewayd.enos.messages import MalformedMessage
from gatewayd.enos.sign import login_sign_params
from gatewayd.enos.topics import ParsedTopic, TopicKind
from gatewayd.sim.emulator.credentials import verify_sign
from gatewayd.sim.emulator.records import (
    AttributeRecord,
    Channel,
    EventRecord,
    LoginRecord,
    PointRecord,
    Records,
    TagRecord,
)
from gatewayd.sim.emulator.requests import decode_request
from gatewayd.sim.emulator.state import CloudState, Device, Key, default_asset_id
from gatewayd.sim.emulator.thingmodel import check_measurepoints, event_problem

#: Returns (code, message) to answer instead of processing, or None (fault injection).
Override = Callable[[str], tuple[int, str] | None]

_UPSTREAM_BY_GATEWAY_ONLY = frozenset(
    {
        TopicKind.COMBINE_LOGIN,
        TopicKind.COMBINE_LOGIN_BATCH,
        TopicKind.COMBINE_LOGOUT,
        TopicKind.TOPO_ADD,
        TopicKind.TOPO_GET,
        TopicKind.TOPO_DELETE,
        TopicKind.DEVICE_REGISTER,
        TopicKind.MEASUREPOINT_POST_BATCH,
        TopicKind.MEASUREPOINT_RESUME_BATCH,
    }
)

_DOWNSTREAM = frozenset(
    {
        TopicKind.COMBINE_ENABLE,
        TopicKind.COMBINE_DISABLE,
        TopicKind.COMBINE_DELETE,
        TopicKind.ACTIVATE_INFO,
        TopicKind.MEASUREPOINT_SET,
        TopicKind.MEASUREPOINT_GET,
        TopicKind.SERVICE,
        TopicKind.THING_ENABLE,
        TopicKind.THING_DISABLE,
        TopicKind.THING_DELETE,
        TopicKind.MODEL_DOWN_RAW,
        TopicKind.RRPC,
    }
)

_INTEGRATION = frozenset(
    {
        TopicKind.INTEGRATION_MEASUREPOINT_POST,
        TopicKind.INTEGRATION_EVENT_POST,
        TopicKind.INTEGRATION_ATTRIBUTE_POST,
        TopicKind.INTEGRATION_UP_RAW,
    }
)

# Messages as EnOS words them (§4).
MESSAGES: dict[int, str] = {
    1008: "Msg size is too large, discard the message",
    1009: "Publish to topic with no write permission",
    1220: "Payload format error",
    1251: "Payload is empty",
    1260: "Methods not consistent",
    705: "It failed to query device, not existed this device",
    723: "Device is disable",
    740: "Sub device not belong the gateway",
    742: "Sign check failed",
    746: "The device must login by ssl",
    770: "Dynamic activate is not allowed",
    702: "DeviceKey existed",
    1255: "add topo failure",
    1256: "Remove topo failure",
    1200: "Parse error",
    1204: "Model validate failed",
    1206: "Measurepoint post data format error",
    1207: "Attribute update data format error",
    1208: "Attribute query data format error",
    1209: "Attribute delete data format error",
    1212: "No sub-device permission",
    1257: "Device not found",
}


@dataclass(frozen=True, slots=True)
class Connection:
    """The EnOS identity of one live MQTT connection."""

    client_id: str
    device: Key
    integration: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    """What to do after one upstream message.

    `reply` (with `reply_topic`) is the cloud's answer, as payload bytes; `command_reply` is
    set when the message was a device's answer to a downstream command (topic, payload);
    neither is set for messages the cloud silently ignores (e.g. passthrough bytes).
    """

    method: str | None = None
    code: int | None = None
    reply_topic: str | None = None
    reply: bytes | None = None  # the exact payload
    command_reply: tuple[str, dict[str, Any]] | None = None


class _Reject(Exception):
    """A request fails with `code`; raised inside handlers, turned into a reply."""

    def __init__(
        self, code: int, detail: str = "", data: Any = None, *, verbatim: bool = False
    ) -> None:
        super().__init__(code, detail)
        self.code = code
        self.data = data
        # verbatim: `detail` is the whole message (batch login's per-device concatenation)
        self.message = detail if verbatim else _message(code, detail)


def _message(code: int, detail: str) -> str:
    base = MESSAGES.get(code, "")
    return f"{base}, {detail}" if base and detail else base or detail


def _reply(msg_id: str | None, code: int, message: str = "", data: Any = None) -> bytes:
    # An unreadable request has no id to echo: answer with an empty one.
    try:
        return messages.encode_reply(msg_id or "", code, data, message)
    except UnicodeEncodeError:
        # JSON "\ud800" escapes decode to lone surrogates that UTF-8 cannot carry; echo
        # them back as ASCII escapes rather than failing to answer.
        body = {"id": msg_id or "", "code": code, "message": message, "data": data or {}}
        return json.dumps(body, separators=(",", ":")).encode("ascii")


def _sign_valid(params: dict[str, str], secret: str, method: str, sign: str) -> bool:
    """`verify_sign` on request fields, which may hold lone surrogates: those never match."""
    try:
        return verify_sign(params, secret, method, sign)
    except UnicodeEncodeError:
        return False


def _flag(value: Any) -> bool:
    # PY SDK serialises unset flags as "" (§3.5.2): "" and missing mean false.
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return value is True


def _text(value: Any) -> str | None:
    # Timestamps and keys arrive as strings; C SDKs may send numbers.
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


class Responder:
    """Answers upstream requests against `state`, appending what it accepts to `records`."""

    def __init__(
        self,
        state: CloudState,
        records: Records,
        *,
        max_payload_bytes: int = 512 * 1024,
        online_cap_code: int = int(ReplyCode.TOO_MANY_REQUESTS),
    ) -> None:
        self.state = state
        self.records = records
        self.max_payload_bytes = max_payload_bytes
        self.online_cap_code = online_cap_code
        self.tags: dict[Key, dict[str, str]] = {}

    # --- entry point ------------------------------------------------------------------------

    def handle(
        self,
        conn: Connection,
        topic: str,
        payload: bytes,
        now_ms: int,
        override: Override | None = None,
    ) -> Outcome:
        """Process one PUBLISH from `conn`; see the module docstring for the order of checks."""
        parsed = topics.parse_topic(topic)
        if parsed.is_reply:
            return self._command_reply(topic, payload)
        if parsed.kind in (TopicKind.MODEL_UP_RAW, TopicKind.INTEGRATION_UP_RAW):
            return Outcome()  # passthrough needs a product script: not emulated (no reply)
        reply_to = topics.reply_topic(topic)

        def fail(code: int, detail: str = "", msg_id: str | None = None) -> Outcome:
            return Outcome(
                parsed.method, code, reply_to, _reply(msg_id, code, _message(code, detail))
            )

        try:
            envelope = decode_request(payload)
        except MalformedMessage as exc:
            if len(payload) > self.max_payload_bytes:
                return fail(1008, f"{len(payload)} bytes > {self.max_payload_bytes}", exc.id)
            empty = exc.reason.startswith("payload is empty")
            return fail(1251 if empty else 1220, "" if empty else exc.reason, exc.id)
        if len(payload) > self.max_payload_bytes:
            # Discarded unprocessed, but the id is echoed so the sender can split and resend.
            return fail(1008, f"{len(payload)} bytes > {self.max_payload_bytes}", envelope.id)
        body, msg_id = envelope.body, envelope.id

        problem = self._ownership_problem(conn, parsed)
        if problem is not None:
            return fail(1009, problem, msg_id)
        method = envelope.method
        if method != parsed.method:
            return fail(1260, f"method {method!r} on a {parsed.method} topic", msg_id)
        assert parsed.method is not None
        if override is not None:
            forced = override(parsed.method)
            if forced is not None:
                code, text = forced
                return Outcome(parsed.method, code, reply_to, _reply(msg_id, code, text))
        try:
            data, message = self._dispatch(conn, parsed, body, msg_id, now_ms)
        except _Reject as rej:
            return Outcome(
                parsed.method,
                rej.code,
                reply_to,
                _reply(msg_id, rej.code, rej.message, rej.data),
            )
        return Outcome(parsed.method, 200, reply_to, _reply(msg_id, 200, message, data))

    # --- routing ----------------------------------------------------------------------------

    def _command_reply(self, topic: str, payload: bytes) -> Outcome:
        try:
            body = json.loads(payload)
        except (UnicodeDecodeError, ValueError):
            return Outcome()  # a garbled reply is as good as none: the command times out
        if not isinstance(body, dict):
            return Outcome()
        return Outcome(command_reply=(topic, body))

    def _ownership_problem(self, conn: Connection, parsed: ParsedTopic) -> str | None:
        if parsed.kind is TopicKind.UNKNOWN:
            return "unknown topic"
        if parsed.kind in _DOWNSTREAM:
            return "a downstream topic cannot be published by a device"
        if conn.integration != (parsed.kind in _INTEGRATION):
            return "topic does not belong to this kind of connection"
        if conn.integration:
            return None if parsed.product_key == conn.device[0] else "another product's topic"
        assert parsed.product_key is not None
        assert parsed.device_key is not None
        owner = (parsed.product_key, parsed.device_key)
        if owner == conn.device:
            return None
        if self.state.is_online(owner, via=conn.device):
            if parsed.kind in _UPSTREAM_BY_GATEWAY_ONLY:
                return "gateway-only topic of a sub-device"
            return None
        return f"device {owner[0]}/{owner[1]} is not logged in through this gateway"

    def _dispatch(
        self, conn: Connection, parsed: ParsedTopic, body: dict[str, Any], msg_id: Any, now: int
    ) -> tuple[Any, str]:
        owner: Key = (parsed.product_key or "", parsed.device_key or "")
        params = body.get("params")
        kind = parsed.kind
        if kind is TopicKind.COMBINE_LOGIN:
            return self._login(owner, params, now), "success"
        if kind is TopicKind.COMBINE_LOGIN_BATCH:
            return self._login_batch(owner, params, now)
        if kind is TopicKind.COMBINE_LOGOUT:
            return self._logout(owner, params, now), "success"
        if kind is TopicKind.TOPO_ADD:
            return self._topo_add(owner, params), ""
        if kind is TopicKind.TOPO_GET:
            return self._topo_get(owner), ""
        if kind is TopicKind.TOPO_DELETE:
            return self._topo_delete(owner, params), ""
        if kind is TopicKind.DEVICE_REGISTER:
            return self._register(params), ""
        if kind in (TopicKind.MEASUREPOINT_POST, TopicKind.MEASUREPOINT_RESUME):
            channel: Channel = "post" if kind is TopicKind.MEASUREPOINT_POST else "resume"
            return self._post_single(owner, params, channel, msg_id, now), ""
        if kind in (TopicKind.MEASUREPOINT_POST_BATCH, TopicKind.MEASUREPOINT_RESUME_BATCH):
            channel = "post" if kind is TopicKind.MEASUREPOINT_POST_BATCH else "resume"
            return self._post_batch(owner, body, channel, msg_id, now), ""
        if kind is TopicKind.EVENT_POST:
            return self._event(owner, parsed.extra or "", params, msg_id, now), ""
        if kind is TopicKind.ATTRIBUTE_UPDATE:
            return self._attribute_update(owner, params, now), ""
        if kind is TopicKind.ATTRIBUTE_QUERY:
            return self._attribute_query(owner, params), ""
        if kind is TopicKind.ATTRIBUTE_DELETE:
            return self._attribute_delete(owner, params), ""
        if kind is TopicKind.TAG_UPDATE:
            return self._tag_update(owner, params, now), ""
        if kind in (TopicKind.TAG_QUERY, TopicKind.TAG_DELETE):
            delete = kind is TopicKind.TAG_DELETE
            return self._tag_query_delete(owner, params, now, delete=delete), ""
        if kind is TopicKind.TSL_TEMPLATE_GET:
            return self._tsl_template(owner), ""
        if kind is TopicKind.INTEGRATION_MEASUREPOINT_POST:
            return self._integration_points(conn, params, msg_id, now), ""
        if kind is TopicKind.INTEGRATION_EVENT_POST:
            return self._integration_events(conn, params, msg_id, now), ""
        if kind is TopicKind.INTEGRATION_ATTRIBUTE_POST:
            return self._integration_attributes(conn, params, now), ""
        raise _Reject(1009, f"{kind.value} is not emulated")

    # --- sub-device login ---------------------------------------------------------------------

    def _gateway_device(self, gateway: Key) -> Device:
        device = self.state.device(gateway)
        product = self.state.product(gateway[0])
        if device is None or product is None or not product.is_gateway:
            raise _Reject(740, "the requester is not a gateway")
        return device

    def _check_login(
        self,
        gateway: Key,
        sub: Key,
        *,
        client_id: str,
        timestamp: str,
        sign_method: str,
        sign: str,
        secure_mode: str | None,
    ) -> tuple[int, str]:
        """(code, reason) of one sub-device login attempt, without changing state."""
        device = self.state.device(sub)
        product = self.state.product(sub[0])
        if device is None or product is None:
            return 705, MESSAGES[705]
        if product.ssl_only:
            return 746, MESSAGES[746]
        if device.gateway != gateway:
            return 740, MESSAGES[740]
        dynamic = str(secure_mode).strip() == "3"
        if dynamic:
            if not product.dynamic_activation or product.secret is None or device.activated:
                return 770, MESSAGES[770]
            secret = product.secret
        elif device.secret is None:
            return 742, "Sign check failed, device is not activated"
        else:
            secret = device.secret
        if not _sign_valid(
            login_sign_params(sub[0], sub[1], client_id, timestamp), secret, sign_method, sign
        ):
            return 742, MESSAGES[742]
        if not device.enabled:
            return 723, MESSAGES[723]
        if not self.state.is_online(sub, via=gateway) and (
            len(self.state.online_sub_devices(gateway)) >= self.state.online_cap
        ):
            return self.online_cap_code, (
                f"gateway has {self.state.online_cap} sub-devices online (the maximum)"
            )
        return 200, ""

    def _complete_login(self, gateway: Key, sub: Key, secure_mode: str | None) -> dict[str, Any]:
        device = self.state.devices[sub]
        data: dict[str, Any] = {
            "assetId": device.asset_id,
            "productKey": sub[0],
            "deviceKey": sub[1],
        }
        if str(secure_mode).strip() == "3":
            data["deviceSecret"] = self.state.activate(sub)
        self.state.set_online(gateway, sub)
        return data

    def _login(self, gateway: Key, params: Any, now: int) -> dict[str, Any]:
        self._gateway_device(gateway)
        if not isinstance(params, dict):
            raise _Reject(1220, "params must be an object")
        pk, dk = _text(params.get("productKey")), _text(params.get("deviceKey"))
        client_id, timestamp = _text(params.get("clientId")), _text(params.get("timestamp"))
        sign_method = _text(params.get("signMethod", params.get("signmethod")))
        sign = _text(params.get("sign"))
        if None in (pk, dk, client_id, timestamp, sign_method, sign):
            raise _Reject(
                1220, "productKey, deviceKey, clientId, timestamp, signMethod, sign required"
            )
        assert pk is not None
        assert dk is not None
        assert client_id is not None
        assert timestamp is not None
        assert sign_method is not None
        assert sign is not None
        secure_mode = _text(params.get("secureMode"))
        sub = (pk, dk)
        code, reason = self._check_login(
            gateway,
            sub,
            client_id=client_id,
            timestamp=timestamp,
            sign_method=sign_method,
            sign=sign,
            secure_mode=secure_mode,
        )
        self.records.logins.append(LoginRecord(gateway, pk, dk, "login", code, now))
        if code != 200:
            raise _Reject(code, "" if reason == MESSAGES.get(code) else reason)
        return self._complete_login(gateway, sub, secure_mode)

    def _login_batch(self, gateway: Key, params: Any, now: int) -> tuple[dict[str, Any], str]:
        empty: dict[str, Any] = {"loginedSubDevices": [], "failedSubDevices": []}
        self._gateway_device(gateway)
        if not isinstance(params, dict):
            raise _Reject(1220, "params must be an object", empty)
        client_id, timestamp = _text(params.get("clientId")), _text(params.get("timestamp"))
        sign_method = _text(params.get("signMethod", params.get("signmethod")))
        entries = params.get("subDevices")
        if client_id is None or timestamp is None or sign_method is None:
            raise _Reject(1220, "clientId, timestamp and signMethod required", empty)
        if not isinstance(entries, list) or not all(
            isinstance(e, dict)
            and _text(e.get("productKey"))
            and _text(e.get("deviceKey"))
            and _text(e.get("sign"))
            for e in entries
        ):
            raise _Reject(1220, "subDevices must be a list of {productKey, deviceKey, sign}", empty)
        logged: list[dict[str, Any]] = []
        failed: list[dict[str, Any]] = []
        first_error: int | None = None
        message = ""
        for entry in entries:
            sub = (str(entry["productKey"]), str(entry["deviceKey"]))
            secure_mode = _text(entry.get("secureMode"))
            code, reason = self._check_login(
                gateway,
                sub,
                client_id=client_id,
                timestamp=timestamp,
                sign_method=sign_method,
                sign=str(entry["sign"]),
                secure_mode=secure_mode,
            )
            self.records.logins.append(LoginRecord(gateway, sub[0], sub[1], "login", code, now))
            if code == 200:
                logged.append(self._complete_login(gateway, sub, secure_mode))
            else:
                failed.append({"productKey": sub[0], "deviceKey": sub[1]})
                first_error = first_error or code
                message += f"{sub[0]}&{sub[1]} has error: {reason};"
        data = {"loginedSubDevices": logged, "failedSubDevices": failed}
        if first_error is not None:
            # Partial success: the lists tell which; the top code is the first error (§3.2).
            raise _Reject(first_error, message, data, verbatim=True)
        return data, ""

    def _logout(self, gateway: Key, params: Any, now: int) -> dict[str, Any]:
        self._gateway_device(gateway)
        if not isinstance(params, dict):
            raise _Reject(1220, "params must be an object")
        pk, dk = _text(params.get("productKey")), _text(params.get("deviceKey"))
        if not pk or not dk:
            raise _Reject(1220, "productKey and deviceKey required")
        sub = (pk, dk)
        device = self.state.device(sub)
        code = 200
        if device is None:
            code = 705
        elif device.gateway != gateway:
            code = 740
        self.records.logins.append(LoginRecord(gateway, pk, dk, "logout", code, now))
        if code != 200:
            raise _Reject(code)
        self.state.set_offline(sub)
        return {"productKey": pk, "deviceKey": dk}

    # --- topology -------------------------------------------------------------------------------

    def _is_gateway(self, key: Key) -> bool:
        product = self.state.product(key[0])
        return product is not None and product.is_gateway and self.state.device(key) is not None

    def _topo_add(self, gateway: Key, params: Any) -> dict[str, Any]:
        if not self._is_gateway(gateway):
            raise _Reject(1255, "the requester is not a gateway")
        if not isinstance(params, list) or not all(isinstance(e, dict) for e in params):
            raise _Reject(1255, "params must be a list of sub-devices")
        to_add: list[Key] = []
        for entry in params:
            pk, dk = _text(entry.get("productKey")), _text(entry.get("deviceKey"))
            client_id, timestamp = _text(entry.get("clientId")), _text(entry.get("timestamp"))
            sign_method = _text(entry.get("signMethod", entry.get("signmethod")))
            sign = _text(entry.get("sign"))
            if not (pk and dk and client_id and timestamp and sign_method and sign):
                raise _Reject(
                    1255,
                    "entry needs productKey, deviceKey, clientId, timestamp, signMethod and sign",
                )
            sub = (pk, dk)
            device = self.state.device(sub)
            if device is None:
                raise _Reject(1255, f"sub-device {pk}/{dk} doesn't exist")
            if self._is_gateway(sub):
                raise _Reject(1255, f"{pk}/{dk} is itself a gateway")
            if device.gateway not in (None, gateway):
                raise _Reject(1255, f"{pk}/{dk} is bound to another gateway")
            if device.secret is None or not _sign_valid(
                login_sign_params(pk, dk, client_id, timestamp), device.secret, sign_method, sign
            ):
                raise _Reject(1255, f"sign check failed for {pk}/{dk}")
            to_add.append(sub)
        new = {k for k in to_add if self.state.devices[k].gateway is None}
        if len(self.state.sub_devices_of(gateway)) + len(new) > self.state.max_topology_size:
            raise _Reject(1255, "gateway's sub-device count at maximum")
        for sub in to_add:
            self.state.devices[sub].gateway = gateway
        return {}

    def _topo_get(self, gateway: Key) -> list[dict[str, str]]:
        if not self._is_gateway(gateway):
            raise _Reject(1200, "the requester is not a gateway")
        return [
            {"productKey": pk, "deviceKey": dk} for pk, dk in self.state.sub_devices_of(gateway)
        ]

    def _topo_delete(self, gateway: Key, params: Any) -> dict[str, Any]:
        if not self._is_gateway(gateway):
            raise _Reject(1256, "the requester is not a gateway")
        if not isinstance(params, list) or not all(isinstance(e, dict) for e in params):
            raise _Reject(1256, "params must be a list of sub-devices")
        to_remove: list[Key] = []
        for entry in params:
            pk, dk = _text(entry.get("productKey")), _text(entry.get("deviceKey"))
            if not pk or not dk:
                raise _Reject(1256, "entry needs productKey and deviceKey")
            sub = (pk, dk)
            device = self.state.device(sub)
            if device is None:
                raise _Reject(1256, f"sub-device {pk}/{dk} doesn't exist")
            if device.gateway != gateway:
                raise _Reject(1256, f"{pk}/{dk} is not a sub-device of this gateway")
            if self.state.is_online(sub):
                raise _Reject(1256, f"sub-device {pk}/{dk} is online; log it out first")
            to_remove.append(sub)
        for sub in to_remove:
            self.state.devices[sub].gateway = None
        return {}

    def _register(self, params: Any) -> list[dict[str, str]]:
        if not isinstance(params, list) or not all(isinstance(e, dict) for e in params):
            raise _Reject(1220, "params must be a list")
        results: list[dict[str, str]] = []
        for entry in params:
            pk, dk = _text(entry.get("productKey")), _text(entry.get("deviceKey"))
            if not pk or not dk or self.state.product(pk) is None:
                raise _Reject(1220, "entry needs a known productKey and a deviceKey")
            if self.state.device((pk, dk)) is not None:
                raise _Reject(702, f"{pk}/{dk}")
        for entry in params:
            key = (str(entry["productKey"]), str(entry["deviceKey"]))
            device = Device(key[0], key[1], None, True, default_asset_id(key))
            # The registration's own attributes are the device's first ones (§3.4).
            attributes = entry.get("deviceAttributes")
            if isinstance(attributes, dict):
                device.attributes.update(attributes)
            self.state.devices[key] = device
            secret = self.state.activate(key)
            results.append(
                {
                    "assetId": device.asset_id,
                    "productKey": key[0],
                    "deviceKey": key[1],
                    "deviceSecret": secret,
                }
            )
        return results

    # --- measurepoints ------------------------------------------------------------------------

    def _point_time(self, value: Any, now: int, code: int) -> int:
        if value is None:
            return now  # server time when the device gives none
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Reject(code, f"time {value!r} is not epoch milliseconds")
        return value

    def _post_single(
        self, device: Key, params: Any, channel: Channel, msg_id: Any, now: int
    ) -> dict[str, Any]:
        if not isinstance(params, dict) or not isinstance(params.get("measurepoints"), dict):
            raise _Reject(1206, "params must be {measurepoints: {...}, time}")
        at = self._point_time(params.get("time"), now, 1206)
        check = check_measurepoints(self.state.model_of(device), params["measurepoints"])
        if check.errors:
            raise _Reject(1204, "; ".join(check.errors))
        self._store(device, check.valid, at, channel=channel, msg_id=msg_id, now=now)
        return {}

    def _post_batch(
        self, gateway: Key, body: dict[str, Any], channel: Channel, msg_id: Any, now: int
    ) -> dict[str, Any]:
        params = body.get("params")
        allow_offline = _flag(body.get("allowOfflineSubDevice"))
        skip_invalid = _flag(body.get("skipInvalidMeasurepoints"))
        if not isinstance(params, list):
            raise _Reject(1206, "params must be a list of records")
        records: list[tuple[Key, dict[str, Any], int]] = []
        for index, entry in enumerate(params):
            if not isinstance(entry, dict) or not isinstance(entry.get("measurepoints"), dict):
                raise _Reject(1206, f"record {index} needs a measurepoints object")
            pk, dk = entry.get("productKey"), entry.get("deviceKey")
            if pk in (None, "") and dk in (None, ""):
                device = gateway  # no keys: the device of the topic (§3.5.2)
            elif isinstance(pk, str) and pk and isinstance(dk, str) and dk:
                device = (pk, dk)
            else:
                raise _Reject(1206, f"record {index}: productKey and deviceKey go together")
            at = self._point_time(entry.get("time"), now, 1206)
            records.append((device, entry["measurepoints"], at))
        for device, _points, _at in records:
            if device == gateway:
                continue
            known = self.state.device(device)
            if known is None or known.gateway != gateway or not known.enabled:
                raise _Reject(1212, f"{device[0]}/{device[1]} is not a sub-device of this gateway")
            if not allow_offline and not self.state.is_online(device, via=gateway):
                raise _Reject(1212, f"sub-device {device[0]}/{device[1]} is offline")
        tally = self.records.tally
        if tally is not None and tally.trust_values:
            for device, points, at in records:
                tally.add(device, len(points), at, channel, now)
            return {}
        accepted = []
        errors: list[str] = []
        for device, points, at in records:
            check = check_measurepoints(self.state.model_of(device), points)
            errors.extend(f"{device[0]}/{device[1]}: {e}" for e in check.errors)
            accepted.append((device, check.valid, at))
        if errors and not skip_invalid:
            raise _Reject(1204, "; ".join(errors))
        for device, valid, at in accepted:
            self._store(device, valid, at, channel=channel, msg_id=msg_id, now=now)
        return {}

    def _store(
        self, device: Key, valid: list[Any], at: int, *, channel: Channel, msg_id: Any, now: int
    ) -> None:
        if self.records.tally is not None:
            self.records.tally.add(device, len(valid), at, channel, now)
            return
        mid = None if msg_id is None else str(msg_id)
        self.records.points.extend(
            PointRecord(device[0], device[1], v.point, v.value, v.quality, at, channel, now, mid)
            for v in valid
        )

    # --- events, attributes, tags, model --------------------------------------------------------

    def _event(
        self, device: Key, event_id: str, params: Any, msg_id: Any, now: int
    ) -> dict[str, Any]:
        if not isinstance(params, dict) or not isinstance(params.get("events"), dict):
            raise _Reject(1220, "params must be {events: {...}, time}")
        problem = event_problem(self.state.model_of(device), event_id, params["events"])
        if problem is not None:
            raise _Reject(1204, problem)
        at = self._point_time(params.get("time"), now, 1220)
        self.records.events.append(
            EventRecord(
                device[0],
                device[1],
                event_id,
                dict(params["events"]),
                at,
                now,
                None if msg_id is None else str(msg_id),
            )
        )
        return {}

    def _attribute_update(self, device: Key, params: Any, now: int) -> dict[str, Any]:
        if not isinstance(params, dict) or not isinstance(params.get("attributes"), dict):
            raise _Reject(1207, "params must be {attributes: {...}}")
        attributes: dict[str, Any] = params["attributes"]
        if len(attributes) > 200:
            raise _Reject(1207, "at most 200 attributes per request")
        allowed = self.state.model_of(device).attributes
        if allowed is not None and set(attributes) - set(allowed):
            raise _Reject(1204, f"unknown attributes {sorted(set(attributes) - set(allowed))}")
        self.state.devices[device].attributes.update(attributes)
        self.records.attributes.append(AttributeRecord(device[0], device[1], dict(attributes), now))
        return {}

    def _attribute_names(self, params: Any, code: int) -> list[str]:
        names = params.get("attributes") if isinstance(params, dict) else None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise _Reject(code, "params must be {attributes: [names]}")
        return names

    def _attribute_query(self, device: Key, params: Any) -> dict[str, Any]:
        names = self._attribute_names(params, 1208)
        stored = self.state.devices[device].attributes
        return {n: stored[n] for n in (names or stored) if n in stored}

    def _attribute_delete(self, device: Key, params: Any) -> dict[str, Any]:
        stored = self.state.devices[device].attributes
        for name in self._attribute_names(params, 1209):
            stored.pop(name, None)
        return {}

    def _tag_update(self, device: Key, params: Any, now: int) -> dict[str, Any]:
        if not isinstance(params, list) or not all(
            isinstance(t, dict) and isinstance(t.get("tagKey"), str) for t in params
        ):
            raise _Reject(1220, "params must be [{tagKey, tagValue}]")
        tags = self.tags.setdefault(device, {})
        update = {t["tagKey"]: str(t.get("tagValue", "")) for t in params}
        tags.update(update)
        self.records.tags.append(TagRecord(*device, "thing.tag.update", update, now))
        return {}

    def _tag_query_delete(
        self, device: Key, params: Any, now: int, *, delete: bool
    ) -> dict[str, Any]:
        names = params.get("tags") if isinstance(params, dict) else None
        if not isinstance(names, list):
            raise _Reject(1220, "params must be {tags: [keys]}")
        tags = self.tags.setdefault(device, {})
        if delete:
            for name in names:
                tags.pop(name, None)
            removed = dict.fromkeys(map(str, names), "")
            self.records.tags.append(TagRecord(*device, "thing.tag.delete", removed, now))
            return {}
        return {n: tags[n] for n in (names or tags) if n in tags}

    def _tsl_template(self, device: Key) -> dict[str, Any]:
        model = self.state.model_of(device)
        # Entries shaped like the Model Service's ThingModel features (§3.6 #17).
        return {
            "tslAttributeMap": {a: {"identifier": a} for a in model.attributes or []},
            "tslMeasurepointMap": {
                mp: {
                    "identifier": mp,
                    "dataDefinition": {"dataType": spec.type.upper()},
                    "hasQuality": spec.quality,
                }
                for mp, spec in model.measurepoints.items()
            },
            "tslEventMap": {
                ev: {"identifier": ev, "outputData": [{"identifier": p} for p in spec.params]}
                if spec.params is not None
                else {"identifier": ev}
                for ev, spec in model.events.items()
            },
            "tslServiceMap": {s: {"identifier": s} for s in model.services},
        }

    # --- integration channel (mode 4) -----------------------------------------------------------

    def _integration_entries(
        self, conn: Connection, params: Any
    ) -> list[tuple[Key, dict[str, Any]]]:
        if not isinstance(params, list) or not all(
            isinstance(e, dict) and isinstance(e.get("deviceKey"), str) for e in params
        ):
            raise _Reject(1220, "params must be a list of {deviceKey, ...}")
        entries = []
        for entry in params:
            key = (conn.device[0], entry["deviceKey"])
            if self.state.device(key) is None:
                raise _Reject(1257, f"{key[0]}/{key[1]}")
            entries.append((key, entry))
        return entries

    def _integration_points(
        self, conn: Connection, params: Any, msg_id: Any, now: int
    ) -> dict[str, Any]:
        checked = []
        for key, entry in self._integration_entries(conn, params):
            if not isinstance(entry.get("measurepoints"), dict):
                raise _Reject(1220, "entry needs measurepoints")
            check = check_measurepoints(self.state.model_of(key), entry["measurepoints"])
            if check.errors:
                raise _Reject(1204, "; ".join(check.errors))
            checked.append((key, check.valid, self._point_time(entry.get("time"), now, 1220)))
        for key, valid, at in checked:
            # The integration channel carries historical data: stored like a resume.
            self._store(key, valid, at, channel="resume", msg_id=msg_id, now=now)
        return {}

    def _integration_events(
        self, conn: Connection, params: Any, msg_id: Any, now: int
    ) -> dict[str, Any]:
        accepted: list[EventRecord] = []
        for key, entry in self._integration_entries(conn, params):
            events = entry.get("events")
            if not isinstance(events, dict):
                raise _Reject(1220, "entry needs events")
            at = self._point_time(entry.get("time"), now, 1220)
            for event_id, event_params in events.items():
                problem = event_problem(self.state.model_of(key), event_id, event_params)
                if problem is not None:
                    raise _Reject(1204, problem)
                accepted.append(
                    EventRecord(
                        key[0],
                        key[1],
                        event_id,
                        dict(event_params),
                        at,
                        now,
                        None if msg_id is None else str(msg_id),
                        channel="integration",
                    )
                )
        self.records.events.extend(accepted)
        return {}

    def _integration_attributes(self, conn: Connection, params: Any, now: int) -> dict[str, Any]:
        for key, entry in self._integration_entries(conn, params):
            attributes = entry.get("attributes")
            if not isinstance(attributes, dict):
                raise _Reject(1220, "entry needs attributes")
            self.state.devices[key].attributes.update(attributes)
            self.records.attributes.append(AttributeRecord(key[0], key[1], dict(attributes), now))
        return {}
