"""sd_notify and watchdog against a real NOTIFY_SOCKET datagram socket."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator

import pytest
from structlog.testing import capture_logs

from gatewayd.systemd import Heartbeat, Notifier, WatchdogPinger
from tests.support import async_wait_until

try:
    import systemd.daemon  # noqa: F401

    HAVE_LIBSYSTEMD = True
except ImportError:
    HAVE_LIBSYSTEMD = False

BACKENDS = [
    "socket",
    pytest.param(
        "libsystemd",
        marks=pytest.mark.skipif(not HAVE_LIBSYSTEMD, reason="systemd-python not installed"),
    ),
]


class NotifyListener:
    """The manager's end: a bound AF_UNIX datagram socket collecting messages."""

    def __init__(self, address: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(address)

    def receive(self, timeout: float = 5.0) -> str:
        """The next datagram, decoded; fails after `timeout`."""
        self.sock.settimeout(timeout)
        return self.sock.recv(4096).decode()

    def drain(self) -> list[str]:
        """Every datagram already queued, without waiting."""
        self.sock.setblocking(False)
        messages = []
        try:
            while True:
                messages.append(self.sock.recv(4096).decode())
        except BlockingIOError:
            return messages

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[NotifyListener]:
    """A filesystem NOTIFY_SOCKET (short path: sun_path holds 108 bytes)."""
    directory = tempfile.mkdtemp(prefix="gwn", dir="/tmp")
    path = os.path.join(directory, "notify")
    listener = NotifyListener(path)
    monkeypatch.setenv("NOTIFY_SOCKET", path)
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    yield listener
    listener.close()
    shutil.rmtree(directory)


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.mark.parametrize("backend", BACKENDS)
def test_messages_arrive_exactly_and_in_order(notify_socket: NotifyListener, backend: str) -> None:
    """Each call sends one datagram with exactly the protocol text, in call order."""
    notifier = Notifier(backend=backend, monotonic_usec=lambda: 123456789)  # type: ignore[arg-type]
    assert notifier.backend == backend
    assert notifier.ready()
    assert notifier.status("3/4 devices up,\n120 points/s")
    assert notifier.reloading()
    assert notifier.ready(status="reloaded")
    assert notifier.watchdog()
    assert notifier.extend_timeout(12.5)
    assert notifier.stopping()
    received = [notify_socket.receive() for _ in range(7)]
    assert received == [
        "READY=1",
        "STATUS=3/4 devices up, 120 points/s",
        "RELOADING=1\nMONOTONIC_USEC=123456789",
        "READY=1\nSTATUS=reloaded",
        "WATCHDOG=1",
        "EXTEND_TIMEOUT_USEC=12500000",
        "STOPPING=1",
    ]
    assert notify_socket.drain() == []


@pytest.mark.parametrize("backend", BACKENDS)
def test_reloading_carries_the_current_monotonic_clock(
    notify_socket: NotifyListener, backend: str
) -> None:
    """RELOADING=1 is paired with MONOTONIC_USEC= read from CLOCK_MONOTONIC at send time."""
    before = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    Notifier(backend=backend).reloading()  # type: ignore[arg-type]
    after = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
    first, second = notify_socket.receive().split("\n")
    assert first == "RELOADING=1"
    key, value = second.split("=")
    assert key == "MONOTONIC_USEC"
    assert before <= int(value) <= after


@pytest.mark.parametrize("backend", BACKENDS)
def test_abstract_namespace_socket(monkeypatch: pytest.MonkeyPatch, backend: str) -> None:
    """`@name` in NOTIFY_SOCKET means the abstract namespace, as systemd uses it."""
    name = f"gatewayd-test-{uuid.uuid4().hex}"
    listener = NotifyListener("\0" + name)
    monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
    try:
        assert Notifier(backend=backend).ready()  # type: ignore[arg-type]
        assert listener.receive() == "READY=1"
    finally:
        listener.close()


def test_without_notify_socket_everything_is_a_quiet_no_op(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Outside systemd the notifier sends nothing and reports it."""
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled
    assert notifier.ready() is False
    assert notifier.watchdog() is False
    assert notifier.stopping() is False
    assert notifier.watchdog_interval() is None


def test_vanished_manager_does_not_raise(tmp_path: os.PathLike[str]) -> None:
    """A NOTIFY_SOCKET nobody listens on makes sends return False, never raise."""
    notifier = Notifier({"NOTIFY_SOCKET": os.path.join(tmp_path, "gone")})
    assert notifier.enabled
    assert notifier.backend == "socket"  # an explicit environ never goes through libsystemd
    assert notifier.ready() is False
    assert notifier.status("still fine") is False


def test_vanished_manager_is_warned_about_once(tmp_path: os.PathLike[str]) -> None:
    """Three failed sends give one 'sd_notify failed' warning, with the socket and error."""
    gone = os.path.join(tmp_path, "gone")
    notifier = Notifier({"NOTIFY_SOCKET": gone})
    with capture_logs() as logs:
        assert [notifier.ready(), notifier.status("a"), notifier.status("b")] == [False] * 3
    warnings = [entry for entry in logs if entry["event"] == "sd_notify failed"]
    assert len(warnings) == 1
    assert warnings[0]["log_level"] == "warning"
    assert warnings[0]["socket"] == gone
    assert warnings[0]["error"]


def test_a_manager_that_stops_reading_never_blocks_the_sender(
    notify_socket: NotifyListener,
) -> None:
    """When the manager's queue is full the datagram is dropped (False) instead of blocking."""
    notifier = Notifier(backend="socket")
    results = [notifier.watchdog() for _ in range(5000)]  # nobody reads: the queue fills
    assert results[0] is True
    assert results[-1] is False
    sent = results.index(False)
    assert notify_socket.drain() == ["WATCHDOG=1"] * sent
    assert notifier.watchdog() is True  # room again once the manager has read


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "500000", "WATCHDOG_PID": str(os.getpid())}, 0.5),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid() + 1)}, None),
        ({"WATCHDOG_USEC": "0"}, None),
        ({"WATCHDOG_USEC": "soon"}, None),
    ],
)
def test_watchdog_interval_from_environment(
    environ: dict[str, str], expected: float | None
) -> None:
    """WATCHDOG_USEC gives the interval only when WATCHDOG_PID (if set) is this process."""
    assert Notifier(environ).watchdog_interval() == expected


def test_heartbeat_reports_components_silent_too_long() -> None:
    """A component is stale once its silence exceeds its own allowance, until it beats."""
    clock = FakeClock()
    heartbeat = Heartbeat(clock=clock)
    heartbeat.register("bus:rtu-1", max_silence=5)
    heartbeat.register("uplink", max_silence=20)
    assert heartbeat.stale() == []
    clock.advance(5)
    assert heartbeat.stale() == []  # exactly at the allowance is still alive
    clock.advance(0.5)
    assert heartbeat.stale() == ["bus:rtu-1"]
    heartbeat.beat("bus:rtu-1")
    clock.advance(15)
    assert heartbeat.stale() == ["bus:rtu-1", "uplink"]
    heartbeat.unregister("bus:rtu-1")
    assert heartbeat.stale() == ["uplink"]
    assert heartbeat.components == ("uplink",)
    with pytest.raises(KeyError, match="never registered"):
        heartbeat.beat("bus:rtu-1")
    with pytest.raises(ValueError, match="positive"):
        heartbeat.register("x", max_silence=0)


def test_verdict_withholds_for_stale_components_and_late_wakeups() -> None:
    """The pure verdict names stale components and an over-limit loop lag."""
    clock = FakeClock()
    heartbeat = Heartbeat(clock=clock)
    heartbeat.register("bus:tcp-1", max_silence=10)
    pinger = WatchdogPinger(Notifier({}), heartbeat, interval=30, clock=clock)
    assert pinger.period == 15
    assert pinger.max_loop_lag == 7.5
    assert pinger.verdict(now=clock.now, scheduled=clock.now).healthy
    late = pinger.verdict(now=clock.now, scheduled=clock.now - 8)
    assert not late.healthy
    assert late.loop_lag == 8
    assert late.reason() == "event loop stalled 8.0s"
    clock.advance(11)
    stale = pinger.verdict(now=clock.now, scheduled=clock.now)
    assert stale.stale == ("bus:tcp-1",)
    assert stale.reason() == "silent components: bus:tcp-1"


async def test_pings_stop_while_a_component_is_hung_and_resume_after(
    notify_socket: NotifyListener,
) -> None:
    """A component silent past its allowance stops WATCHDOG=1 until it beats again."""
    clock = FakeClock()
    heartbeat = Heartbeat(clock=clock)
    heartbeat.register("bus:rtu-1", max_silence=5)
    # A generous lag limit: only the injected clock decides health here.
    pinger = WatchdogPinger(Notifier(), heartbeat, interval=0.04, max_loop_lag=3600, clock=clock)
    task = asyncio.create_task(pinger.run())
    try:
        await async_wait_until(lambda: pinger.pings >= 3, what="three pings")
        clock.advance(6)  # the bus task hangs: no beat for longer than allowed
        withheld_from = pinger.withheld
        await async_wait_until(lambda: pinger.withheld >= withheld_from + 3, what="withheld")
        pings_while_hung = pinger.pings
        received = notify_socket.drain()
        assert received == ["WATCHDOG=1"] * pings_while_hung
        assert pinger.last_verdict is not None
        assert pinger.last_verdict.stale == ("bus:rtu-1",)
        heartbeat.beat("bus:rtu-1")  # it recovers
        await async_wait_until(lambda: pinger.pings > pings_while_hung, what="ping resumes")
        assert notify_socket.receive() == "WATCHDOG=1"
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_a_blocked_event_loop_withholds_the_ping(notify_socket: NotifyListener) -> None:
    """A tick that the loop delivers far too late does not ping (a real blocked loop)."""
    heartbeat = Heartbeat()
    heartbeat.register("uplink", max_silence=3600)
    pinger = WatchdogPinger(Notifier(), heartbeat, interval=0.1, max_loop_lag=0.5)
    task = asyncio.create_task(pinger.run())
    try:
        await async_wait_until(lambda: pinger.pings >= 2, what="pings before the block")
        pings_before = pinger.pings
        withheld_before = pinger.withheld
        time.sleep(1.0)  # noqa: ASYNC251 - the scenario under test: a blocking call
        await async_wait_until(lambda: pinger.withheld > withheld_before, what="withheld tick")
        assert pinger.pings == pings_before  # the late tick did not ping
        assert notify_socket.drain() == ["WATCHDOG=1"] * pings_before
        assert pinger.last_verdict is not None
        assert pinger.last_verdict.loop_lag is not None
        assert pinger.last_verdict.loop_lag >= 0.5
        await async_wait_until(lambda: pinger.pings > pings_before, what="pings resume")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
