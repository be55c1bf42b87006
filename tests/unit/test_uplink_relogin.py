"""Uplink sub-device login pacing and activation, against the emulator's sans-IO responder.

The "session" hands each request straight to `Responder.handle` (the emulator's EnOS rules,
no broker), and a `VirtualClock` stands in for time, so the re-login interval is exercised
exactly: a refused login is asked again only after `RELOGIN_INTERVAL_S`, at once after
combine.enable or a reload that changed the device.
"""

from __future__ import annotations

import asyncio
import json
import stat
from pathlib import Path
from typing import Any

import pytest
import structlog

from gatewayd.clock import VirtualClock
from gatewayd.config.models import Config
from gatewayd.enos import topics
from gatewayd.enos.messages import encode_request_payload
from gatewayd.enos.session import Inbound, RawReply
from gatewayd.sim.emulator import EmulatorConfig, Records
from gatewayd.sim.emulator.responder import Connection, Responder
from gatewayd.sim.emulator.state import CloudState
from gatewayd.uplink.subdevices import SubDevice, SubDeviceRegistry
from gatewayd.uplink.uplink import RELOGIN_INTERVAL_S, Uplink

GW = ("gwPK", "gwDK")

CLOUD = {
    "products": [
        {"product_key": "gwPK", "kind": "gateway"},
        {"product_key": "subPK", "kind": "sub_device"},
    ],
    "devices": [
        {"product_key": "gwPK", "device_key": "gwDK", "device_secret": "gwSecret"},
        {"product_key": "subPK", "device_key": "good", "device_secret": "goodSecret",
         "gateway": "gwPK/gwDK"},
        {"product_key": "subPK", "device_key": "bad", "device_secret": "cloudSecret",
         "gateway": "gwPK/gwDK"},
    ],
}  # fmt: skip


class ResponderSession:
    """A SessionPort whose broker is the emulator's responder, called in-process."""

    def __init__(self, clock: VirtualClock) -> None:
        self.state = CloudState(EmulatorConfig.model_validate(CLOUD))
        self.records = Records()
        self.responder = Responder(self.state, self.records)
        self.clock = clock
        self.methods: list[str] = []

    async def request(
        self, topic: str, msg_id: str, payload: bytes, *, timeout: float | None = None
    ) -> RawReply:
        outcome = self.responder.handle(
            Connection("gw", GW), topic, payload, int(self.clock.time() * 1000)
        )
        assert outcome.reply is not None
        assert outcome.reply_topic is not None
        self.methods.append(str(outcome.method))
        return RawReply(outcome.reply_topic, outcome.reply)

    async def publish(self, topic: str, payload: bytes, *, qos: int = 1) -> None:
        raise AssertionError("the login path only sends requests")

    def login_codes(self, device_key: str) -> list[int]:
        return [r.code for r in self.records.logins if r.device_key == device_key]


def make_uplink(tmp_path: Path, clock: VirtualClock, *, secure_mode: int = 2) -> Uplink:
    secret = (
        {"device_secret": "gwSecret"}
        if secure_mode == 2
        else {"secure_mode": 3, "product_secret": "gwProductSecret"}
    )
    config = Config.model_validate(
        {
            "gateway": {
                "product_key": "gwPK",
                "device_key": "gwDK",
                **secret,
                "broker": {"host": "127.0.0.1"},
            },
            "spool": {"path": str(tmp_path / "spool.db")},
        }
    )
    registry = SubDeviceRegistry(
        [SubDevice("good", "subPK", "good", "goodSecret"), SubDevice("bad", "subPK", "bad", "x")]
    )
    spool: Any = None  # the login path never touches the spool
    return Uplink(
        config, spool, registry, clock=clock, secret_path=tmp_path / "state" / "gateway.secret"
    )


async def login_pending(uplink: Uplink, session: ResponderSession) -> None:
    await uplink._login_pending(session)  # type: ignore[arg-type]


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


async def test_refused_login_waits_for_the_relogin_interval(
    tmp_path: Path, clock: VirtualClock
) -> None:
    """742: asked in the batch and alone, then not again until the interval has passed."""
    uplink, session = make_uplink(tmp_path, clock), ResponderSession(clock)
    await login_pending(uplink, session)
    assert session.login_codes("good") == [200]
    assert session.login_codes("bad") == [742, 742]
    bad = uplink.registry.get("bad")
    assert bad is not None
    assert (bad.online, bad.refused_at) == (False, clock.monotonic())

    await clock.advance(RELOGIN_INTERVAL_S - 1)
    await login_pending(uplink, session)  # e.g. delivery saw a 1212 and asked for logins
    assert session.login_codes("bad") == [742, 742]
    assert session.methods == ["combine.login.batch", "combine.login"]

    await clock.advance(1)
    await login_pending(uplink, session)
    assert session.login_codes("bad") == [742, 742, 742, 742]
    assert session.login_codes("good") == [200]  # online devices are not asked again


async def test_enable_and_a_changed_device_are_asked_at_once(
    tmp_path: Path, clock: VirtualClock
) -> None:
    """combine.enable clears a refusal; a reload's new SubDevice (new secret) is asked at once."""
    uplink, session = make_uplink(tmp_path, clock), ResponderSession(clock)
    session.state.set_enabled(("subPK", "good"), False)
    await login_pending(uplink, session)
    assert session.login_codes("good") == [723, 723]
    good = uplink.registry.get("good")
    assert good is not None
    assert good.last_error == "disabled"

    session.state.set_enabled(("subPK", "good"), True)
    params = [{"productKey": "subPK", "deviceKey": "good"}]
    enable = encode_request_payload("9", "combine.enable", params)
    answer = await uplink.answer(Inbound(topics.combine_enable(*GW), enable))
    assert answer is not None
    assert json.loads(answer[1])["code"] == 200
    assert good.refused_at is None
    await login_pending(uplink, session)
    assert session.login_codes("good") == [723, 723, 200]
    assert good.online

    uplink.registry.add(SubDevice("bad", "subPK", "bad", "cloudSecret"))  # a reload fixed it
    await login_pending(uplink, session)
    assert session.login_codes("bad") == [742, 742, 200]


async def test_activation_is_persisted_and_acknowledged(
    tmp_path: Path, clock: VirtualClock
) -> None:
    """thing.activate.info (mode 3, pending): the secret lands in a 0600 file; reply 200."""
    uplink = make_uplink(tmp_path, clock, secure_mode=3)
    params = {"assetId": "a1", "productKey": "gwPK", "deviceKey": "gwDK", "deviceSecret": "s3c"}
    topic = topics.activate_info(*GW)
    answer = await uplink.answer(
        Inbound(topic, encode_request_payload("77", "thing.activate.info", params))
    )
    assert answer is not None
    reply_topic, payload = answer
    assert reply_topic == topic + "_reply"
    reply = json.loads(payload)
    assert (reply["id"], reply["code"], reply["message"]) == ("77", 200, "device activate success")
    secret = tmp_path / "state" / "gateway.secret"
    assert secret.read_text() == "s3c"
    assert stat.S_IMODE(secret.stat().st_mode) == 0o600
    assert sorted(p.name for p in secret.parent.iterdir()) == ["gateway.secret"]


async def activate(
    uplink: Uplink, secret: str, *, topic_keys: tuple[str, str] = GW, keys: tuple[str, str] = GW
) -> dict[str, Any]:
    """Send thing.activate.info on `topic_keys`' topic for `keys`; the decoded reply."""
    params = {"productKey": keys[0], "deviceKey": keys[1], "deviceSecret": secret}
    topic = topics.activate_info(*topic_keys)
    msg_id = f"act-{secret}"  # one id per secret: a reused id would be a duplicate
    answer = await uplink.answer(
        Inbound(topic, encode_request_payload(msg_id, "thing.activate.info", params))
    )
    assert answer is not None
    assert answer[0] == topic + "_reply"
    reply: dict[str, Any] = json.loads(answer[1])
    return reply


async def test_mode2_ignores_and_logs_an_activation(tmp_path: Path, clock: VirtualClock) -> None:
    """Secure mode 2: activate.info is refused (2017) and logged; no secret file appears."""
    uplink = make_uplink(tmp_path, clock)
    with structlog.testing.capture_logs() as logs:
        reply = await activate(uplink, "planted")
    assert (reply["id"], reply["code"]) == ("act-planted", 2017)
    assert "secure mode 2" in reply["message"]
    assert not (tmp_path / "state").exists()
    [warning] = [e for e in logs if e["log_level"] == "warning"]
    assert warning["event"] == "thing.activate.info ignored"
    assert warning["reason"] == "the gateway uses secure mode 2, not 3"


async def test_mode3_takes_only_its_own_pending_activation(
    tmp_path: Path, clock: VirtualClock
) -> None:
    """Mode 3: other keys (topic or params) refused; own keys once; a second one refused."""
    uplink = make_uplink(tmp_path, clock, secure_mode=3)
    secret = tmp_path / "state" / "gateway.secret"
    with structlog.testing.capture_logs() as logs:
        other_topic = await activate(uplink, "s1", topic_keys=("gwPK", "other"))
        other_params = await activate(uplink, "s2", keys=("subPK", "good"))
        assert not secret.exists()
        own = await activate(uplink, "s3c")
        again = await activate(uplink, "replaced")
    assert [r["code"] for r in (other_topic, other_params, own, again)] == [2017, 2017, 200, 2017]
    assert "not addressed to this gateway" in other_topic["message"]
    assert "another device" in other_params["message"]
    assert "already activated" in again["message"]
    assert secret.read_text() == "s3c"
    ignored = [e["reason"] for e in logs if e["event"] == "thing.activate.info ignored"]
    assert len(ignored) == 3


async def test_login_loop_ends_when_cancelled_as_a_login_is_requested(
    tmp_path: Path, clock: VirtualClock
) -> None:
    """Cancel in the same tick a login is requested: the loop still ends (shutdown never hangs).

    Python 3.11's `asyncio.wait_for` returns the inner result and swallows a cancellation
    that races with it; the loop must not wait with it.
    """
    uplink, session = make_uplink(tmp_path, clock), ResponderSession(clock)
    task = asyncio.create_task(uplink._login_loop(session))  # type: ignore[arg-type]
    for _ in range(5):
        await asyncio.sleep(0)  # the loop is waiting for a login request
    uplink.reconfigure(uplink._config)  # "log in the new devices now"
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=2)
    assert done == {task}
    assert task.cancelled()


def test_reconnect_countdown_stays_current() -> None:
    """The status counts down to the next CONNECT instead of freezing at the first figure."""
    from gatewayd.uplink.uplink import UplinkStatus

    status = UplinkStatus(state="reconnecting in 40s", retry_at_ms=100_000)
    assert status.describe(60_000) == "reconnecting in 40s"
    assert status.describe(90_000) == "reconnecting in 10s"
    assert status.describe(120_000) == "reconnecting in 0s"
    assert UplinkStatus(state="connected").describe(0) == "connected"
