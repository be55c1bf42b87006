"""The HTTP side of the emulated EnOS cloud: APIM tokens, event uploads with files, files.

Written from the protocol (summarised in gatewayd/integration/PROTOCOL.md §2-§4) and
seeds 000/003, not from gatewayd's client: it parses upload bodies with the stdlib's
general-purpose MIME parser (`email`), checks the sha256 token rule itself, and so can
catch the client's mistakes instead of sharing them.

`IntegrationCloud.handle(request)` is pure apart from the clock and its own lock-guarded
state; `http_server.IntegrationHttpServer` serves it on a loopback port. Fault injection
(`faults`): answer the next N calls with a 5xx, delay them, or expire every token now.
"""

from __future__ import annotations

import email.policy
import hashlib
import itertools
import json
import math
import mimetypes
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.parser import BytesParser
from typing import Any
from urllib.parse import parse_qs, urlsplit

from gatewayd.sim.emulator.config import EmulatorConfig, ThingModel
from gatewayd.sim.emulator.state import CloudState, default_asset_id

TOKEN_PATH = "/apim-token-service/v2.0/token/get"  # noqa: S105 (a URL path)
INTEGRATION_PATH = "/connect-service/v2.1/integration"
FILES_PATH = "/connect-service/v2.1/files"
TOKEN_HEADER = "apim-accesstoken"  # noqa: S105 (a header name)
MAX_MESSAGE_BYTES = 512 * 1024
CHUNK = 64 * 1024

# Token service statuses (APIM "Get Access Token").
STATUS_REPEATED_ENCRYPTION = 1001
STATUS_UNKNOWN_APP_KEY = 1002
STATUS_BAD_ENCRYPTION = 1003
# Upload reply codes.
CODE_BAD_REQUEST = 400
CODE_MODEL_INVALID = 1204
CODE_DEVICE_NOT_FOUND = 1257


@dataclass(frozen=True, slots=True)
class Asset:
    """A device the service account may write to, with the files-typed params of its events."""

    product_key: str
    device_key: str
    asset_id: str
    #: event id → names of its params that are file-typed in the model; other params: any.
    events: dict[str, frozenset[str]]


@dataclass(frozen=True, slots=True)
class IntegrationSpec:
    """The emulated OU: its id, service accounts (access key → secret key) and assets."""

    org_id: str
    accounts: dict[str, str]
    assets: tuple[Asset, ...]
    token_lifetime: float = 7200.0
    #: product key → its events' file-typed params: for devices registered later.
    product_events: dict[str, dict[str, frozenset[str]]] = field(default_factory=dict)

    @classmethod
    def from_emulator_config(cls, config: EmulatorConfig) -> IntegrationSpec:
        """The HTTP side of an `emulator.yaml`: its `integration` section and every device."""
        if config.integration is None:
            raise ValueError("the emulator config has no 'integration' section")
        product_events: dict[str, dict[str, frozenset[str]]] = {}
        for product in config.products:
            model = config.models[product.model] if product.model else ThingModel()
            product_events[product.product_key] = {
                eid: frozenset(spec.files) for eid, spec in model.events.items()
            }
        assets = []
        for device in config.devices:
            key = (device.product_key, device.device_key)
            assets.append(
                Asset(
                    device.product_key,
                    device.device_key,
                    device.asset_id or default_asset_id(key),
                    product_events[device.product_key],
                )
            )
        return cls(
            config.integration.org_id,
            dict(config.integration.accounts),
            tuple(assets),
            config.integration.token_lifetime,
            product_events,
        )


@dataclass(frozen=True, slots=True)
class HttpRequest:
    """What the server read: method, target (path + query), headers (lower-case), body."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes


@dataclass(slots=True)
class HttpResponse:
    """What to answer: status, headers and a body (bytes, or chunks for a download)."""

    status: int
    headers: dict[str, str]
    body: bytes | Iterator[bytes]
    delay: float = 0.0  # fault injection: wait this long before answering


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A file EnOS keeps after an accepted upload."""

    uri: str
    asset: Asset
    feature_id: str
    original_filename: str
    data: bytes
    md5: str | None = None  # as the upload's `files` map declared it (checked against data)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """An accepted event: file values are replaced by their `enos-connect://` URIs."""

    asset: Asset
    time_ms: int
    event_id: str
    params: dict[str, Any]
    realtime: bool


@dataclass(slots=True)
class HttpFaults:
    """Fault injection for the next calls of an endpoint (or of any), consumed in order.

    Endpoints: "token", "postEvent", "download", "delete"; None matches every call.
    """

    _statuses: list[tuple[str | None, int]] = field(default_factory=list)
    _delays: list[tuple[str | None, float]] = field(default_factory=list)

    def fail_next(self, n: int = 1, status: int = 503, endpoint: str | None = None) -> None:
        """Answer the next `n` calls with HTTP `status`, without applying them."""
        self._statuses.extend([(endpoint, status)] * n)

    def delay_next(self, n: int, seconds: float, endpoint: str | None = None) -> None:
        """Answer the next `n` calls `seconds` late (after applying them)."""
        self._delays.extend([(endpoint, seconds)] * n)

    def take(self, endpoint: str) -> tuple[int | None, float]:
        """The injected status (or None) and delay for one call to `endpoint`."""
        return _pop(self._statuses, endpoint), _pop(self._delays, endpoint) or 0.0


def _pop(queue: list[tuple[str | None, Any]], endpoint: str) -> Any:
    for index, (target, value) in enumerate(queue):
        if target in (None, endpoint):
            del queue[index]
            return value
    return None


@dataclass(slots=True)
class _Token:
    account: str
    expires_at: float


class _Reject(Exception):
    def __init__(self, status: int, code: int, msg: str) -> None:
        self.status, self.code, self.msg = status, code, msg
        super().__init__(msg)


class IntegrationCloud:
    """Tokens, uploads, stored files and counters of the emulated integration channel."""

    def __init__(
        self,
        spec: IntegrationSpec,
        clock: Callable[[], float] = time.monotonic,
        *,
        state: CloudState | None = None,
    ):
        """`state`: the MQTT side's devices, so that a device a gateway registered there
        (`thing.device.register`) is an asset here too, with its product's file params."""
        self.spec = spec
        self._state = state
        self.faults = HttpFaults()
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[str, _Token] = {}
        self._used_encryptions: set[str] = set()
        self._by_keys = {(a.product_key, a.device_key): a for a in spec.assets}
        self._by_id = {a.asset_id: a for a in spec.assets}
        self._file_ids = itertools.count(1)
        self.files: dict[str, StoredFile] = {}
        self.events: list[StoredEvent] = []
        #: Calls per endpoint ("token", "postEvent", "download", "delete") and rejections.
        self.calls: dict[str, int] = {}
        self.rejections: list[tuple[int, str]] = []
        self.tokens_issued = 0

    # ------------------------------------------------------------------ control

    def expire_tokens(self) -> None:
        """Every token issued so far expires now (the next call with one gets 401)."""
        with self._lock:
            for token in self._tokens.values():
                token.expires_at = -math.inf

    # ------------------------------------------------------------------ dispatch

    def handle(self, request: HttpRequest) -> HttpResponse:
        """The answer to one request (thread-safe)."""
        url = urlsplit(request.target)
        query = {k: v[-1] for k, v in parse_qs(url.query, keep_blank_values=True).items()}
        endpoint = query.get("action", "token") if url.path != TOKEN_PATH else "token"
        with self._lock:
            self.calls[endpoint] = self.calls.get(endpoint, 0) + 1
            status, delay = self.faults.take(endpoint)
        if status is not None:
            return _json(status, {"code": status, "msg": "injected fault"}, delay)
        try:
            if url.path == TOKEN_PATH and request.method == "POST":
                response = self._token(request.body)
            elif url.path == INTEGRATION_PATH and request.method == "POST":
                self._authorise(request, query)
                response = self._upload(request, query)
            elif url.path == FILES_PATH and query.get("action") == "download":
                self._authorise(request, query)
                response = self._download(query)
            elif url.path == FILES_PATH and query.get("action") == "delete":
                self._authorise(request, query)
                response = self._delete(query)
            else:
                response = _json(404, {"code": 404, "msg": f"no such endpoint: {url.path}"})
        except _Reject as exc:
            with self._lock:
                self.rejections.append((exc.code, exc.msg))
            response = _json(exc.status, {"code": exc.code, "msg": exc.msg, "data": None})
        response.delay = delay
        return response

    # ------------------------------------------------------------------ token service

    def _token(self, body: bytes) -> HttpResponse:
        try:
            asked = json.loads(body)
            app_key, encryption, stamp = asked["appKey"], asked["encryption"], asked["timestamp"]
        except (ValueError, KeyError, TypeError):
            return _token_reply(400, "request must be JSON with appKey, encryption, timestamp")
        secret = self.spec.accounts.get(app_key) if isinstance(app_key, str) else None
        if secret is None:
            return _token_reply(STATUS_UNKNOWN_APP_KEY, "appKey not found")
        expected = hashlib.sha256(f"{app_key}{stamp}{secret}".encode()).hexdigest()
        if not isinstance(encryption, str) or encryption != expected:
            return _token_reply(STATUS_BAD_ENCRYPTION, "encryption is invalid")
        now = self._clock()
        with self._lock:
            if encryption in self._used_encryptions:
                return _token_reply(STATUS_REPEATED_ENCRYPTION, "repeated encryption")
            self._used_encryptions.add(encryption)
            for value, token in self._tokens.items():
                if token.account == app_key and token.expires_at > now:
                    left = token.expires_at - now  # asked again before expiry: the same token
                    return _token_reply(0, "SUCCESS", value, math.ceil(left))
            value = uuid.uuid4().hex
            self._tokens[value] = _Token(app_key, now + self.spec.token_lifetime)
            self.tokens_issued += 1
        return _token_reply(0, "SUCCESS", value, math.ceil(self.spec.token_lifetime))

    def _authorise(self, request: HttpRequest, query: dict[str, str]) -> None:
        value = request.headers.get(TOKEN_HEADER)
        with self._lock:
            token = self._tokens.get(value) if value else None
            if token is None or token.expires_at <= self._clock():
                raise _Reject(401, 401, "access token missing, unknown or expired")
        if query.get("orgId") != self.spec.org_id:
            raise _Reject(
                403, 403, f"service account not authorised for orgId {query.get('orgId')!r}"
            )

    # ------------------------------------------------------------------ upload

    def _upload(self, request: HttpRequest, query: dict[str, str]) -> HttpResponse:
        if query.get("action") != "postEvent":
            raise _Reject(400, CODE_BAD_REQUEST, f"action {query.get('action')!r} not emulated")
        message, parts = _parse_multipart(request)
        if message.get("method") != "integration.event.post":
            raise _Reject(400, CODE_BAD_REQUEST, f"method {message.get('method')!r} != postEvent")
        for key in ("id", "version", "params", "files"):
            if key not in message:
                raise _Reject(400, CODE_BAD_REQUEST, f"request message has no {key!r}")
        realtime = message.get("isRealtimeIntegration", True)
        if not isinstance(realtime, bool):
            raise _Reject(400, CODE_BAD_REQUEST, "isRealtimeIntegration must be a boolean")
        files = message["files"]
        if not isinstance(files, dict) or set(files) != set(parts):
            raise _Reject(
                400,
                CODE_BAD_REQUEST,
                f"files map {sorted(files) if isinstance(files, dict) else files!r} "
                f"does not match the file parts {sorted(parts)}",
            )
        for name, entry in files.items():
            self._check_file_entry(name, entry, parts[name])
        events = self._check_params(message["params"], files)
        stored_uris: dict[str, str] = {}
        with self._lock:
            for name, entry in files.items():
                asset = self._asset_of(entry)
                ext = str(entry.get("fileExt", ""))
                uri = f"enos-connect://{self.spec.org_id}/{asset.asset_id}/{next(self._file_ids)}{ext}"
                self.files[uri] = StoredFile(
                    uri,
                    asset,
                    entry["featureId"],
                    str(entry.get("originalFilename") or uuid.uuid4().hex + ext),
                    parts[name],
                    entry.get("md5"),
                )
                stored_uris[name] = uri
            for asset, time_ms, event_id, params in events:
                resolved = {
                    k: stored_uris[v[len("local://") :]] if _is_local(v) else v
                    for k, v in params.items()
                }
                self.events.append(StoredEvent(asset, time_ms, event_id, resolved, realtime))
        return _json(200, {"code": 200, "msg": "OK", "requestId": str(uuid.uuid4()), "data": {}})

    def _asset_of(self, entry: dict[str, Any]) -> Asset:
        if "assetId" in entry:
            asset = self._by_id.get(entry["assetId"]) or self._registered(asset_id=entry["assetId"])
        else:
            keys = (str(entry.get("productKey")), str(entry.get("deviceKey")))
            asset = self._by_keys.get(keys) or self._registered(keys=keys)
        if asset is None:
            raise _Reject(200, CODE_DEVICE_NOT_FOUND, f"asset not found: {entry}")
        return asset

    def _registered(
        self, *, keys: tuple[str, str] | None = None, asset_id: object = None
    ) -> Asset | None:
        """A device the MQTT side knows but the spec does not (registered since the start).

        Runs on a server thread while the event loop may change the state: one dict
        lookup, or one copy of its values, each atomic under the GIL."""
        if self._state is None:
            return None
        if keys is not None:
            device = self._state.device(keys)
        else:
            device = next((d for d in list(self._state.devices.values())
                           if d.asset_id == asset_id), None)  # fmt: skip
        if device is None:
            return None
        events = self.spec.product_events.get(device.product_key, {})
        return Asset(device.product_key, device.device_key, device.asset_id, events)

    def _check_file_entry(self, name: str, entry: object, data: bytes) -> None:
        if not isinstance(entry, dict) or not isinstance(entry.get("featureId"), str):
            raise _Reject(400, CODE_BAD_REQUEST, f"files[{name!r}] needs a featureId")
        asset = self._asset_of({k: v for k, v in entry.items() if k != "featureId"})
        feature = entry["featureId"]
        if not asset.events.get(feature):
            raise _Reject(
                200, CODE_MODEL_INVALID, f"files[{name!r}]: {feature!r} has no file-typed param"
            )
        md5 = entry.get("md5")
        if md5 is not None and md5 != hashlib.md5(data, usedforsecurity=False).hexdigest():
            raise _Reject(400, CODE_BAD_REQUEST, f"files[{name!r}]: md5 does not match the part")
        length = entry.get("fileLength")
        if length is not None and length != len(data):
            raise _Reject(
                400, CODE_BAD_REQUEST, f"files[{name!r}]: fileLength {length} != {len(data)} bytes"
            )

    def _check_params(
        self, params: object, files: dict[str, Any]
    ) -> list[tuple[Asset, int, str, dict[str, Any]]]:
        if not isinstance(params, list) or not params:
            raise _Reject(400, CODE_BAD_REQUEST, "params must be a non-empty array")
        found: list[tuple[Asset, int, str, dict[str, Any]]] = []
        referenced: set[str] = set()
        for entry in params:
            if not isinstance(entry, dict):
                raise _Reject(400, CODE_BAD_REQUEST, "a params entry is not an object")
            asset = self._asset_of(entry)
            time_ms = entry.get("time")
            if isinstance(time_ms, bool) or not isinstance(time_ms, int):
                raise _Reject(400, CODE_BAD_REQUEST, "params[].time must be an integer (ms)")
            events = entry.get("events")
            if not isinstance(events, dict) or not events:
                raise _Reject(400, CODE_BAD_REQUEST, "params[].events must be a non-empty object")
            for event_id, values in events.items():
                if event_id not in asset.events or not isinstance(values, dict):
                    raise _Reject(
                        200, CODE_MODEL_INVALID, f"event {event_id!r} is not in the model"
                    )
                file_params = asset.events[event_id]
                for param, value in values.items():
                    if param in file_params:
                        name = value[len("local://") :] if _is_local(value) else None
                        if name is None or name not in files:
                            raise _Reject(
                                200,
                                CODE_MODEL_INVALID,
                                f"{event_id}.{param} is file-typed: expected local://<a file part>",
                            )
                        if files[name].get("featureId") != event_id:
                            raise _Reject(
                                200,
                                CODE_MODEL_INVALID,
                                f"files[{name!r}].featureId != {event_id!r}",
                            )
                        referenced.add(name)
                    elif _is_local(value):
                        raise _Reject(
                            200, CODE_MODEL_INVALID, f"{event_id}.{param} is not file-typed"
                        )
                found.append((asset, time_ms, event_id, dict(values)))
        unused = sorted(set(files) - referenced)
        if unused:
            raise _Reject(400, CODE_BAD_REQUEST, f"files no value refers to: {unused}")
        return found

    # ------------------------------------------------------------------ files

    def _stored(self, query: dict[str, str]) -> StoredFile:
        uri = query.get("fileUri", "")
        asset = self._asset_of(query)
        with self._lock:
            stored = self.files.get(uri)
        if stored is None or stored.asset != asset:
            raise _Reject(404, 404, f"file not found: {uri}")
        return stored

    def _download(self, query: dict[str, str]) -> HttpResponse:
        if query.get("category") != "feature":
            raise _Reject(400, CODE_BAD_REQUEST, "category must be 'feature'")
        stored = self._stored(query)
        data = stored.data
        return HttpResponse(
            200,
            {
                # By extension, as a web server would: a stored .json file is application/json.
                "Content-Type": mimetypes.guess_type(stored.original_filename)[0]
                or "application/octet-stream",
                "Content-Length": str(len(data)),
                "Content-Disposition": f'attachment; filename="{stored.original_filename}"',
            },
            (data[i : i + CHUNK] for i in range(0, len(data), CHUNK)),
        )

    def _delete(self, query: dict[str, str]) -> HttpResponse:
        stored = self._stored(query)
        with self._lock:
            self.files.pop(stored.uri, None)
        return _json(200, {"code": 0, "msg": "OK", "requestId": str(uuid.uuid4()), "data": {}})


def _is_local(value: object) -> bool:
    return isinstance(value, str) and value.startswith("local://")


def _json(status: int, body: dict[str, Any], delay: float = 0.0) -> HttpResponse:
    return HttpResponse(
        status, {"Content-Type": "application/json"}, json.dumps(body).encode(), delay
    )


def _token_reply(status: int, msg: str, token: str | None = None, expire: int = 0) -> HttpResponse:
    body: dict[str, Any] = {"status": status, "msg": msg, "business": "apim-token-service"}
    if token is not None:
        body["data"] = {"accessToken": token, "expire": expire}
    return _json(200, body)


def _parse_multipart(request: HttpRequest) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The request message and the file parts by filename, parsed by the `email` package."""
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data") or "boundary=" not in content_type:
        raise _Reject(400, CODE_BAD_REQUEST, f"Content-Type {content_type!r} is not multipart")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    root = BytesParser(policy=email.policy.HTTP).parsebytes(head + request.body)
    if not isinstance(root, EmailMessage) or not root.is_multipart() or root.defects:
        raise _Reject(400, CODE_BAD_REQUEST, f"malformed multipart body: {root.defects}")
    messages: list[bytes] = []
    files: dict[str, bytes] = {}
    for part in root.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        data = payload if isinstance(payload, bytes) else b""
        if name == "enos-message":
            messages.append(data)
        elif name == "enos-file":
            filename = part.get_filename()
            declared = part.get("Content-Length")
            if not filename:
                raise _Reject(400, CODE_BAD_REQUEST, "an enos-file part has no filename")
            if declared is None:
                raise _Reject(
                    400, CODE_BAD_REQUEST, f"file part {filename!r} has no Content-Length"
                )
            if str(declared).strip() != str(len(data)):
                raise _Reject(
                    400,
                    CODE_BAD_REQUEST,
                    f"file part {filename!r}: Content-Length {declared} != {len(data)} bytes",
                )
            if filename in files:
                raise _Reject(400, CODE_BAD_REQUEST, f"two file parts named {filename!r}")
            files[filename] = data
        else:
            raise _Reject(400, CODE_BAD_REQUEST, f"unexpected form-data part {name!r}")
    if len(messages) != 1:
        raise _Reject(400, CODE_BAD_REQUEST, f"expected one enos-message part, got {len(messages)}")
    if len(messages[0]) > MAX_MESSAGE_BYTES:
        raise _Reject(400, CODE_BAD_REQUEST, "request message over 512 KB")
    try:
        message = json.loads(messages[0])
    except (ValueError, UnicodeDecodeError):
        raise _Reject(400, CODE_BAD_REQUEST, "enos-message is not JSON") from None
    if not isinstance(message, dict):
        raise _Reject(400, CODE_BAD_REQUEST, "enos-message is not a JSON object")
    return message, files
