"""An EnOS cloud written from enos-protocol.md alone, on a real mosquitto (imports no gatewayd).

`SpecCloud` is the cloud side of one gateway: a `ConnectGate` in front of mosquitto checks
the gateway's CONNECT, and a plain MQTT client subscribed to `#` answers every upstream
request the way §3 describes: sub-device login (single and batch, each sign checked),
logout, topology add/get/delete, measurepoint post / resume (single and batch, shapes
checked, 1212 for offline sub-devices unless `allowOfflineSubDevice`), event post,
attribute update / query / delete (§3.6: 1009 off line, 1207 for a bad shape or more than
200, 1204 for a name the product model lacks when `attribute_model` says which it has),
tag update (a list of {tagKey, tagValue} strings) / query / delete ({tags: [keys]}),
TSL template get (params {}; data is `tsl`, the maps a test writes, §3.6 #17), device
register (§3.4 #7: a list of {productKey, deviceKey, deviceName, timezone, ...}; 702 for
a key the cloud has; the new device gets a fresh secret its later signs are checked with),
and, for the products given in `integration`, their mode-4 channel (§1.2 CONNECT with the
product secret; §3.8 integration.event.post: 1257 for a device the product lacks, 1204 for
an event id `event_model` lacks, stored with channel "integration"). Replies
go to `topic + "_reply"` with the request's id as it came (same JSON type) and code 200,
unless a fault was asked for (`fail`, `drop`). `send_command` pushes a downstream command
through the gate (EnOS needs no SUBSCRIBE for those, §1.9) and returns the raw reply.

Everything is recorded in arrival order (`seq`) for assertions, and every way a message
strays from the spec goes to `problems`, which a test expects to stay empty.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, cast

import aiomqtt

from tests.peers.connect_gate import ConnectGate
from tests.peers.enos_auth import login_sign_ok
from tests.peers.enos_payloads import (
    Route,
    check_batch,
    check_envelope,
    check_event,
    check_id_and_version,
    check_integration_event,
    check_single_post,
    is_command_reply,
    route,
)

Key = tuple[str, str]  # (productKey, deviceKey)
Reply = tuple[int, Any, str]  # code, data, message of a reply


@dataclass(frozen=True)
class Request:
    """An upstream message as it arrived, and what this cloud answered (None = no reply)."""

    seq: int
    arrived_ms: int  # wall clock, comparable with the daemon's sample times
    topic: str
    raw: bytes
    doc: Any
    method: str
    code: int | None


@dataclass(frozen=True)
class Point:
    """One measurepoint value the cloud stored (the request was answered 200)."""

    seq: int
    channel: str  # "post" or "resume"
    product_key: str
    device_key: str
    point: str
    value: Any
    time: int


@dataclass(frozen=True)
class Event:
    """An event the cloud stored (§3.6 event post answered 200)."""

    seq: int
    product_key: str
    device_key: str
    event_id: str
    params: dict[str, Any]
    time: int
    channel: str = "thing"  # or "integration": integration.event.post (§3.8)


@dataclass(frozen=True)
class AttributeUpdate:
    """A `thing.attribute.update` the cloud accepted (§3.6 #13)."""

    seq: int
    key: Key
    attributes: dict[str, Any]


@dataclass(frozen=True)
class Login:
    """A sub-device logged in (seq orders it against the data)."""

    seq: int
    key: Key
    method: str


@dataclass
class _Fault:
    method: str
    code: int | None  # None: swallow the request, answer nothing
    remaining: int


@dataclass
class Records:
    """What the cloud received and decided, in arrival order."""

    requests: list[Request] = field(default_factory=list)
    points: list[Point] = field(default_factory=list)
    logins: list[Login] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    attributes: list[AttributeUpdate] = field(default_factory=list)
    #: (seq, device, register entry) of each device registered.
    registered: list[tuple[int, Key, dict[str, Any]]] = field(default_factory=list)
    #: (seq, device, method, params) of each tag request answered 200.
    tag_requests: list[tuple[int, Key, str, Any]] = field(default_factory=list)
    command_replies: list[tuple[str, bytes]] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def methods(self) -> list[str]:
        return [r.method for r in self.requests]

    def replied(self, method: str, code: int) -> list[Request]:
        return [r for r in self.requests if r.method == method and r.code == code]

    def duplicates(self) -> dict[tuple[str, str, str, int], int]:
        """Values stored more than once: (pk, dk, point, time) → count."""
        counts = Counter((p.product_key, p.device_key, p.point, p.time) for p in self.points)
        return {key: n for key, n in counts.items() if n > 1}


class SpecCloud:
    """The cloud for gateway `gateway` (pk, dk) and its `sub_devices` {(pk, dk): secret}."""

    def __init__(
        self,
        broker_port: int,
        gateway: Key,
        gateway_secret: str,
        sub_devices: dict[Key, str],
        *,
        topology: set[Key] | None = None,
        attribute_model: set[str] | None = None,
        integration: dict[str, str] | None = None,
        event_model: set[str] | None = None,
    ) -> None:
        """`integration`: product key -> product secret of the mode-4 channels this cloud
        opens (§1.2, §3.8); `event_model`: the event ids the products' model declares
        (None: any), checked by integration.event.post (1204)."""
        self.broker_port = broker_port
        self.gateway = gateway
        self.sub_secrets = dict(sub_devices)
        self.topology = set(sub_devices) if topology is None else set(topology)
        self.online: set[Key] = set()
        #: Attribute names the sub-devices' product model declares (None: any name).
        self.attribute_model = attribute_model
        #: What the cloud holds per device (query answers from it, delete removes).
        self.attribute_values: dict[Key, dict[str, Any]] = {}
        self.tags: dict[Key, dict[str, str]] = {}
        #: What thing.tsltemplate.get answers (the sub-devices' product model).
        self.tsl: dict[str, Any] = {}
        #: Products the gateway may register devices of.
        self.products: set[str] = {pk for pk, _ in sub_devices}
        self.records = Records()
        self.event_model = event_model
        self.gate = ConnectGate(
            broker_port, {gateway: gateway_secret}, self._gateway_gone, integration
        )
        self._seq = itertools.count(1)
        self._faults: list[_Fault] = []
        self._client: aiomqtt.Client | None = None
        self._listener: asyncio.Task[None] | None = None
        self._command_ids = itertools.count(70001)

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> SpecCloud:
        await self.gate.start()
        self._client = aiomqtt.Client("127.0.0.1", self.broker_port, identifier="spec-cloud")
        await self._client.__aenter__()
        await self._client.subscribe("#", qos=1)
        self._listener = asyncio.create_task(self._listen())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        if self._client is not None:
            with contextlib.suppress(aiomqtt.MqttError):
                await self._client.__aexit__(None, None, None)
        await self.gate.stop()

    @property
    def port(self) -> int:
        """Where the gateway connects: the gate, not mosquitto itself."""
        return self.gate.port

    def reply_reached_gateway(self, request: Request) -> bool:
        """Whether the reply to `request` was written to the gateway's connection (a reply
        lost with the connection lets the gateway send the request again, §6.4)."""
        request_id = request.doc.get("id") if isinstance(request.doc, dict) else None
        return any(
            topic == request.topic + "_reply" and _id_of(payload) == request_id
            for topic, payload in self.gate.forwarded
        )

    def repeated_after_reply(self) -> dict[tuple[str, str, str, int], int]:
        """Values stored more than once although the first reply reached the gateway: a
        resend the spec does not allow (it allows one only after no reply or an error)."""
        first: dict[tuple[str, str, str, int], int] = {}
        for p in self.records.points:
            first.setdefault((p.product_key, p.device_key, p.point, p.time), p.seq)
        by_seq = {r.seq: r for r in self.records.requests}
        return {
            key: count
            for key, count in self.records.duplicates().items()
            if self.reply_reached_gateway(by_seq[first[key]])
        }

    # ------------------------------------------------------------------ faults

    def fail(self, method: str, code: int, times: int = 1) -> None:
        """Answer the next `times` requests of `method` with `code` (storing nothing)."""
        self._faults.append(_Fault(method, code, times))

    def drop(self, method: str, times: int = 1) -> None:
        """Answer nothing to the next `times` requests of `method`."""
        self._faults.append(_Fault(method, None, times))

    def _take_fault(self, method: str) -> _Fault | None:
        for fault in self._faults:
            if fault.method == method and fault.remaining > 0:
                fault.remaining -= 1
                return fault
        return None

    # ------------------------------------------------------------------ commands

    async def push_command(
        self, key: Key, suffix: str, method: str, params: Any, *, command_id: object = None
    ) -> tuple[str, object]:
        """Publish a command on `/sys/{pk}/{dk}/thing/service/{suffix}` to the gateway's
        connection, only while `key` is logged in (or is the gateway); (topic, id)."""
        if key != self.gateway and key not in self.online:
            raise AssertionError(f"{key} is not logged in: EnOS would not route a command to it")
        if command_id is None:
            command_id = str(next(self._command_ids))
        topic = f"/sys/{key[0]}/{key[1]}/thing/service/{suffix}"
        payload = json.dumps(
            {"id": command_id, "version": "1.0", "method": method, "params": params}
        ).encode()
        await self.gate.inject(self.gateway, topic, payload)
        return topic, command_id

    def replies_to(self, topic: str, command_id: object) -> list[bytes]:
        """Raw replies on `topic + "_reply"` carrying `command_id`, matched by the id's text
        (a reply that changed the id's JSON type still counts; tests check the type)."""
        return [
            raw
            for reply_topic, raw in self.records.command_replies
            if reply_topic == topic + "_reply" and str(_id_of(raw)) == str(command_id)
        ]

    async def send_command(
        self,
        key: Key,
        suffix: str,
        method: str,
        params: Any,
        *,
        command_id: object = None,
        timeout: float = 30.0,
    ) -> bytes:
        """`push_command`, then wait for its reply and return the raw payload."""
        topic, command_id = await self.push_command(
            key, suffix, method, params, command_id=command_id
        )
        deadline = time.monotonic() + timeout
        while not (replies := self.replies_to(topic, command_id)):
            if time.monotonic() > deadline:
                raise AssertionError(f"no reply to command {command_id!r} on {topic} in {timeout}s")
            await asyncio.sleep(0.02)
        return replies[0]

    # ------------------------------------------------------------------ upstream

    def _gateway_gone(self, device: Key) -> None:
        if device == self.gateway:
            self.online.clear()  # a gateway disconnect logs all its sub-devices out (§5)

    async def _listen(self) -> None:
        assert self._client is not None
        async for message in self._client.messages:
            topic = message.topic.value
            payload = message.payload
            raw = payload if isinstance(payload, bytes) else str(payload).encode()
            if is_command_reply(topic):
                self.records.command_replies.append((topic, raw))
                continue
            where = route(topic)
            if where is None:
                continue  # our own replies come back through `#`; nothing else is upstream
            try:
                await self._answer(topic, raw, where)
            except Exception as exc:  # a payload this cloud cannot even take apart
                self.records.problems.append(f"{topic}: responder failed on it: {exc!r}")

    async def _answer(self, topic: str, raw: bytes, where: Route) -> None:
        seq = next(self._seq)
        doc: Any
        try:
            doc = json.loads(raw) if raw else None
        except ValueError:
            doc = None
        problems = check_envelope(doc, where.method) if doc is not None else ["not JSON"]
        notes = check_id_and_version(doc) if isinstance(doc, dict) else []
        code, data, message = 200, cast(Any, {}), "success"
        fault = None if problems else self._take_fault(where.method)
        if problems:
            code, message = (1251, "Payload is empty") if not raw else (1220, "; ".join(problems))
            if isinstance(doc, dict) and doc.get("method") != where.method:
                code = 1260
        elif fault is not None:
            code = fault.code if fault.code is not None else 0
            message = "fault injected by the test"
            if fault.code == 1212:
                self._refuse_permission(doc)
        else:
            code, data, message = self._handle(seq, where, doc, problems)
        self.records.problems += [f"{topic} #{seq}: {p}" for p in problems + notes]
        replied = None if fault is not None and fault.code is None else code
        self.records.requests.append(
            Request(seq, int(time.time() * 1000), topic, raw, doc, where.method, replied)
        )
        if replied is None or self._client is None:
            return
        request_id = doc.get("id") if isinstance(doc, dict) else None
        reply = {"id": request_id, "code": code, "message": message, "data": data}
        with contextlib.suppress(aiomqtt.MqttError):
            await self._client.publish(topic + "_reply", json.dumps(reply).encode(), qos=1)

    def _refuse_permission(self, doc: dict[str, Any]) -> None:
        """1212 means the cloud holds the batch's sub-devices offline: forget their login."""
        for item in doc.get("params") or []:
            if isinstance(item, dict):
                self.online.discard((item.get("productKey"), item.get("deviceKey")))

    def _handle(self, seq: int, where: Route, doc: dict[str, Any], problems: list[str]) -> Reply:
        """Do what the request asks; (code, data, message) of the reply."""
        if (
            where.kind
            not in {"post", "resume", "event", "attribute_update", "attribute_query",
                    "attribute_delete", "tag_update", "tag_query", "tag_delete", "tsl_get",
                    "integration_event"}
            and (where.product_key, where.device_key) != self.gateway
        ):
            problems.append(f"{where.kind} on a topic that is not the gateway's")
            return 1009, {}, "Publish to topic with no write permission"
        handler = getattr(self, f"_on_{where.kind}")
        result: Reply = handler(seq, where, doc, problems)
        return result

    def _on_login(self, seq: int, where: Route, doc: dict[str, Any], problems: list[str]) -> Reply:
        params = doc["params"]
        if not isinstance(params, dict):
            problems.append("combine.login params is not an object")
            return 1220, {}, "Payload format error"
        key = (params.get("productKey"), params.get("deviceKey"))
        code, reason = self._login_one(key, params, {}, seq, "combine.login")
        if code != 200:
            return code, {}, reason
        return 200, {"assetId": f"a{key[1]}", "productKey": key[0], "deviceKey": key[1]}, ""

    def _on_login_batch(
        self, seq: int, where: Route, doc: dict[str, Any], problems: list[str]
    ) -> Reply:
        params = doc["params"]
        entries = params.get("subDevices") if isinstance(params, dict) else None
        if not isinstance(entries, list) or not entries:
            problems.append("combine.login.batch params.subDevices is not a non-empty list")
            return 1220, {"loginedSubDevices": [], "failedSubDevices": []}, "Payload format error"
        shared = {
            k: params[k]
            for k in ("clientId", "timestamp", "signMethod", "signmethod")
            if k in params
        }
        logged, failed, first_code, messages = [], [], 200, ""
        for entry in entries:
            if not isinstance(entry, dict):
                problems.append("a subDevices entry is not an object")
                continue
            key = (entry.get("productKey"), entry.get("deviceKey"))
            code, reason = self._login_one(key, entry, shared, seq, "combine.login.batch")
            if code == 200:
                logged.append({"assetId": f"a{key[1]}", "deviceKey": key[1], "productKey": key[0]})
            else:
                failed.append({"deviceKey": key[1], "productKey": key[0]})
                first_code = code if first_code == 200 else first_code
                messages += f"{key[0]}&{key[1]} has error: {reason};"
        return first_code, {"loginedSubDevices": logged, "failedSubDevices": failed}, messages

    def _login_one(
        self,
        key: tuple[Any, Any],
        entry: dict[str, Any],
        shared: dict[str, Any],
        seq: int,
        method: str,
    ) -> tuple[int, str]:
        """Log one sub-device in after the checks of §3.1; (code, reason)."""
        if key not in self.sub_secrets:
            return 705, "It failed to query device, not existed this device"
        if key not in self.topology:
            return 740, "Sub device not belong the gateway"
        reason = login_sign_ok(entry, shared, self.sub_secrets[key])
        if reason is not None:
            self.records.problems.append(f"{method} of {key}: {reason}")
            return 742, "Sign check failed"
        self.online.add(key)
        self.records.logins.append(Login(seq, key, method))
        return 200, ""

    def _on_logout(self, seq: int, where: Route, doc: dict[str, Any], problems: list[str]) -> Reply:
        params = doc["params"]
        if not isinstance(params, dict):
            problems.append("combine.logout params is not an object")
            return 1220, {}, "Payload format error"
        key = (params.get("productKey"), params.get("deviceKey"))
        self.online.discard(key)
        return 200, {"productKey": key[0], "deviceKey": key[1]}, "success"

    def _on_topo_add(
        self, seq: int, where: Route, doc: dict[str, Any], problems: list[str]
    ) -> Reply:
        params = doc["params"]
        if not isinstance(params, list) or not params:
            problems.append("thing.topo.add params is not a non-empty list")
            return 1220, {}, "Payload format error"
        for entry in params:
            key = (entry.get("productKey"), entry.get("deviceKey"))
            if key not in self.sub_secrets:
                return 1255, {}, "add topo failure, sub-device doesn't exist"
            reason = login_sign_ok(entry, {}, self.sub_secrets[key])
            if reason is not None:
                problems.append(f"thing.topo.add of {key}: {reason}")
                return 1255, {}, f"add topo failure, {reason}"
        self.topology |= {(e["productKey"], e["deviceKey"]) for e in params}
        return 200, {}, ""

    def _on_topo_get(
        self, seq: int, where: Route, doc: dict[str, Any], problems: list[str]
    ) -> Reply:
        return 200, [{"productKey": pk, "deviceKey": dk} for pk, dk in sorted(self.topology)], ""

    def _on_topo_delete(
        self, seq: int, where: Route, doc: dict[str, Any], problems: list[str]
    ) -> Reply:
        keys = {(e.get("productKey"), e.get("deviceKey")) for e in doc["params"] or []}
        if keys & self.online:
            return 1256, {}, "Remove topo failure, sub-device is online"
        self.topology -= keys
        return 200, {}, ""

    def _on_post_batch(
        self, seq: int, where: Route, doc: dict[str, Any], problems: list[str]
    ) -> Reply:
        return self._store_batch(seq, "post", doc, problems)

    def _on_resume_batch(
        self, seq: int, where: Route, doc: dict[str, Any], problems: list[str]
    ) -> Reply:
        return self._store_batch(seq, "resume", doc, problems)

    def _store_batch(
        self, seq: int, channel: str, doc: dict[str, Any], problems: list[str]
    ) -> Reply:
        batch = check_batch(doc)
        problems += batch.problems
        if batch.problems:
            return 1206, {}, "Measurepoint post data format error"
        keys = [(r.product_key, r.device_key) for r in batch.records]
        offline = {k for k in keys if k != (None, None) and k not in self.online}
        if offline and not batch.allow_offline:
            # The whole request fails (§3.5.2); the gateway must log in first.
            return 1212, {}, "No sub-device permission"
        for record in batch.records:
            pk = record.product_key or self.gateway[0]
            dk = record.device_key or self.gateway[1]
            for name, value in record.measurepoints.items():
                self.records.points.append(Point(seq, channel, pk, dk, name, value, record.time))
        return 200, {}, ""

    def _on_post(self, seq: int, where: Route, doc: dict[str, Any], problems: list[str]) -> Reply:
        return self._store_single(seq, "post", where, doc, problems)

    def _on_resume(self, seq: int, where: Route, doc: dict[str, Any], problems: list[str]) -> Reply:
        return self._store_single(seq, "resume", where, doc, problems)

    def _store_single(
        self, seq: int, channel: str, where: Route, doc: dict[str, Any], problems: list[str]
    ) -> Reply:
        key = (where.product_key, where.device_key)
        if key != self.gateway and key not in self.online:
            return 1009, {}, "Publish to topic with no write permission"
        found = check_single_post(doc)
        problems += found
        if found:
            return 1206, {}, "Measurepoint post data format error"
        params = doc["params"]
        for name, value in params["measurepoints"].items():
            self.records.points.append(Point(seq, channel, *key, name, value, params["time"]))
        return 200, {}, ""

    def _on_event(self, seq: int, where: Route, doc: dict[str, Any], problems: list[str]) -> Reply:
        key = (where.product_key, where.device_key)
        if key != self.gateway and key not in self.online:
            return 1009, {}, "Publish to topic with no write permission"
        found = check_event(doc)
        problems += found
        if found:
            return 1204, {}, "Model validate failed"
        params = doc["params"]
        self.records.events.append(
            Event(seq, *key, where.event_id, params["events"], params["time"])
        )
        return 200, {}, ""


    def _on_integration_event(
        self, seq: int, where: Route, doc: dict[str, Any], problems: list[str]
    ) -> Reply:
        """§3.8 / seeds 001-002: each entry's device must exist in the product (1257), its
        events fit the model (1204); all or nothing. The device need not be online."""
        found = check_integration_event(doc)
        problems += found
        if found:
            return 1220, {}, "Payload format error"
        stored = []
        for entry in doc["params"]:
            key = (where.product_key, entry["deviceKey"])
            if key not in self.sub_secrets:
                return 1257, {}, "Device not found"
            for event_id, params in entry["events"].items():
                if self.event_model is not None and event_id not in self.event_model:
                    return 1204, {}, "Model validate failed"
                stored.append(Event(seq, *key, event_id, params, entry["time"], "integration"))
        self.records.events += stored
        return 200, {}, ""

    def _attribute_device(self, where: Route) -> Key | None:
        key = (where.product_key, where.device_key)
        return key if key == self.gateway or key in self.online else None

    def _on_attribute_update(
        self, seq: int, where: Route, doc: dict[str, Any], problems: list[str]
    ) -> Reply:
        key = self._attribute_device(where)
        if key is None:
            return 1009, {}, "Publish to topic with no write permission"
        params = doc["params"]
        attributes = params.get("attributes") if isinstance(params, dict) else None
        if not isinstance(attributes, dict) or not attributes:
            problems.append("thing.attribute.update params.attributes is not a non-empty object")
            return 1207, {}, "Attribute update data format error"
        if len(attributes) > 200:
            problems.append(f"{len(attributes)} attributes in one request (at most 200)")
            return 1207, {}, "Attribute update data format error"
        unknown = set(attributes) - (self.attribute_model or set(attributes))
        if unknown:
            return 1204, {}, f"Model validate failed: {sorted(unknown)}"
        self.attribute_values.setdefault(key, {}).update(attributes)
        self.records.attributes.append(AttributeUpdate(seq, key, dict(attributes)))
        return 200, {}, ""

    def _attribute_names(self, doc: dict[str, Any]) -> list[str] | None:
        params = doc["params"]
        names = params.get("attributes") if isinstance(params, dict) else None
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            return None
        return names

    def _on_attribute_query(
        self, seq: int, where: Route, doc: dict[str, Any], problems: list[str]
    ) -> Reply:
        key = self._attribute_device(where)
        if key is None:
            return 1009, {}, "Publish to topic with no write permission"
        names = self._attribute_names(doc)
        if names is None:
            problems.append("thing.attribute.query params.attributes is not a list of names")
            return 1208, {}, "Attribute query data format error"
        held = self.attribute_values.get(key, {})
        return 200, {n: held[n] for n in (names or held) if n in held}, ""

    def _on_attribute_delete(
        self, seq: int, where: Route, doc: dict[str, Any], problems: list[str]
    ) -> Reply:
        key = self._attribute_device(where)
        if key is None:
            return 1009, {}, "Publish to topic with no write permission"
        names = self._attribute_names(doc)
        if names is None:
            problems.append("thing.attribute.delete params.attributes is not a list of names")
            return 1209, {}, "Attribute delete data format error"
        for name in names:
            self.attribute_values.get(key, {}).pop(name, None)
        return 200, {}, ""


    def _on_tag_update(
        self, seq: int, where: Route, doc: dict[str, Any], problems: list[str]
    ) -> Reply:
        key = self._attribute_device(where)
        if key is None:
            return 1009, {}, "Publish to topic with no write permission"
        params = doc["params"]
        if not isinstance(params, list) or not params or not all(
            isinstance(t, dict) and set(t) == {"tagKey", "tagValue"}
            and isinstance(t["tagKey"], str) and isinstance(t["tagValue"], str)
            for t in params
        ):  # fmt: skip
            problems.append("thing.tag.update params is not a list of {tagKey, tagValue} strings")
            return 1220, {}, "Payload format error"
        self.tags.setdefault(key, {}).update({t["tagKey"]: t["tagValue"] for t in params})
        self.records.tag_requests.append((seq, key, "thing.tag.update", params))
        return 200, {}, ""

    def _tag_keys(self, doc: dict[str, Any], problems: list[str]) -> list[str] | None:
        params = doc["params"]
        keys = params.get("tags") if isinstance(params, dict) else None
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            problems.append(f"{doc.get('method')} params is not {{tags: [keys]}}")
            return None
        return keys

    def _on_tag_query(
        self, seq: int, where: Route, doc: dict[str, Any], problems: list[str]
    ) -> Reply:
        key = self._attribute_device(where)
        if key is None:
            return 1009, {}, "Publish to topic with no write permission"
        keys = self._tag_keys(doc, problems)
        if keys is None:
            return 1220, {}, "Payload format error"
        held = self.tags.get(key, {})
        return 200, {k: held[k] for k in (keys or held) if k in held}, ""

    def _on_tag_delete(
        self, seq: int, where: Route, doc: dict[str, Any], problems: list[str]
    ) -> Reply:
        key = self._attribute_device(where)
        if key is None:
            return 1009, {}, "Publish to topic with no write permission"
        keys = self._tag_keys(doc, problems)
        if keys is None:
            return 1220, {}, "Payload format error"
        for name in keys:
            self.tags.get(key, {}).pop(name, None)
        self.records.tag_requests.append((seq, key, "thing.tag.delete", doc["params"]))
        return 200, {}, ""


    def _on_tsl_get(
        self, seq: int, where: Route, doc: dict[str, Any], problems: list[str]
    ) -> Reply:
        if self._attribute_device(where) is None:
            return 1009, {}, "Publish to topic with no write permission"
        if doc["params"] != {}:
            problems.append("thing.tsltemplate.get params is not {}")
        return 200, self.tsl, ""


    def _on_register(
        self, seq: int, where: Route, doc: dict[str, Any], problems: list[str]
    ) -> Reply:
        params = doc["params"]
        if not isinstance(params, list) or not params or not all(
            isinstance(e, dict) and isinstance(e.get("productKey"), str)
            and isinstance(e.get("deviceKey"), str) for e in params
        ):  # fmt: skip
            problems.append("thing.device.register params is not a list of devices")
            return 1220, [], "Payload format error"
        for entry in params:
            name = entry.get("deviceName")
            if not (isinstance(name, dict) and isinstance(name.get("defaultValue"), str)):
                problems.append(f"deviceName of {entry['deviceKey']} is not {{defaultValue}}")
            timezone = entry.get("timezone")
            if timezone is not None and not re.fullmatch(r"[+-]\d\d:\d\d", str(timezone)):
                problems.append(f"timezone {timezone!r} is not +HH:MM")
            key = (entry["productKey"], entry["deviceKey"])
            if key[0] not in self.products:
                return 1220, [], "product does not exist"
            if key in self.sub_secrets:
                return 702, [], "DeviceKey existed"
        data = []
        for entry in params:
            key = (entry["productKey"], entry["deviceKey"])
            self.sub_secrets[key] = secret = f"reg-{key[1]}-{seq}"
            self.records.registered.append((seq, key, entry))
            data.append({"assetId": f"a{key[1]}", "productKey": key[0], "deviceKey": key[1],
                         "deviceSecret": secret})  # fmt: skip
        return 200, data, ""


def _id_of(raw: bytes) -> object:
    """The `id` of a JSON payload, or None when it has none."""
    try:
        doc = json.loads(raw)
    except ValueError:
        return None
    return doc.get("id") if isinstance(doc, dict) else None
