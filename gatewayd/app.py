"""`gatewayd run`: acquisition → spool → uplink in one asyncio TaskGroup.

    bus pollers ──CycleResult──► spool writer ──append──► SQLite spool ──take/ack──► uplink
    (one task per bus)  bounded queue   (one commit per cycle)                 (one MQTT session)

The spool writer is the only path to the cloud: a sample reaches EnOS only after it was
committed. systemd hears READY once the spool is open and the pollers are scheduled,
STATUS every few seconds, WATCHDOG while every bus task and the writer are alive, STOPPING
on SIGTERM and RELOADING on SIGHUP (the new config is validated fully first; a bad one
keeps the old one running).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import signal
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import structlog

from gatewayd.clock import Clock, SystemClock
from gatewayd.config.errors import ConfigError
from gatewayd.config.loader import load_config
from gatewayd.config.models import Config
from gatewayd.enos.connect_history import FILE_NAME as CONNECTS_FILE
from gatewayd.enos.connect_history import ConnectHistoryFile, channel_connects_file
from gatewayd.enos.messages import CommandKind
from gatewayd.enos.reconnect import ReconnectPolicy
from gatewayd.logging import register_secret
from gatewayd.mapping.captures import Captures, capture_dir
from gatewayd.mapping.decoding import SharedDecoders
from gatewayd.mapping.muting import Muting
from gatewayd.mapping.report import Resend
from gatewayd.modbus.cyclequeue import CycleQueue
from gatewayd.modbus.layout import Layouts
from gatewayd.modbus.poller import BusPoller, CycleResult
from gatewayd.modbus.supervisor import BusSupervisor
from gatewayd.samples import Event
from gatewayd.spool.worker import Spool
from gatewayd.statusfile import StatusFile
from gatewayd.systemd import Heartbeat, Notifier, WatchdogPinger
from gatewayd.uplink.attributes import FILE_NAME as ATTRIBUTES_FILE
from gatewayd.uplink.frames import EnosQuality
from gatewayd.uplink.registration import DIRECTORY as REGISTERED_DIR
from gatewayd.uplink.registration import RegistrationStore
from gatewayd.uplink.sentstate import SentState
from gatewayd.uplink.subdevices import SubDevice, SubDeviceRegistry
from gatewayd.uplink.tags import FILE_NAME as TAGS_FILE
from gatewayd.uplink.uplink import CommandHandler, Uplink

log = structlog.get_logger(__name__)

#: Poll cycles waiting for the spool writer before pollers wait too (backpressure).
RESULT_QUEUE_SIZE = 64
#: ... and at most this many samples in them (about 10 MiB): a slow disk holds pollers back.
RESULT_QUEUE_POINTS = 250_000
STATUS_INTERVAL_S = 5.0
#: A bus task or the writer silent this long means it hangs: withhold the watchdog ping.
HEARTBEAT_SILENCE_S = 30.0
STATUS_FILE = "status.json"
SECRET_FILE = "gateway.secret"  # noqa: S105 (a file name, not a secret)

#: Builds the cloud-command handler; it reads `daemon.config` and `daemon.pollers` at call
#: time, so a reload (new config, new pollers) is picked up without rebuilding it.
CommandFactory = Callable[["Daemon"], CommandHandler]


def state_dir(config: Config) -> Path:
    """Where the daemon keeps its state files: next to the spool."""
    return config.spool.path.parent


def register_secrets(config: Config) -> None:
    """Every configured secret is masked in every log line."""
    register_secret(config.gateway.device_secret)
    register_secret(config.gateway.product_secret)
    for device in config.devices:
        register_secret(device.device_secret)
    if config.integration.http is not None:
        register_secret(config.integration.http.secret_key)


@dataclass
class StatusReport:
    """The one-line summary for systemd and the detail for `gatewayd status`."""

    pid: int
    updated_ms: int
    uplink: str
    devices_up: int
    devices_total: int
    points_per_second: float
    backlog_rows: int
    dead_letters: int
    dropped_rows: int
    delivered_points: int
    devices: list[dict[str, Any]] = field(default_factory=list)
    last_error: str = ""
    #: Per device: measurepoints its product's cloud model lacks (not sent).
    withheld: dict[str, list[str]] = field(default_factory=dict)
    #: The integration channels' counters (`historical_events: integration`), else None.
    historical_events: dict[str, int] | None = None
    #: File events: pending, dead letters, dropped, delivered, retries (with integration.http).
    file_events: dict[str, int] | None = None

    def line(self) -> str:
        return (
            f"devices {self.devices_up}/{self.devices_total} up, "
            f"{self.points_per_second:.0f} points/s, backlog {self.backlog_rows} rows, "
            f"uplink {self.uplink}"
        )


class Daemon:
    """The running gateway: owns the spool, the pollers and the uplink."""

    def __init__(
        self,
        config_path: Path,
        config: Config,
        *,
        clock: Clock | None = None,
        notifier: Notifier | None = None,
        commands: CommandFactory | None = None,
        observer: Callable[[CycleResult], None] | None = None,
        reconnect: ReconnectPolicy | None = None,
        channel_reconnect: Callable[[], ReconnectPolicy] | None = None,
    ) -> None:
        """`observer` sees every poll cycle as it is committed (tests, the demo);
        `reconnect` replaces the EnOS reconnect schedule (tests with a private broker),
        `channel_reconnect` makes the integration channels' ones."""
        self.config_path = config_path
        self.config = config
        self.clock = clock or SystemClock()
        self.notifier = notifier or Notifier()
        self.heartbeat = Heartbeat()
        self.results: asyncio.Queue[CycleResult] = CycleQueue(
            RESULT_QUEUE_SIZE, RESULT_QUEUE_POINTS
        )
        self.pollers: dict[str, BusPoller] = {}
        self.supervisors: dict[str, BusSupervisor] = {}
        #: Devices the cloud disabled or deleted: the mapping stage withholds their output.
        #: The daemon's, not a poller's, so a reload (new pollers) keeps it.
        self.muting = Muting()
        #: "Send the next reading" for the report filters (a reload's pollers share it).
        self.resend = Resend()
        #: The spool's loss counters at the last commit (dropped, dead-lettered, unsendable).
        self._losses: tuple[int, int, int] | None = None
        self._filtering = _reports_on_change(config)
        self._poller_tasks: dict[str, asyncio.Task[None]] = {}
        self._commands = commands
        self._observer = observer
        self._reconnect = reconnect
        self._channel_reconnect = channel_reconnect
        self._stop = asyncio.Event()
        self._reload = asyncio.Event()
        self.spool: Spool | None = None
        self.uplink: Uplink | None = None
        #: Capture rules: the devices' rings and running captures, and their file writer.
        self.captures: Captures | None = None
        #: The file events' counts for the status file (None until their task runs).
        self._file_events_status: Callable[[], dict[str, int] | None] = lambda: None
        self.ready = asyncio.Event()

    # ------------------------------------------------------------------ lifecycle

    def request_stop(self) -> None:
        self._stop.set()

    def request_reload(self) -> None:
        self._reload.set()

    async def run(self) -> int:
        """Run until SIGTERM/SIGINT; returns the exit status."""
        loop = asyncio.get_running_loop()
        for signum, handler in (
            (signal.SIGTERM, self.request_stop),
            (signal.SIGINT, self.request_stop),
            (signal.SIGHUP, self.request_reload),
        ):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signum, handler)
        register_secrets(self.config)
        shapes = EnosQuality.from_config(self.config)
        self.spool = await Spool.open(self.config.spool, shapes=shapes)
        self.captures = Captures(
            capture_dir(self.config),
            self.config,
            clock=self.clock,
            on_unwritten=self._capture_unwritten,
        )
        try:
            await self.captures.recover()
            await self._run_pipeline(self.spool)
        finally:
            await self.spool.close()
            log.info("gatewayd stopped")
        return 0

    async def _run_pipeline(self, spool: Spool) -> None:
        self.uplink = self._make_uplink(spool)
        async with asyncio.TaskGroup() as group:
            uplink_task = group.create_task(self.uplink.run(), name="uplink")
            self.heartbeat.register("spool-writer", HEARTBEAT_SILENCE_S)
            writer = group.create_task(self._spool_writer(spool), name="spool-writer")
            captures = group.create_task(self._captures().run(), name="captures")
            self._start_pollers(self.config)
            status = group.create_task(self._status_loop(spool), name="status")
            files = self._start_file_events(group)
            watchdog = self._start_watchdog(group)
            self.notifier.ready()
            self.ready.set()
            log.info(
                "gatewayd running",
                buses=len(self.pollers),
                devices=sum(len(p.devices) for p in self.pollers.values()),
            )
            await self._serve_signals(spool)
            # Shutdown: stop acquiring, commit what was acquired, then let the uplink go.
            self.notifier.stopping()
            log.info("stopping: flushing the spool")
            await self._stop_pollers()
            writer.cancel()
            await asyncio.wait({writer})  # never raises: a cancel of run() itself still ends it
            await self._flush_results(spool)
            self._captures().stop()
            await asyncio.wait({captures})
            await self._captures().close()
            for task in (status, uplink_task, watchdog, files):
                if task is not None:
                    task.cancel()

    async def _serve_signals(self, spool: Spool) -> None:
        while not self._stop.is_set():
            stop = asyncio.create_task(self._stop.wait())
            reload = asyncio.create_task(self._reload.wait())
            await asyncio.wait({stop, reload}, return_when=asyncio.FIRST_COMPLETED)
            stop.cancel()
            reload.cancel()
            if self._reload.is_set() and not self._stop.is_set():
                self._reload.clear()
                await self._apply_reload(spool)

    def _start_file_events(self, group: asyncio.TaskGroup) -> asyncio.Task[None] | None:
        """File events (outbox, captures, uploads): only with integration.http, which loads
        httpx; their own task, so an upload never holds back measurepoints."""
        if self.config.integration.http is None:
            return None
        from gatewayd.integration.filetask import (  # noqa: PLC0415
            FileEventsView,
            run_file_events,
        )

        view = FileEventsView()
        self._file_events_status = view.snapshot
        files = run_file_events(self.config, self.clock, lambda: self.config, view)
        return group.create_task(files, name="file-events")

    def _start_watchdog(self, group: asyncio.TaskGroup) -> asyncio.Task[None] | None:
        interval = self.notifier.watchdog_interval()
        if interval is None:
            return None
        pinger = WatchdogPinger(self.notifier, self.heartbeat, interval)
        return group.create_task(pinger.run(), name="watchdog")

    # ------------------------------------------------------------------ pipeline

    def _make_uplink(self, spool: Spool) -> Uplink:
        registry = SubDeviceRegistry.from_config(self.config)
        uplink = Uplink(
            self.config,
            spool,
            registry,
            clock=self.clock,
            commands=self._command_handler(),
            on_lifecycle=self._on_lifecycle,
            secret_path=state_dir(self.config) / SECRET_FILE,
            policy=self._reconnect,
            connect_history=ConnectHistoryFile(state_dir(self.config) / CONNECTS_FILE),
            attributes=(SentState(state_dir(self.config) / ATTRIBUTES_FILE), self._read_attributes),
            tags=SentState(state_dir(self.config) / TAGS_FILE),
            registrations=RegistrationStore(state_dir(self.config) / REGISTERED_DIR),
            on_secret=register_secret,
            channel_policy=self._channel_reconnect,
            channel_history=lambda pk: ConnectHistoryFile(
                state_dir(self.config) / channel_connects_file(pk)
            ),
        )
        uplink.on_session = self.resend.all
        return uplink

    async def _read_attributes(self, device: str) -> tuple[dict[str, Any], dict[str, str]]:
        """Read `device`'s register attributes on its bus task, between two polls."""
        config = next((d for d in self.config.devices if d.name == device), None)
        if config is None or (poller := self.pollers.get(config.bus)) is None:
            raise LookupError(f"device {device!r} is not polled")
        return await poller.execute(device, lambda handle: handle.read_attributes())

    def _command_handler(self) -> CommandHandler | None:
        if self._commands is None:
            return None
        return self._commands(self)

    def _start_pollers(self, config: Config) -> None:
        # Each model's tables are compiled once and shared by its devices on every bus.
        layouts = Layouts()
        decoders = SharedDecoders()  # and their compiled decoders, on the mapping side
        for bus in config.buses:
            devices = [d for d in config.devices if d.bus == bus.name]
            if not devices:
                continue
            name = f"bus:{bus.name}"
            self.heartbeat.register(name, HEARTBEAT_SILENCE_S)
            beat = functools.partial(self.heartbeat.beat, name)
            poller = BusPoller(
                bus,
                devices,
                config.models,
                self.results,
                clock=self.clock,
                heartbeat=beat,
                muting=self.muting,
                resend=self.resend,
                captures=self._captures().hook,
                layouts=layouts,
                decoders=decoders,
            )
            # A bus task that crashes is restarted by the daemon, with the bus backoff.
            supervisor = BusSupervisor(poller, self.clock, heartbeat=beat)
            poller.on_cycle = supervisor.cycle_done
            self.pollers[bus.name] = poller
            self.supervisors[bus.name] = supervisor
            task = asyncio.create_task(supervisor.run(), name=name)
            task.add_done_callback(_report_crash)
            self._poller_tasks[bus.name] = task

    async def _stop_pollers(self) -> None:
        tasks = list(self._poller_tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for name in self.pollers:
            self.heartbeat.unregister(f"bus:{name}")
        self._poller_tasks.clear()
        self.pollers.clear()
        self.supervisors.clear()

    async def _spool_writer(self, spool: Spool) -> None:
        while True:
            try:
                # asyncio.timeout, not wait_for: wait_for can swallow a cancellation on 3.11.
                async with asyncio.timeout(1.0):
                    result = await self.results.get()
            except TimeoutError:
                self.heartbeat.beat("spool-writer")
                continue
            await self._commit(spool, result)
            self.heartbeat.beat("spool-writer")

    async def _commit(self, spool: Spool, result: CycleResult) -> None:
        # Muted devices' output never reaches here: the mapping stage withheld it.
        samples, blocks, events = result.point_samples, result.blocks, result.events
        if samples or blocks or events:
            await spool.append(samples, events, int(self.clock.time() * 1000), blocks)
            if self._filtering:
                await self._check_losses(spool)
            if self._observer is not None:
                self._observer(result)
            if self.uplink is not None:
                self.uplink.notify_new_data()

    async def _check_losses(self, spool: Spool) -> None:
        """A value the spool dropped (cap, full disk) or dead-lettered never reaches the
        cloud: every report filter then sends its next readings, so no point stays stale
        in the cloud while the filter believes its value was sent."""
        counts = await spool.counts()
        losses = (counts.dropped_samples, counts.dead_letters, counts.unsendable_samples)
        if self._losses is not None and losses != self._losses:
            self.resend.all()
        self._losses = losses

    def _captures(self) -> Captures:
        assert self.captures is not None, "made when the spool opens"
        return self.captures

    async def _capture_unwritten(self, event: Event) -> None:
        """A capture whose file could not be started: its event goes without the file."""
        if self.spool is not None:
            await self.spool.append([], [event], int(self.clock.time() * 1000))
        if self.uplink is not None:
            self.uplink.notify_new_data()

    async def _flush_results(self, spool: Spool) -> None:
        while not self.results.empty():
            await self._commit(spool, self.results.get_nowait())

    def _on_lifecycle(self, device: str, kind: CommandKind) -> None:
        if kind is CommandKind.COMBINE_ENABLE:
            # Whatever the cloud held of the device before it was disabled, the next
            # readings of all its points go.
            self.resend.device(device)
        config = next((d for d in self.config.devices if d.name == device), None)
        if config is None or (poller := self.pollers.get(config.bus)) is None:
            return
        if kind is CommandKind.COMBINE_ENABLE:
            self.muting.enable(device)
            poller.set_polling(device, True)
        else:
            if kind is CommandKind.COMBINE_DISABLE:
                self.muting.disable(device)
            else:
                self.muting.delete(device)
            keep = kind is CommandKind.COMBINE_DISABLE and config.poll_when_disabled
            poller.set_polling(device, keep)

    # ------------------------------------------------------------------ reload

    async def _apply_reload(self, spool: Spool) -> None:
        self.notifier.reloading()
        log.info("reloading configuration", path=str(self.config_path))
        try:
            new = await asyncio.to_thread(load_config, self.config_path)
        except ConfigError as exc:
            for line in exc.render().splitlines():
                log.error("reload refused: invalid configuration", error=line)
            self.notifier.ready()
            return
        except OSError as exc:
            log.error("reload refused: cannot read configuration", error=str(exc))
            self.notifier.ready()
            return
        register_secrets(new)
        old = self.config
        self.config = new
        self._filtering = _reports_on_change(new)
        await self._stop_pollers()
        self._captures().configure(new)
        self._start_pollers(new)
        if self.uplink is not None:
            registry = self.uplink.registry
            for sub in SubDeviceRegistry.from_config(new):
                current = registry.get(sub.name)
                if current is None or current.keys != sub.keys or current.secret != sub.secret:
                    registry.add(SubDevice(sub.name, *sub.keys, sub.secret))
                    # A new sub-device to the cloud: what the cloud said of the old one
                    # no longer holds.
                    self.muting.forget([sub.name])
            for name in [d.name for d in registry]:
                if not any(d.name == name and d.enabled for d in new.devices):
                    registry.remove(name)
                    self.muting.forget([name])
            self.uplink.reconfigure(new)
        # Frames are shaped when written: later cycles follow the new quality settings.
        await spool.set_shapes(EnosQuality.from_config(new))
        if changed := restart_needed(old, new):
            log.warning("a reload cannot apply these changes: restart gatewayd", keys=changed)
        self.notifier.ready()
        log.info("configuration reloaded", buses=len(self.pollers))

    # ------------------------------------------------------------------ status

    async def report(self, spool: Spool) -> StatusReport:
        counts = await spool.counts()
        devices = [
            {
                **asdict(state),
                "state": str(state.state),
                "polled_per_minute": rates.get(state.device, (0, 0))[0],
                "sent_per_minute": rates.get(state.device, (0, 0))[1],
            }
            for poller in self.pollers.values()
            for rates in (poller.report_rates(),)
            for state in poller.device_states().values()
        ]
        uplink = self.uplink
        now_ms = int(self.clock.time() * 1000)
        return StatusReport(
            pid=os.getpid(),
            updated_ms=now_ms,
            uplink=uplink.status.describe(now_ms) if uplink else "starting",
            devices_up=sum(1 for d in devices if d["state"] == "up"),
            devices_total=len(devices),
            points_per_second=sum(float(d["points_per_second"]) for d in devices),
            backlog_rows=counts.samples + counts.events,
            dead_letters=counts.dead_letters,
            dropped_rows=counts.dropped_samples + counts.dropped_events,
            delivered_points=(uplink.stats.live_points + uplink.stats.backlog_points)
            if uplink
            else 0,
            devices=devices,
            last_error=uplink.status.last_error if uplink else "",
            withheld={
                name: sorted(points)
                for name, points in (uplink.model_check.withheld if uplink else {}).items()
                if points
            },
            historical_events=_channel_counts(uplink),
            file_events=self._file_events_status(),
        )

    async def _status_loop(self, spool: Spool) -> None:
        status_file = StatusFile(state_dir(self.config) / STATUS_FILE)
        while True:
            report = await self.report(spool)
            self.notifier.status(report.line())
            # Write errors are logged once per episode (StatusFile), never raised.
            await asyncio.to_thread(status_file.write, json.dumps(asdict(report), default=str))
            await self.clock.sleep(STATUS_INTERVAL_S)


def restart_needed(old: Config, new: Config) -> list[str]:
    """The keys a reload changed that only a restart applies: the MQTT session's identity,
    the spool file, the integration channels and stores, the events' route."""
    return [
        key
        for key, before, after in (
            ("gateway", old.gateway, new.gateway),
            ("spool", old.spool, new.spool),
            ("integration", old.integration, new.integration),
            (
                "uplink.historical_events",
                old.uplink.historical_events,
                new.uplink.historical_events,
            ),
        )
        if before != after
    ]


def _channel_counts(uplink: Uplink | None) -> dict[str, int] | None:
    """The integration channels' counters for the status file (None: not in use)."""
    if uplink is None or uplink.historical is None:
        return None
    stats = uplink.historical.stats
    return {
        "events": stats.events,
        "messages": stats.messages,
        "dead_lettered": stats.dead_lettered,
        "timeouts": stats.timeouts,
        "connects": stats.connects,
        "refused_connects": stats.refused_connects,
    }


def _reports_on_change(config: Config) -> bool:
    """Whether any point of the site may report on change (else nothing is filtered)."""
    return any(
        d.report is not None or d.point_reports for d in config.devices
    ) or any(
        m.report is not None or any(p.report is not None for p in m.points)
        for m in config.models.values()
    )


def _report_crash(task: asyncio.Task[None]) -> None:
    """A supervised bus task never ends by itself (crashes are restarted); if it still does,
    say so loudly. Its heartbeat stops, so the systemd watchdog restarts the daemon; the
    spool keeps everything already read."""
    if not task.cancelled() and (error := task.exception()) is not None:
        log.error("bus task crashed", task=task.get_name(), error=repr(error), exc_info=error)
