"""EnOS JSON messages (PROTOCOL.md §2-3): request encoders, reply and command decoders.

Sans-IO: every function takes ids and timestamps as arguments and returns bytes or values.

- Upstream requests are `Request(topic, id, method, payload)`; `payload` is the exact bytes
  to publish (compact JSON, UTF-8, no NaN/Infinity -- EnOS would reject them with 1220).
- `decode_reply` turns a ``*_reply`` payload into `Reply`, tolerating every documented
  ``data`` shape and int-or-numeric-string codes; anything unusable raises
  `MalformedMessage` (the caller logs it and drops it).
- `decode_command` turns a downstream command into `Command`, or raises `CommandError`,
  which carries the id (when it could be read), the reply topic and a device-side error code
  so the caller can still answer with `CommandError.reply_payload()`.

Only what a gateway sends or receives lives here: the cloud's side (decoding upstream
requests, answering them) belongs to the emulator, `gatewayd.sim.emulator.requests`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, NamedTuple

from gatewayd.enos import topics
from gatewayd.enos.codes import ReplyCode
from gatewayd.enos.sign import login_sign_params, sign
from gatewayd.enos.topics import ParsedTopic, TopicKind

#: Envelope ``version`` we send (docs say "1.0"; the cloud does not validate it, §7.10).
PROTOCOL_VERSION = "1.0"

#: Default shared clientId of a batch login (PY/JAVA default).
BATCH_LOGIN_CLIENT_ID = "login.batch"


# --- JSON -----------------------------------------------------------------------------------


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON, as sent on the wire (payload bytes count against 1 MB/s)."""
    try:
        text = json.dumps(obj, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError as exc:  # NaN / Infinity: not JSON, EnOS would answer 1220
        raise ValueError(f"cannot encode EnOS message: {exc} (NaN/Infinity in a value?)") from exc
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        # Lone surrogates (a cloud id like "\\ud800" echoed back) are not UTF-8: escape them.
        return json.dumps(obj, separators=(",", ":"), allow_nan=False).encode("ascii")


# --- common value types ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DeviceRef:
    """A device identified by product key and device key."""

    product_key: str
    device_key: str


@dataclass(frozen=True, slots=True)
class SubDeviceCredentials:
    """What a sub-device login / topo add signs with.

    `secret` is the sub-device's deviceSecret, or its productSecret when `secure_mode` is 3
    (dynamic activation). `secure_mode` is sent as the optional ``secureMode`` field when set.
    """

    product_key: str
    device_key: str
    secret: str
    secure_mode: int | None = None


class MeasurepointRecord(NamedTuple):
    """One device's measurepoints at one instant, the unit of post/resume batches.

    `product_key`/`device_key` None means "the device in the topic" (the gateway itself).
    `time_ms` None lets EnOS use its server time. Values are already shaped (`point_value`).
    """

    product_key: str | None
    device_key: str | None
    time_ms: int | None
    measurepoints: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class IntegrationEventRecord:
    """One device's events in an ``integration.event.post`` (seeds 001/002)."""

    device_key: str
    events: Mapping[str, Mapping[str, Any]]  # eventId -> event parameters
    time_ms: int | None = None


def point_value(value: Any, quality: int | None = None) -> Any:
    """A measurepoint value as EnOS wants it: plain, or ``{"value", "quality"}``.

    Pass `quality` only for points whose model enables the quality indicator (EnOS rejects
    the object form with 1204 otherwise); None gives the plain value.
    """
    if quality is None:
        return value
    return {"value": value, "quality": int(quality)}


# --- requests -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """An upstream request ready to publish: `payload` is the exact bytes."""

    topic: str
    id: str
    method: str
    payload: bytes

    @property
    def reply_topic(self) -> str:
        """Where EnOS answers this request."""
        return topics.reply_topic(self.topic)


def encode_request_payload(
    id: str, method: str, params: Any, *, version: str = PROTOCOL_VERSION, **extra: Any
) -> bytes:
    """The envelope ``{"id","version","method",<extra>...,"params"}`` as compact JSON.

    `extra` holds top-level siblings of ``params`` (the batch flags). Also used by the
    emulator to encode downstream commands.
    """
    body: dict[str, Any] = {"id": id, "version": version, "method": method}
    body.update(extra)
    body["params"] = params
    return dumps(body)


def _request(topic: str, id: str, method: str, params: Any, **extra: Any) -> Request:
    return Request(topic, id, method, encode_request_payload(id, method, params, **extra))


def _login_entry(
    device: SubDeviceCredentials, client_id: str, timestamp: str, sign_method: str
) -> str:
    return sign(
        login_sign_params(device.product_key, device.device_key, client_id, timestamp),
        device.secret,
        sign_method,
    )


def combine_login(
    gw_pk: str,
    gw_dk: str,
    *,
    id: str,
    device: SubDeviceCredentials,
    timestamp: str,
    client_id: str | None = None,
    sign_method: str = "sha256",
    clean_session: bool | None = True,
) -> Request:
    """``combine.login`` of one sub-device (§3.1) on the gateway's topic.

    `client_id` defaults to ``{subPK}{subDK}{timestamp}`` (PY SDK). `clean_session` is sent
    as ``"true"``/``"false"`` (docs: mandatory ``"true"``); None omits it. Not signed.
    """
    if client_id is None:
        client_id = f"{device.product_key}{device.device_key}{timestamp}"
    params: dict[str, Any] = {
        "productKey": device.product_key,
        "deviceKey": device.device_key,
        "clientId": client_id,
        "timestamp": timestamp,
        "signMethod": sign_method,
        "sign": _login_entry(device, client_id, timestamp, sign_method),
    }
    if clean_session is not None:
        params["cleanSession"] = "true" if clean_session else "false"
    if device.secure_mode is not None:
        params["secureMode"] = str(device.secure_mode)
    return _request(topics.combine_login(gw_pk, gw_dk), id, "combine.login", params)


def combine_login_batch(
    gw_pk: str,
    gw_dk: str,
    *,
    id: str,
    devices: Sequence[SubDeviceCredentials],
    timestamp: str,
    client_id: str = BATCH_LOGIN_CLIENT_ID,
    sign_method: str = "sha256",
) -> Request:
    """``combine.login.batch`` (§3.2): shared clientId/timestamp, one sign per sub-device."""
    entries: list[dict[str, str]] = []
    for device in devices:
        entry = {
            "productKey": device.product_key,
            "deviceKey": device.device_key,
            "sign": _login_entry(device, client_id, timestamp, sign_method),
        }
        if device.secure_mode is not None:
            entry["secureMode"] = str(device.secure_mode)
        entries.append(entry)
    params = {
        "clientId": client_id,
        "timestamp": timestamp,
        "signMethod": sign_method,
        "subDevices": entries,
    }
    return _request(topics.combine_login_batch(gw_pk, gw_dk), id, "combine.login.batch", params)


def combine_logout(gw_pk: str, gw_dk: str, *, id: str, device: DeviceRef) -> Request:
    """``combine.logout`` of one sub-device (§3.3)."""
    params = {"productKey": device.product_key, "deviceKey": device.device_key}
    return _request(topics.combine_logout(gw_pk, gw_dk), id, "combine.logout", params)


def topo_add(
    gw_pk: str,
    gw_dk: str,
    *,
    id: str,
    devices: Sequence[SubDeviceCredentials],
    timestamp: str,
    sign_method: str = "sha256",
) -> Request:
    """``thing.topo.add`` (§3.4): each entry signed like a login, clientId ``{pk}.{dk}.{ts}``."""
    entries = []
    for device in devices:
        client_id = f"{device.product_key}.{device.device_key}.{timestamp}"
        entries.append(
            {
                "productKey": device.product_key,
                "deviceKey": device.device_key,
                "clientId": client_id,
                "timestamp": timestamp,
                "signMethod": sign_method,
                "sign": _login_entry(device, client_id, timestamp, sign_method),
            }
        )
    return _request(topics.topo_add(gw_pk, gw_dk), id, "thing.topo.add", entries)


def topo_get(gw_pk: str, gw_dk: str, *, id: str) -> Request:
    """``thing.topo.get`` (§3.4): params ``{}``; the reply data lists the sub-devices."""
    return _request(topics.topo_get(gw_pk, gw_dk), id, "thing.topo.get", {})


def topo_delete(gw_pk: str, gw_dk: str, *, id: str, devices: Sequence[DeviceRef]) -> Request:
    """``thing.topo.delete`` (§3.4); EnOS refuses (1256) while a sub-device is online."""
    params = [{"productKey": d.product_key, "deviceKey": d.device_key} for d in devices]
    return _request(topics.topo_delete(gw_pk, gw_dk), id, "thing.topo.delete", params)


def _single_point_params(measurepoints: Mapping[str, Any], time_ms: int | None) -> Any:
    params: dict[str, Any] = {"measurepoints": dict(measurepoints)}
    if time_ms is not None:
        params["time"] = time_ms
    return params


def measurepoint_post(
    pk: str, dk: str, *, id: str, measurepoints: Mapping[str, Any], time_ms: int | None
) -> Request:
    """``thing.measurepoint.post`` (§3.5.1) on the device's own topic (live data)."""
    params = _single_point_params(measurepoints, time_ms)
    return _request(topics.measurepoint_post(pk, dk), id, "thing.measurepoint.post", params)


def measurepoint_resume(
    pk: str, dk: str, *, id: str, measurepoints: Mapping[str, Any], time_ms: int | None
) -> Request:
    """``thing.measurepoint.resume`` (§3.5.3) on the device's own topic (backfill)."""
    params = _single_point_params(measurepoints, time_ms)
    return _request(topics.measurepoint_resume(pk, dk), id, "thing.measurepoint.resume", params)


def record_params(record: MeasurepointRecord) -> dict[str, Any]:
    """One entry of a batch ``params`` array."""
    entry: dict[str, Any] = {}
    if record.product_key is not None:
        entry["productKey"] = record.product_key
    if record.device_key is not None:
        entry["deviceKey"] = record.device_key
    entry["measurepoints"] = dict(record.measurepoints)
    if record.time_ms is not None:
        entry["time"] = record.time_ms
    return entry


def encode_record(record: MeasurepointRecord) -> bytes:
    """The exact bytes `record` occupies inside a batch ``params`` array."""
    return dumps(record_params(record))


def batch_envelope(
    gw_pk: str,
    gw_dk: str,
    *,
    id: str,
    resume: bool,
    allow_offline_sub_device: bool = False,
    skip_invalid_measurepoints: bool = False,
) -> tuple[str, str, bytes, bytes]:
    """(topic, method, head, tail) of a post/resume batch: payload = head + records + tail.

    Records are joined with ``,``; this lets the uplink size messages exactly
    (`gatewayd.uplink.delivery.pack`) while serialising each record once.
    """
    if resume:
        topic = topics.measurepoint_resume_batch(gw_pk, gw_dk)
        method = "thing.measurepoint.resume.batch"
    else:
        topic = topics.measurepoint_post_batch(gw_pk, gw_dk)
        method = "thing.measurepoint.post.batch"
    empty = encode_request_payload(
        id,
        method,
        [],
        allowOfflineSubDevice=allow_offline_sub_device,
        skipInvalidMeasurepoints=skip_invalid_measurepoints,
    )
    # `params` is the last key, so the payload ends with `[]}`: split between the brackets.
    head, tail = empty[:-2], empty[-2:]
    return topic, method, head, tail


def measurepoint_batch(
    gw_pk: str,
    gw_dk: str,
    *,
    id: str,
    records: Sequence[MeasurepointRecord] | Sequence[bytes],
    resume: bool,
    allow_offline_sub_device: bool = False,
    skip_invalid_measurepoints: bool = False,
) -> Request:
    """``thing.measurepoint.post.batch`` or ``.resume.batch`` (§3.5.2/3.5.3) on the gateway topic.

    `records` are `MeasurepointRecord`s or their `encode_record` bytes. No size check here:
    `gatewayd.uplink.delivery.pack` keeps batches under 512 KiB.
    """
    topic, method, head, tail = batch_envelope(
        gw_pk,
        gw_dk,
        id=id,
        resume=resume,
        allow_offline_sub_device=allow_offline_sub_device,
        skip_invalid_measurepoints=skip_invalid_measurepoints,
    )
    parts = [r if isinstance(r, bytes) else encode_record(r) for r in records]
    return Request(topic, id, method, head + b",".join(parts) + tail)


def event_post(
    pk: str,
    dk: str,
    *,
    id: str,
    event_id: str,
    params: Mapping[str, Any],
    time_ms: int | None,
) -> Request:
    """``thing.event.{eventId}.post`` (§3.6, the JAVA/NODE method form)."""
    body: dict[str, Any] = {"events": dict(params)}
    if time_ms is not None:
        body["time"] = time_ms
    topic = topics.event_post(pk, dk, event_id)
    return _request(topic, id, f"thing.event.{event_id}.post", body)


def attribute_update(pk: str, dk: str, *, id: str, attributes: Mapping[str, Any]) -> Request:
    """``thing.attribute.update`` (§3.6; at most 200 attributes per request)."""
    params = {"attributes": dict(attributes)}
    return _request(topics.attribute_update(pk, dk), id, "thing.attribute.update", params)


def attribute_query(pk: str, dk: str, *, id: str, names: Sequence[str] = ()) -> Request:
    """``thing.attribute.query`` (empty `names` = all attributes)."""
    params = {"attributes": list(names)}
    return _request(topics.attribute_query(pk, dk), id, "thing.attribute.query", params)


def attribute_delete(pk: str, dk: str, *, id: str, names: Sequence[str]) -> Request:
    """``thing.attribute.delete``."""
    params = {"attributes": list(names)}
    return _request(topics.attribute_delete(pk, dk), id, "thing.attribute.delete", params)


def device_register(
    gw_pk: str, gw_dk: str, *, id: str, entries: Sequence[Mapping[str, Any]]
) -> Request:
    """``thing.device.register`` (§3.4 #7): params is the list of devices to register."""
    params = [dict(entry) for entry in entries]
    return _request(topics.device_register(gw_pk, gw_dk), id, "thing.device.register", params)


def tsl_template_get(pk: str, dk: str, *, id: str) -> Request:
    """``thing.tsltemplate.get`` (§3.6 #17): params ``{}``; data holds the product's model."""
    return _request(topics.tsl_template_get(pk, dk), id, "thing.tsltemplate.get", {})


def tag_update(pk: str, dk: str, *, id: str, tags: Mapping[str, str]) -> Request:
    """``thing.tag.update`` (§3.6 #16): params ``[{"tagKey": k, "tagValue": v}]``."""
    params = [{"tagKey": key, "tagValue": value} for key, value in tags.items()]
    return _request(topics.tag_update(pk, dk), id, "thing.tag.update", params)


def tag_delete(pk: str, dk: str, *, id: str, keys: Sequence[str]) -> Request:
    """``thing.tag.delete`` (§3.6 #16): params ``{"tags": [keys]}``."""
    return _request(topics.tag_delete(pk, dk), id, "thing.tag.delete", {"tags": list(keys)})


def integration_event_post(
    pk: str, *, id: str, records: Sequence[IntegrationEventRecord]
) -> Request:
    """``integration.event.post`` (§3.8, seeds 001/002) on the SDK topic (leading slash)."""
    params = []
    for record in records:
        entry: dict[str, Any] = {
            "deviceKey": record.device_key,
            "events": {k: dict(v) for k, v in record.events.items()},
        }
        if record.time_ms is not None:
            entry["time"] = record.time_ms
        params.append(entry)
    return _request(topics.integration_event_post(pk), id, "integration.event.post", params)


# --- decoding: shared -----------------------------------------------------------------------


class MalformedMessage(ValueError):
    """A payload that cannot be used. `reason` says why; `id` is set if it could be read."""

    def __init__(self, reason: str, *, id: str | None = None) -> None:
        self.reason = reason
        self.id = id
        super().__init__(reason if id is None else f"{reason} (id {id!r})")


def load_object(payload: bytes | str) -> dict[str, Any]:
    """The JSON object `payload` holds; `MalformedMessage` for anything else."""
    if not payload:
        raise MalformedMessage("payload is empty")
    try:
        obj = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise MalformedMessage(f"payload is not valid JSON: {exc}") from None
    except RecursionError:  # e.g. "[[[[…" thousands deep: bad input, not a crash
        raise MalformedMessage("payload nests too deeply to be a command or reply") from None
    if not isinstance(obj, dict):
        raise MalformedMessage(f"payload is a JSON {type(obj).__name__}, not an object")
    return obj


#: A command id exactly as the cloud sent it: a JSON string or integer (§2.1: older docs
#: type it Long). Replies echo it with the same JSON type (§2.2), so it is kept as sent.
CommandId = str | int


def _raw_id(obj: Mapping[str, Any]) -> CommandId | None:
    """The id with its JSON type: a non-empty string or an integer (not a boolean)."""
    value = obj.get("id")
    if isinstance(value, str) and value:
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    return None


def message_id(obj: Mapping[str, Any]) -> str | None:
    """The id as a string: EnOS ids are strings, older docs typed them Long."""
    value = _raw_id(obj)
    return None if value is None else str(value)


# --- replies --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reply:
    """A decoded ``*_reply``. `data` is whatever JSON came (None when absent)."""

    id: str
    code: int
    message: str = ""
    data: Any = None

    @property
    def ok(self) -> bool:
        """True for code 200."""
        return self.code == ReplyCode.SUCCESS


def _reply_code(value: Any, id: str) -> int:
    if isinstance(value, bool):
        raise MalformedMessage(f"reply code {value!r} is a boolean", id=id)
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        if text.lstrip("-").isdigit() and text.isascii():
            return int(text)
    raise MalformedMessage(f"reply code {value!r} is not an integer", id=id)


def decode_reply(payload: bytes | str) -> Reply:
    """Decode a reply (§2.2). Raises `MalformedMessage` if there is no usable id or code."""
    obj = load_object(payload)
    id = message_id(obj)
    if id is None:
        raise MalformedMessage(f"reply has no usable id: {obj.get('id')!r}")
    if "code" not in obj:
        raise MalformedMessage("reply has no code", id=id)
    code = _reply_code(obj["code"], id)
    message = obj.get("message")
    if message is None:
        message = ""
    elif not isinstance(message, str):
        message = json.dumps(message, ensure_ascii=False)
    return Reply(id=id, code=code, message=message, data=obj.get("data"))


def encode_reply(id: CommandId, code: int, data: Any = None, message: str = "") -> bytes:
    """A reply payload ``{"id","code","message","data"}``; `data` None is sent as ``{}``.

    `id` keeps its JSON type: a command sent with ``"id": 42`` is answered ``"id": 42``.
    """
    return dumps(
        {"id": id, "code": int(code), "message": message, "data": {} if data is None else data}
    )


@dataclass(frozen=True, slots=True)
class LoggedInDevice:
    """A sub-device the cloud reports as logged in (`device_secret` after activation)."""

    product_key: str
    device_key: str
    asset_id: str | None = None
    device_secret: str | None = None


def _device_ref(entry: Any) -> DeviceRef | None:
    if not isinstance(entry, dict):
        return None
    pk, dk = entry.get("productKey"), entry.get("deviceKey")
    if isinstance(pk, str) and isinstance(dk, str):
        return DeviceRef(pk, dk)
    return None


def _logged_in(entry: Any) -> LoggedInDevice | None:
    ref = _device_ref(entry)
    if ref is None:
        return None
    asset, secret = entry.get("assetId"), entry.get("deviceSecret")
    return LoggedInDevice(
        ref.product_key,
        ref.device_key,
        asset_id=asset if isinstance(asset, str) else None,
        device_secret=secret if isinstance(secret, str) and secret else None,
    )


def login_reply_device(reply: Reply) -> LoggedInDevice | None:
    """The device a ``combine.login`` reply describes (2.1+ docs), or None (older ``{}``)."""
    return _logged_in(reply.data)


@dataclass(frozen=True, slots=True)
class LoginBatchResult:
    """A ``combine.login.batch`` reply split into per-device outcomes (§3.2)."""

    code: int
    message: str
    logged_in: tuple[LoggedInDevice, ...]
    failed: tuple[DeviceRef, ...]

    @property
    def whole_request_failed(self) -> bool:
        """Non-200 with both lists empty: nothing was processed (e.g. 1220)."""
        return self.code != ReplyCode.SUCCESS and not self.logged_in and not self.failed


def login_batch_result(reply: Reply) -> LoginBatchResult:
    """Per-device outcome of a batch login; unusable list entries are skipped."""
    data = reply.data if isinstance(reply.data, dict) else {}
    logged = data.get("loginedSubDevices")
    failed = data.get("failedSubDevices")
    logged_in = tuple(
        d for d in map(_logged_in, logged if isinstance(logged, list) else []) if d is not None
    )
    failed_refs = tuple(
        d for d in map(_device_ref, failed if isinstance(failed, list) else []) if d is not None
    )
    return LoginBatchResult(reply.code, reply.message, logged_in, failed_refs)


# --- downstream commands --------------------------------------------------------------------


class CommandKind(StrEnum):
    """The cloud commands a gateway handles."""

    MEASUREPOINT_SET = "measurepoint_set"
    MEASUREPOINT_GET = "measurepoint_get"
    SERVICE = "service"
    COMBINE_ENABLE = "combine_enable"
    COMBINE_DISABLE = "combine_disable"
    COMBINE_DELETE = "combine_delete"
    ACTIVATE_INFO = "activate_info"


_COMMAND_KINDS: Mapping[TopicKind, CommandKind] = {
    TopicKind.MEASUREPOINT_SET: CommandKind.MEASUREPOINT_SET,
    TopicKind.MEASUREPOINT_GET: CommandKind.MEASUREPOINT_GET,
    TopicKind.SERVICE: CommandKind.SERVICE,
    TopicKind.COMBINE_ENABLE: CommandKind.COMBINE_ENABLE,
    TopicKind.COMBINE_DISABLE: CommandKind.COMBINE_DISABLE,
    TopicKind.COMBINE_DELETE: CommandKind.COMBINE_DELETE,
    TopicKind.ACTIVATE_INFO: CommandKind.ACTIVATE_INFO,
}

#: Documented downstream topics we do not act on: answered 1101 like the SDKs do.
_UNHANDLED_COMMAND_TOPICS = frozenset(
    {
        TopicKind.THING_ENABLE,
        TopicKind.THING_DISABLE,
        TopicKind.THING_DELETE,
        TopicKind.MODEL_DOWN_RAW,
    }
)


@dataclass(frozen=True, slots=True)
class Activation:
    """``thing.activate.info`` params: the secret to use from now on (secure mode 2)."""

    product_key: str
    device_key: str
    device_secret: str
    asset_id: str | None = None


@dataclass(frozen=True, slots=True)
class Command:
    """A validated downstream command.

    `product_key`/`device_key` are the topic's keys: the target device for set/get/service
    (gateway or a logged-in sub-device), the gateway for combine.*. `params` by kind:
    measurepoint_set -> dict point->value; measurepoint_get -> list of point names;
    service -> dict of input parameters (``{}`` if absent); combine_* -> the raw list (use
    `devices`); activate_info -> the raw dict (use `activation`).
    """

    kind: CommandKind
    id: CommandId  # as sent: a string or an integer, echoed with the same JSON type
    method: str
    params: Any
    product_key: str
    device_key: str
    topic: str
    service_id: str | None = None
    devices: tuple[DeviceRef, ...] = ()
    activation: Activation | None = None

    @property
    def reply_topic(self) -> str:
        """Where the answer goes."""
        return topics.reply_topic(self.topic)

    def reply(self, code: int = ReplyCode.SUCCESS, data: Any = None, message: str = "") -> bytes:
        """The reply payload for this command."""
        return encode_reply(self.id, code, data, message)


class CommandError(MalformedMessage):
    """A downstream message that is not a valid command.

    `code` is the device-side error code to answer with; `reply_topic` is None when answering
    makes no sense (unknown topic, or the message is itself a reply). Use `reply_payload()`
    (None when there is no id or no reply topic) to answer so the cloud is not left waiting.
    """

    def __init__(
        self,
        reason: str,
        *,
        code: int,
        topic: str,
        id: CommandId | None = None,
        reply_topic: str | None = None,
    ) -> None:
        super().__init__(reason, id=None if id is None else str(id))
        self.code = code
        self.topic = topic
        self.reply_topic = reply_topic
        self.reply_id = id  # with its JSON type, for the reply

    def reply_payload(self) -> bytes | None:
        """The error reply (the id with its JSON type), or None if it cannot be addressed."""
        if self.reply_id is None or self.reply_topic is None:
            return None
        return encode_reply(self.reply_id, self.code, None, self.reason)


def decode_command(topic: str, payload: bytes | str) -> Command:
    """Validate a downstream command (§3.7, §1.6). Raises `CommandError` with a reason."""
    parsed = topics.parse_topic(topic)
    replyable = not parsed.is_reply and parsed.kind is not TopicKind.UNKNOWN
    reply_to = topics.reply_topic(topic) if replyable else None

    def fail(reason: str, code: int, id: CommandId | None = None) -> CommandError:
        return CommandError(reason, code=code, topic=topic, id=id, reply_topic=reply_to)

    try:
        obj = load_object(payload)
    except MalformedMessage as exc:
        raise fail(exc.reason, ReplyCode.COMMAND_MALFORMED) from None
    id = _raw_id(obj)

    kind = _COMMAND_KINDS.get(parsed.kind) if not parsed.is_reply else None
    if kind is None:
        if parsed.kind in _UNHANDLED_COMMAND_TOPICS and not parsed.is_reply:
            raise fail(
                f"no handler for {parsed.kind.value} commands",
                ReplyCode.COMMAND_HANDLER_NOT_REGISTERED,
                id,
            )
        raise fail(
            f"{topic!r} is not a command topic", ReplyCode.COMMAND_HANDLER_NOT_REGISTERED, id
        )
    if id is None:
        raise fail(f"command has no usable id: {obj.get('id')!r}", ReplyCode.COMMAND_MALFORMED)

    expected = parsed.method or ""  # every command kind has a method
    method = obj.get("method", expected)
    if not isinstance(method, str):
        raise fail(f"command method {method!r} is not a string", ReplyCode.COMMAND_MALFORMED, id)
    if method != expected:
        raise fail(
            f"method {method!r} does not match topic (expected {expected!r})",
            ReplyCode.COMMAND_METHOD_MISMATCH,
            id,
        )
    return _command(
        kind, parsed=parsed, topic=topic, id=id, method=method, params=obj.get("params"), fail=fail
    )


def _command(
    kind: CommandKind,
    *,
    parsed: ParsedTopic,
    topic: str,
    id: CommandId,
    method: str,
    params: Any,
    fail: Callable[[str, int, CommandId | None], CommandError],
) -> Command:
    # Every command topic pattern captures both keys.
    pk, dk = parsed.product_key or "", parsed.device_key or ""

    def make(
        params: Any,
        *,
        service_id: str | None = None,
        devices: tuple[DeviceRef, ...] = (),
        activation: Activation | None = None,
    ) -> Command:
        return Command(kind, id, method, params, pk, dk, topic, service_id, devices, activation)

    def bad(expected: str) -> CommandError:
        return fail(
            f"{method} params must be {expected}, got {_json_type(params)}",
            ReplyCode.COMMAND_INVALID_PARAMS,
            id,
        )

    if kind is CommandKind.MEASUREPOINT_SET:
        if not isinstance(params, dict) or not params:
            raise bad("a non-empty object of measurepoint values")
        return make(params)
    if kind is CommandKind.MEASUREPOINT_GET:
        if not isinstance(params, list) or not all(isinstance(p, str) for p in params):
            raise bad("an array of measurepoint ids")
        return make(params)
    if kind is CommandKind.SERVICE:
        if params is None:
            params = {}
        if not isinstance(params, dict):
            raise bad("an object of service input parameters")
        return make(params, service_id=parsed.extra)
    if kind is CommandKind.ACTIVATE_INFO:
        if not isinstance(params, dict):
            raise bad("an object with productKey, deviceKey, deviceSecret")
        ref, secret, asset = _device_ref(params), params.get("deviceSecret"), params.get("assetId")
        if ref is None or not isinstance(secret, str) or not secret:
            raise bad("an object with productKey, deviceKey, deviceSecret")
        activation = Activation(
            ref.product_key,
            ref.device_key,
            secret,
            asset_id=asset if isinstance(asset, str) else None,
        )
        return make(params, activation=activation)
    # combine.enable / disable / delete
    if not isinstance(params, list):
        raise bad("an array of {productKey, deviceKey}")
    refs = [_device_ref(entry) for entry in params]
    devices = tuple(r for r in refs if r is not None)
    if len(devices) != len(refs):
        raise bad("an array of {productKey, deviceKey}")
    return make(params, devices=devices)


def _json_type(value: Any) -> str:
    if value is None:
        return "null/missing"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, dict):
        return "empty object" if not value else "object"
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    return "number"
