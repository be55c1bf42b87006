"""The command ledger, admission and dispatcher: duplicates, bounds, replies, interleavings.

The dispatcher runs with a scripted `execute` whose commands finish only when the test
says so, so every interleaving of arrivals (new, duplicate in flight, redelivered,
``5`` vs ``"5"``), completions and session changes can be generated (hypothesis) and the
rules checked after each step. Payloads are raw JSON written here, not with the codec.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatewayd.enos import messages
from gatewayd.enos.session import BrokerUnavailable, Inbound
from gatewayd.uplink.command_ledger import Admission, Arrival, CommandLedger
from gatewayd.uplink.dispatch import CommandDispatcher, ReplyOutbox

TOPIC = "/sys/pk/d{unit}/thing/service/measurepoint/set"
COMBINE = "/ext/session/gw/gw/combine/disable"


def set_command(msg_id: str | int, unit: int = 1, value: int = 1) -> Inbound:
    """A measurepoint.set to device d{unit}, written by hand (§3.7)."""
    body = {"id": msg_id, "version": "1.0", "method": "thing.service.measurepoint.set",
            "params": {"p": value}}  # fmt: skip
    return Inbound(TOPIC.format(unit=unit), json.dumps(body).encode())


class Script:
    """An `execute` whose commands finish when the test releases them, in any order."""

    def __init__(self) -> None:
        self.started: list[messages.Command] = []
        self.gates: dict[int, asyncio.Future[None]] = {}

    async def __call__(self, command: messages.Command) -> tuple[int, object, str]:
        self.started.append(command)
        gate: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.gates[len(self.started) - 1] = gate
        await gate
        return 200, {"ran": len(self.started) - 1}, ""

    def finish(self, index: int) -> None:
        """Let command number `index` (in start order) finish."""
        self.gates.pop(index).set_result(None)


async def settle() -> None:
    """Let every ready task run (a few loop turns; no wall-clock waiting)."""
    for _ in range(10):
        await asyncio.sleep(0)


# ---------------------------------------------------------------------------- ledger


def test_ledger_runs_once_and_answers_every_delivery() -> None:
    """First delivery runs, one in flight waits, later ones get the stored reply."""
    ledger: CommandLedger[tuple[str, str | int], str] = CommandLedger(remember=2)
    assert ledger.arrive(("t", 5), "a") is Arrival.RUN
    assert ledger.arrive(("t", 5), "b") is Arrival.WAIT
    assert ledger.arrive(("t", "5"), "c") is Arrival.RUN  # a string id is another command
    assert ledger.finish(("t", 5), b"R5") == ["a", "b"]
    assert ledger.arrive(("t", 5), "d") == b"R5"
    assert ledger.running == 1


def test_ledger_forgets_only_finished_commands() -> None:
    """Beyond `remember`, the oldest finished outcome goes; a running one never does."""
    ledger: CommandLedger[int, str] = CommandLedger(remember=1)
    ledger.arrive(0, "running")
    for key in (1, 2):
        ledger.arrive(key, "w")
        ledger.finish(key, b"x")
    assert len(ledger) == 2  # 0 (running) and 2 (the newest finished)
    assert ledger.arrive(1, "again") is Arrival.RUN  # forgotten
    assert ledger.arrive(0, "dup") is Arrival.WAIT
    assert ledger.finish(0, b"r0") == ["running", "dup"]


def test_admission_bounds_per_device_and_in_total() -> None:
    """per_device per target, total overall; a release frees exactly one slot."""
    admission: Admission[str] = Admission(per_device=2, total=3)
    assert [admission.admit("a") for _ in range(3)] == [True, True, False]
    assert [admission.admit("b") for _ in range(2)] == [True, False]  # total reached
    admission.release("a")
    assert admission.admit("b")
    assert (admission.pending, admission.pending_for("a"), admission.pending_for("b")) == (3, 1, 2)
    with pytest.raises(ValueError, match="per_device"):
        Admission(per_device=3, total=2)


# ---------------------------------------------------------------------------- dispatcher


async def test_full_queue_is_refused_at_once_and_nothing_runs() -> None:
    """Beyond the bound a command gets 2016 at once; it did not run, so a resend may."""
    script = Script()
    dispatcher = CommandDispatcher(script, per_device=2, total=3)
    got: list[bytes] = []

    def respond(topic: str, payload: bytes) -> None:
        got.append(payload)

    for n in range(3):
        dispatcher.submit(set_command(n), respond)
    await settle()
    assert [json.loads(p)["code"] for p in got] == [2016]
    refused = json.loads(got[0])
    assert refused["id"] == 2
    assert "2 commands already pending for this device" in refused["message"]
    assert len(script.started) == 2
    dispatcher.submit(set_command(7, unit=2), respond)  # another device still has room
    dispatcher.submit(set_command(8, unit=3), respond)  # now the total (3) is full
    await settle()
    assert json.loads(got[-1])["message"].startswith("overloaded: 3 commands already pending")
    script.finish(0)
    await settle()
    dispatcher.submit(set_command(2), respond)  # the refused one, sent again: it runs
    await settle()
    assert [c.id for c in script.started] == [0, 1, 7, 2]
    for index in (1, 2, 3):
        script.finish(index)
    await settle()
    assert dispatcher.idle


async def test_replies_follow_the_session_up_when_ready() -> None:
    """A reply due while no session is up is not sent but kept: the redelivery gets it."""
    script = Script()
    dispatcher = CommandDispatcher(script)
    published: list[tuple[str, bytes]] = []

    async def publish(topic: str, payload: bytes) -> None:
        published.append((topic, payload))

    first = ReplyOutbox(publish)
    dispatcher.attach(first)
    runner = asyncio.create_task(first.run())
    dispatcher.submit(set_command("a"))
    await settle()
    runner.cancel()
    await asyncio.wait({runner})
    dispatcher.detach(first)  # the session ended while "a" ran
    script.finish(0)
    await settle()
    assert published == []
    assert dispatcher.stats.unsent == 1
    second = ReplyOutbox(publish)
    dispatcher.attach(second)
    runner = asyncio.create_task(second.run())
    dispatcher.submit(set_command("a"))  # the cloud redelivers it after the reconnect
    await settle()
    runner.cancel()
    assert len(script.started) == 1
    [(topic, payload)] = published
    assert topic == TOPIC.format(unit=1) + "_reply"
    assert json.loads(payload) == {"id": "a", "code": 200, "message": "", "data": {"ran": 0}}


async def test_a_lost_broker_stops_the_outbox_without_raising() -> None:
    """A publish that finds the broker gone ends the outbox quietly; the reply is unsent."""

    async def publish(topic: str, payload: bytes) -> None:
        raise BrokerUnavailable("gone")

    dispatcher = CommandDispatcher(Script())
    outbox = ReplyOutbox(publish)
    dispatcher.attach(outbox)
    runner = asyncio.create_task(outbox.run())
    dispatcher.submit(Inbound(TOPIC.format(unit=1), b'{"id": 3, "params": 1}'))  # malformed
    await settle()
    assert runner.done()
    assert runner.exception() is None
    dispatcher.detach(outbox)
    assert dispatcher.stats.unsent == 1


# Steps of a generated interleaving: deliver a command (id from a small pool, so
# duplicates and 5 vs "5" are frequent), let the oldest or newest running one finish,
# or let the loop turn.
IDS = st.sampled_from([1, 2, 3, "1", "2", "x"])
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("send"), IDS, st.integers(1, 2)),
        st.tuples(st.just("finish"), st.sampled_from(["oldest", "newest"]), st.just(0)),
        st.tuples(st.just("turn"), st.just(0), st.just(0)),
    ),
    max_size=60,
)


@settings(max_examples=150, deadline=None)
@given(steps=STEPS, per_device=st.integers(1, 3))
def test_any_interleaving_runs_each_command_once_and_answers_each_delivery(
    steps: list[tuple[str, Any, int]], per_device: int
) -> None:
    """Whatever the order: one run per (topic, typed id), one reply per delivery."""

    async def scenario() -> None:
        script = Script()
        dispatcher = CommandDispatcher(script, per_device=per_device, total=4, remember=64)
        deliveries: Counter[tuple[str, str, str | int]] = Counter()
        replies: list[dict[str, Any]] = []
        reply_keys: Counter[tuple[str, str, str | int]] = Counter()

        def respond(topic: str, payload: bytes) -> None:
            body = json.loads(payload)
            replies.append(body)
            reply_keys[(topic, type(body["id"]).__name__, body["id"])] += 1

        for kind, arg, unit in steps:
            if kind == "send":
                inbound = set_command(arg, unit)
                deliveries[(inbound.topic + "_reply", type(arg).__name__, arg)] += 1
                assert dispatcher.submit(inbound, respond)
            elif kind == "finish" and script.gates:
                script.finish(min(script.gates) if arg == "oldest" else max(script.gates))
            await settle()
        while script.gates:
            script.finish(min(script.gates))
            await settle()
        assert dispatcher.idle
        # One reply per delivery, each with its id's JSON type.
        assert reply_keys == deliveries
        # One run per command: a (topic, typed id) never starts twice (all are remembered;
        # a refused one had not started).
        runs = Counter((c.topic, type(c.id).__name__, c.id) for c in script.started)
        assert set(runs.values()) <= {1}, runs
        assert all(r["code"] in (200, 2016) for r in replies)

    asyncio.run(scenario())
