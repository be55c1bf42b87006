"""systemd service integration: sd_notify messages and a heartbeat-driven watchdog.

`Notifier` speaks the sd_notify(3) datagram protocol: through libsystemd
(`systemd.daemon.notify` from systemd-python) when that is installed, otherwise by
sending the same datagrams to `$NOTIFY_SOCKET` itself (path or `@abstract` sockets).
Without `$NOTIFY_SOCKET` (not started by systemd) every method is a quiet no-op.

`Heartbeat` + `WatchdogPinger` turn "the process is alive" into "the work is alive":
components (each bus task, the uplink loop) call `Heartbeat.beat(name)`; the pinger sends
`WATCHDOG=1` at half the watchdog interval only while every registered component has beaten
within its allowed silence and the event loop woke it on time. A hung bus task or a blocked
event loop therefore stops the pings and systemd restarts the service.

Typical daemon wiring::

    notifier = Notifier()
    heartbeat = Heartbeat()
    heartbeat.register("bus:rs485-1", max_silence=3 * poll_interval)
    ...
    interval = notifier.watchdog_interval()
    if interval is not None:
        task_group.create_task(WatchdogPinger(notifier, heartbeat, interval).run())
    notifier.ready()
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

import structlog

from gatewayd.episodes import Episodes

log = structlog.get_logger("gatewayd.systemd")

Backend = Literal["auto", "libsystemd", "socket"]
Clock = Callable[[], float]


def _libsystemd_notify() -> Callable[[str], bool] | None:
    """`systemd.daemon.notify` when systemd-python is importable, else None."""
    try:
        from systemd import daemon  # noqa: PLC0415 - optional dependency, probed lazily
    except ImportError:
        return None
    notify: Callable[[str], bool] = daemon.notify
    return notify


def _socket_address(notify_socket: str) -> str:
    """The AF_UNIX address for a `$NOTIFY_SOCKET` value (`@name` is the abstract namespace)."""
    if notify_socket.startswith("@"):
        return "\0" + notify_socket[1:]
    return notify_socket


def _monotonic_usec() -> int:
    """CLOCK_MONOTONIC in microseconds, the clock sd_notify's MONOTONIC_USEC= refers to."""
    return time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000


class Notifier:
    """Sends sd_notify(3) state changes to the service manager (a no-op outside systemd).

    `environ` is read once at construction (`NOTIFY_SOCKET`, `WATCHDOG_USEC`,
    `WATCHDOG_PID`). `backend="auto"` uses libsystemd when systemd-python is installed and
    `environ` is the process environment (libsystemd reads that itself), else plain
    datagrams. Every method returns True when the message was handed to the manager.
    """

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        *,
        backend: Backend = "auto",
        monotonic_usec: Callable[[], int] = _monotonic_usec,
    ) -> None:
        self._environ: Mapping[str, str] = os.environ if environ is None else environ
        self._notify_socket = self._environ.get("NOTIFY_SOCKET") or None
        self._monotonic_usec = monotonic_usec
        self._libsystemd: Callable[[str], bool] | None = None
        if backend == "libsystemd":
            self._libsystemd = _libsystemd_notify()
            if self._libsystemd is None:
                raise RuntimeError("backend='libsystemd' needs systemd-python installed")
        elif backend == "auto" and environ is None:
            self._libsystemd = _libsystemd_notify()
        # One key, "notify", never closed: a manager that went away does not come back.
        self._episodes = Episodes(log)

    @property
    def enabled(self) -> bool:
        """True when started by systemd with a notification socket."""
        return self._notify_socket is not None

    @property
    def backend(self) -> Literal["libsystemd", "socket"]:
        """Which transport the messages take."""
        return "libsystemd" if self._libsystemd is not None else "socket"

    def ready(self, status: str | None = None) -> bool:
        """Startup (or a reload) finished: config valid, spool open, pollers scheduled."""
        return self.send("READY=1", *([_status_line(status)] if status is not None else []))

    def status(self, text: str) -> bool:
        """Replace the one-line status shown by `systemctl status`."""
        return self.send(_status_line(text))

    def watchdog(self) -> bool:
        """Keep-alive ping; only call it when the service is known to be healthy."""
        return self.send("WATCHDOG=1")

    def stopping(self) -> bool:
        """Shutdown began (sent on SIGTERM before flushing and closing)."""
        return self.send("STOPPING=1")

    def reloading(self) -> bool:
        """A reload began; send `ready()` when it is done.

        `MONOTONIC_USEC=` is required with `RELOADING=1` for Type=notify-reload
        (sd_notify(3)), so the manager can tell this reload from an older one.
        """
        return self.send("RELOADING=1", f"MONOTONIC_USEC={self._monotonic_usec()}")

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for `seconds` more before the start/stop/reload timeout fires."""
        return self.send(f"EXTEND_TIMEOUT_USEC={max(1, round(seconds * 1_000_000))}")

    def watchdog_interval(self) -> float | None:
        """The watchdog interval in seconds if systemd expects pings from this process."""
        raw_usec = self._environ.get("WATCHDOG_USEC")
        if not raw_usec:
            return None
        raw_pid = self._environ.get("WATCHDOG_PID")
        if raw_pid and raw_pid.strip() != str(os.getpid()):
            return None  # meant for another process (e.g. our parent's wrapper)
        try:
            usec = int(raw_usec)
        except ValueError:
            return None
        return usec / 1_000_000 if usec > 0 else None

    def send(self, *assignments: str) -> bool:
        """Send one datagram of newline-separated `KEY=value` assignments."""
        if self._notify_socket is None:
            return False
        message = "\n".join(assignments)
        try:
            if self._libsystemd is not None:
                return bool(self._libsystemd(message))
            with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
                # Never block the event loop on a manager that stopped reading: a full
                # queue drops this message (BlockingIOError) instead.
                sock.setblocking(False)
                sock.connect(_socket_address(self._notify_socket))
                sock.sendall(message.encode())
        except OSError as exc:
            # The manager going away must never take the daemon down; say so once.
            self._episodes.failed(
                "notify", "sd_notify failed", error=str(exc), socket=self._notify_socket
            )
            return False
        return True


def _status_line(text: str) -> str:
    """`STATUS=` with the text on one line (a newline would start a new assignment)."""
    return "STATUS=" + " ".join(text.split())


@dataclass
class _Component:
    max_silence: float
    last_beat: float


class Heartbeat:
    """Liveness bookkeeping: components beat, the watchdog asks who went silent.

    Pure state with an injectable clock, so tests drive time by hand. A component counts
    as alive from the moment it is registered.
    """

    def __init__(self, *, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._components: dict[str, _Component] = {}

    def register(self, name: str, max_silence: float) -> None:
        """Track `name`; it must beat at least every `max_silence` seconds from now on."""
        if max_silence <= 0:
            raise ValueError(f"max_silence for {name!r} must be positive, got {max_silence}")
        self._components[name] = _Component(max_silence, self._clock())

    def unregister(self, name: str) -> None:
        """Stop tracking `name` (a bus removed by a reload); unknown names are ignored."""
        self._components.pop(name, None)

    def beat(self, name: str) -> None:
        """`name` made progress just now."""
        try:
            self._components[name].last_beat = self._clock()
        except KeyError:
            raise KeyError(f"heartbeat component {name!r} was never registered") from None

    @property
    def components(self) -> tuple[str, ...]:
        """Registered component names, in registration order."""
        return tuple(self._components)

    def stale(self, now: float | None = None) -> list[str]:
        """Components silent for longer than they are allowed, in registration order."""
        at = self._clock() if now is None else now
        return [
            name
            for name, component in self._components.items()
            if at - component.last_beat > component.max_silence
        ]


@dataclass(frozen=True)
class WatchdogVerdict:
    """Whether one watchdog tick may ping, and if not, why."""

    stale: tuple[str, ...] = ()
    loop_lag: float | None = None  # seconds the loop woke us late, when over the limit

    @property
    def healthy(self) -> bool:
        """True when the ping may be sent."""
        return not self.stale and self.loop_lag is None

    def reason(self) -> str:
        """A short explanation for the log when the ping is withheld."""
        parts = []
        if self.stale:
            parts.append("silent components: " + ", ".join(self.stale))
        if self.loop_lag is not None:
            parts.append(f"event loop stalled {self.loop_lag:.1f}s")
        return "; ".join(parts) or "healthy"


class WatchdogPinger:
    """Sends `WATCHDOG=1` every `interval / 2` while the heartbeat says all is alive.

    The loop-responsiveness check: each tick knows when it should have woken; waking more
    than `max_loop_lag` (default a quarter of the interval) late means something blocked the
    event loop, and that tick withholds its ping. A loop blocked for good sends nothing at all.
    """

    def __init__(
        self,
        notifier: Notifier,
        heartbeat: Heartbeat,
        interval: float,
        *,
        max_loop_lag: float | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        if interval <= 0:
            raise ValueError(f"watchdog interval must be positive, got {interval}")
        self.notifier = notifier
        self.heartbeat = heartbeat
        self.period = interval / 2
        self.max_loop_lag = interval / 4 if max_loop_lag is None else max_loop_lag
        self._clock = clock
        self._edge = Episodes(log)
        self.pings = 0  #: pings sent so far
        self.withheld = 0  #: ticks that withheld their ping
        self.last_verdict: WatchdogVerdict | None = None

    def verdict(self, now: float, scheduled: float) -> WatchdogVerdict:
        """Judge one tick that was due at `scheduled` and runs at `now` (pure)."""
        lag = now - scheduled
        return WatchdogVerdict(
            stale=tuple(self.heartbeat.stale(now)),
            loop_lag=lag if lag > self.max_loop_lag else None,
        )

    def tick(self, now: float, scheduled: float) -> WatchdogVerdict:
        """Judge one tick and ping when healthy; logs once per unhealthy spell."""
        verdict = self.verdict(now, scheduled)
        self.last_verdict = verdict
        if verdict.healthy:
            self.notifier.watchdog()
            self.pings += 1
            self._edge.ok("watchdog", "watchdog pings resumed")
        else:
            self.withheld += 1
            self._edge.failed(
                "watchdog", "watchdog ping withheld", reason=verdict.reason(), level="error"
            )
        return verdict

    async def run(self) -> None:
        """Tick forever (cancel to stop); the first ping goes out right away."""
        scheduled = self._clock()
        while True:
            self.tick(self._clock(), scheduled)
            scheduled = self._clock() + self.period
            await asyncio.sleep(self.period)
