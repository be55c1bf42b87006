"""Runs the demo: simulated plant, EnOS emulator and the real daemon in one asyncio process.

Start order: socat pty pair (when socat exists) → EnOS emulator (MQTT, and its HTTP
integration side on a thread) → device simulators → the daemon (`gatewayd.app.Daemon`,
in-process). Then, once a second, the runner reads what the cloud received and what the
daemon reports, and prints a table (or a line). With an outage planned, a task stops the
emulator's MQTT side for that long and starts it again: the daemon sees a real broker
loss, backs off, keeps committing to its spool, reconnects and backfills. A few seconds
after the daemon is ready the inverter trips once (`site.TRIP`): its captured event goes
with a CSV file over the HTTP integration, and the table shows it once the cloud has it.

Stop (SIGINT, SIGTERM, or `--duration` elapsed): polling pauses, the backlog gets a few
seconds to reach the cloud, then the daemon stops (it commits what it holds), then the
simulators, the emulator and socat. A second signal skips the wait. The summary compares
what the daemon committed with what the cloud received.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import tempfile
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from gatewayd.app import Daemon, StatusReport
from gatewayd.config.loader import load_config
from gatewayd.config.models import Config, LogFormat, LogLevel
from gatewayd.logging import configure_logging
from gatewayd.sim.demo.files import (
    file_events_left,
    save_stored_files,
    stored_file_events,
)
from gatewayd.sim.demo.nameplate import write_nameplates
from gatewayd.sim.demo.registered import registered_devices
from gatewayd.sim.demo.render import (
    CLEAR_HOME,
    DeviceRow,
    Snapshot,
    render_line,
    render_summary,
    render_table,
)
from gatewayd.sim.demo.serial import SocatPair, socat_path
from gatewayd.sim.demo.site import METER_BUS, PLANT_BUS, TRIP, SiteFiles, write_site
from gatewayd.sim.demo.tally import (
    CloudTally,
    Ledger,
    OutageTimeline,
    ReconnectCountdown,
    account,
)
from gatewayd.sim.demo.trip import hold_normal, trip_once
from gatewayd.sim.device import DeviceSimulator
from gatewayd.sim.emulator import EmulatorConfig, EnosEmulator
from gatewayd.sim.emulator.http_cloud import IntegrationCloud, IntegrationSpec
from gatewayd.sim.emulator.http_server import IntegrationHttpServer
from gatewayd.spool.worker import Spool
from gatewayd.systemd import Notifier

__all__ = ["DemoOptions", "DemoRunner"]

#: How long the stop waits for the backlog to reach the cloud before stopping anyway.
DRAIN_TIMEOUT_S = 5.0
_DRAIN_CHECK_S = 0.1
_DAEMON_START_TIMEOUT_S = 30.0
#: Where the files the cloud stored are written at the end (kept with `--keep`).
CLOUD_FILES = "cloud-files"


@dataclass(frozen=True, slots=True)
class DemoOptions:
    """What `gatewayd demo` was asked to do (seconds)."""

    duration: float | None = None  # None: until SIGINT/SIGTERM
    outage: float | None = None  # None: no uplink cut
    outage_after: float = 10.0
    refresh: float = 1.0
    json: bool = False
    keep: bool = False  # keep the scratch directory (site, spool, log)
    use_socat: bool = True


class WarningCounter(logging.Handler):
    """Counts WARNING-and-above log records and keeps the last one's text (for the footer)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0
        self.last: deque[str] = deque(maxlen=1)

    def emit(self, record: logging.LogRecord) -> None:
        """Note one record (structlog's records carry their event dict as `msg`)."""
        self.count += 1
        message = record.msg.get("event", "") if isinstance(record.msg, dict) else None
        self.last.append(str(message) if message is not None else record.getMessage())


@dataclass(frozen=True, slots=True)
class _Watch:
    """The running parts the refresh loop looks at."""

    config: Config
    daemon: Daemon
    daemon_task: asyncio.Task[int]
    emulator: EnosEmulator
    cloud: IntegrationCloud
    tally: CloudTally
    timeline: OutageTimeline | None
    links: dict[str, str]


class DemoRunner:
    """One run of the demo; `run()` returns the exit status."""

    def __init__(
        self, options: DemoOptions, out: TextIO, *, tty: bool, width: Callable[[], int]
    ) -> None:
        """`out` gets the table (`tty`: redrawn in place, `width()` columns) or lines."""
        self.options = options
        self.out = out
        self.tty = tty
        self.width = width
        self.summary: dict[str, Any] = {}
        self._stop = asyncio.Event()
        self._hurry = asyncio.Event()
        self._warnings = WarningCounter()
        self._t0 = 0.0
        self._summary_text = ""
        self._countdown = ReconnectCountdown()

    # ------------------------------------------------------------------ lifecycle

    def now(self) -> float:
        """Seconds since the demo started."""
        return asyncio.get_running_loop().time() - self._t0

    def request_stop(self) -> None:
        """First call: stop after a short drain; second call: stop without waiting."""
        if self._stop.is_set():
            self._hurry.set()
        self._stop.set()

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self.request_stop)

    async def run(self) -> int:
        """Build the site, run everything, print the summary; 0 when nothing was lost."""
        self._t0 = asyncio.get_running_loop().time()
        self._install_signals()
        root = Path(tempfile.mkdtemp(prefix="gatewayd-demo-"))
        try:
            with (root / "gatewayd.log").open("w", encoding="utf-8") as log_file:
                configure_logging(LogLevel.INFO, LogFormat.CONSOLE, stream=log_file)
                logging.getLogger().addHandler(self._warnings)
                try:
                    return await self._run_site(root)
                finally:
                    logging.getLogger().removeHandler(self._warnings)
        finally:
            if self.options.keep:
                self._say(f"Site, spool, log and the files the cloud stored kept in {root}")
            else:
                shutil.rmtree(root, ignore_errors=True)

    async def _run_site(self, root: Path) -> int:
        async with contextlib.AsyncExitStack() as stack:
            socat: SocatPair | None = None
            executable = socat_path() if self.options.use_socat else None
            if executable is not None:
                socat = SocatPair(root, executable)
                await socat.start()
                stack.push_async_callback(socat.stop)
                meter_link = "on Modbus RTU over a socat pty pair"
            elif self.options.use_socat:
                meter_link = "on RTU over TCP: socat is not installed"
            else:
                meter_link = "on RTU over TCP"
            site = write_site(root, meter_serial=socat.a if socat else None)
            self._say(f"gatewayd demo: site in {root}, meters {meter_link}; starting ...")
            config = load_config(site.config_path)
            cloud_config = EmulatorConfig.from_gateway_config(config)
            emulator = EnosEmulator(cloud_config, port=site.mqtt_port)
            await emulator.start()
            stack.push_async_callback(emulator.stop)  # a no-op while an outage has it down
            # The HTTP side knows the devices the gateway registers over MQTT (the inverter).
            cloud = IntegrationCloud(
                IntegrationSpec.from_emulator_config(cloud_config), state=emulator.state
            )
            http = IntegrationHttpServer(cloud, port=site.http_port)
            http.start()
            stack.callback(http.stop)
            stack.callback(save_stored_files, cloud, root / CLOUD_FILES)
            plant = DeviceSimulator.from_config(config, PLANT_BUS)
            await stack.enter_async_context(plant)
            hold_normal(plant, config, TRIP)
            meters = DeviceSimulator.from_config(
                config, METER_BUS, serial_port=socat.b if socat else None
            )
            await stack.enter_async_context(meters)
            # Before the daemon starts: its first attribute pass reads the nameplates.
            write_nameplates(plant, config, PLANT_BUS)
            write_nameplates(meters, config, METER_BUS)
            # Leaving the stack stops simulators, then the emulator, then socat.
            status = await self._run_daemon(
                site, config, emulator=emulator, cloud=cloud, plant=plant, meter_link=meter_link
            )
        self._finish()
        return status

    async def _run_daemon(
        self,
        site: SiteFiles,
        config: Config,
        *,
        emulator: EnosEmulator,
        cloud: IntegrationCloud,
        plant: DeviceSimulator,
        meter_link: str,
    ) -> int:
        ledger = Ledger({d.name: d.device_key for d in config.devices})
        tally = CloudTally(((d.name, d.device_key) for d in config.devices), started=self.now())
        links = {
            d.name: ("tcp" if d.bus == PLANT_BUS else "rtu pty" if site.meter_serial else "rtu/tcp")
            for d in config.devices
        }
        timeline = (
            OutageTimeline(self.options.outage_after, self.options.outage)
            if self.options.outage is not None
            else None
        )
        daemon = Daemon(
            site.config_path, config, notifier=Notifier(environ={}), observer=ledger.observe
        )
        async with asyncio.TaskGroup() as group:
            daemon_task = group.create_task(daemon.run(), name="daemon")
            ready = group.create_task(daemon.ready.wait(), name="daemon-ready")
            await asyncio.wait(
                {daemon_task, ready},
                timeout=_DAEMON_START_TIMEOUT_S,
                return_when=asyncio.FIRST_COMPLETED,
            )
            ready.cancel()
            # The daemon installed its own SIGINT/SIGTERM handlers: the demo must own them,
            # so that the daemon is stopped last-in-first-out with everything else.
            self._install_signals()
            trip = group.create_task(trip_once(plant, config, TRIP), name="trip")
            outage = (
                group.create_task(self._cut_uplink(emulator, timeline), name="outage")
                if timeline is not None
                else None
            )
            watch = _Watch(config, daemon, daemon_task, emulator, cloud, tally, timeline, links)
            last = await self._show_until_stop(watch)
            trip.cancel()
            if outage is not None:
                outage.cancel()
            if not daemon_task.done():
                await self._drain(daemon, config)
                daemon.request_stop()
            status = await daemon_task
        spool_samples, spool_events = await self._left_in_spool(config)
        file_events = stored_file_events(config, cloud)
        files_left = await asyncio.to_thread(file_events_left, config)
        tally.absorb(emulator.records, self.now())
        accounting = account(ledger, tally, spool_samples=spool_samples, spool_events=spool_events)
        registered = registered_devices(config, emulator.state)
        self.summary = {
            "elapsed_s": round(self.now(), 1),
            "meter_link": meter_link,
            "devices": {
                d.name: {"points": d.points, "post": d.post, "resume": d.resume, "events": d.events}
                for d in tally.devices
            },
            **asdict(accounting),
            "dead_letters": last.dead_letters if last else 0,
            "outage": asdict(timeline) if timeline is not None else None,
            "daemon_exit": status,
            "log_warnings": self._warnings.count,
            "registered": {d.name: d.to_json() for d in registered},
            "register_requests": emulator.stats.requests_by_method["thing.device.register"],
            "file_events": [event.to_json() for event in file_events],
            "file_events_left": files_left,
        }
        self._summary_text = render_summary(
            accounting,
            elapsed_s=self.now(),
            devices=len(config.devices),
            meter_link=meter_link,
            dead_letters=self.summary["dead_letters"],
            outage=timeline,
            registered=registered,
            file_events=file_events,
            file_events_left=files_left,
        )
        return 0 if status == 0 and accounting.lost == 0 else 1

    # ------------------------------------------------------------------ the show

    async def _show_until_stop(self, watch: _Watch) -> StatusReport | None:
        loop = asyncio.get_running_loop()
        tick = loop.time()
        last: StatusReport | None = None
        while not self._stop.is_set() and not watch.daemon_task.done():
            spool = watch.daemon.spool
            if spool is None:
                break
            now = self.now()
            watch.tally.absorb(watch.emulator.records, now)
            last = await watch.daemon.report(spool)
            if watch.timeline is not None:
                watch.timeline.observe(
                    now,
                    connected=last.uplink == "connected",
                    backlog=last.backlog_rows,
                    resume=watch.tally.resume,
                )
            self._show(self._snapshot(now, last, watch))
            if self.options.duration is not None and now >= self.options.duration:
                break
            tick += self.options.refresh
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), max(0.0, tick - loop.time()))
        return last

    def _snapshot(self, now: float, report: StatusReport, watch: _Watch) -> Snapshot:
        tally, timeline, links = watch.tally, watch.timeline, watch.links
        uplink = watch.daemon.uplink
        attempts = uplink.status.connects if uplink is not None else 0
        states = {str(d["device"]): str(d["state"]) for d in report.devices}
        rows = tuple(
            DeviceRow(
                name=d.name,
                link=links.get(d.name, "?"),
                state=states.get(d.name, "starting"),
                points_per_second=d.rate(now, tally.started),
                points=d.points,
                events=d.events,
                values=tuple(d.values.items()),
            )
            for d in tally.devices
        )
        return Snapshot(
            elapsed_s=now,
            devices=rows,
            post=tally.post,
            resume=tally.resume,
            events=tally.events,
            backlog_rows=report.backlog_rows,
            dead_letters=report.dead_letters,
            uplink=self._countdown.text(now, report.uplink, attempts),
            outage=timeline.describe(now) if timeline is not None else "",
            warnings=self._warnings.count,
            last_warning=self._warnings.last[-1] if self._warnings.last else "",
            registered=registered_devices(watch.config, watch.emulator.state),
            file_events=stored_file_events(watch.config, watch.cloud),
        )

    def _show(self, snapshot: Snapshot) -> None:
        if self.tty:
            self.out.write(CLEAR_HOME + render_table(snapshot, self.width()))
        else:
            self.out.write(render_line(snapshot) + "\n")
        self.out.flush()

    def _say(self, text: str) -> None:
        self.out.write(text + "\n")
        self.out.flush()

    async def _cut_uplink(self, emulator: EnosEmulator, timeline: OutageTimeline) -> None:
        """Take the cloud away for the planned time (a scheduled action, not a sync wait)."""
        await asyncio.sleep(max(0.0, timeline.after - self.now()))
        await emulator.stop()
        timeline.cut_at = self.now()
        await asyncio.sleep(timeline.duration)
        await emulator.start()
        timeline.restored_at = self.now()

    # ------------------------------------------------------------------ stopping

    async def _drain(self, daemon: Daemon, config: Config) -> None:
        """Pause polling and give the backlog a few seconds to reach the cloud: spooled
        rows, and file events committed or dropped by a finished capture (a capture still
        running is not waited for: with polling paused it would end only by its grace)."""
        for poller in list(daemon.pollers.values()):
            for name in poller.devices:
                poller.set_polling(name, False)
        uplink = daemon.uplink
        spool = daemon.spool
        if uplink is None or spool is None or uplink.status.state != "connected":
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + DRAIN_TIMEOUT_S
        while loop.time() < deadline and not self._hurry.is_set():
            counts = await spool.counts()
            spooled = counts.samples + counts.events
            if (
                daemon.results.empty()
                and spooled == 0
                and await asyncio.to_thread(file_events_left, config) == 0
            ):
                return
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._hurry.wait(), _DRAIN_CHECK_S)

    async def _left_in_spool(self, config: Config) -> tuple[int, int]:
        """(samples, events) rows the stopped daemon left for its next start."""
        async with await Spool.open(config.spool, check=False) as spool:
            counts = await spool.counts()
        return counts.samples, counts.events

    def _finish(self) -> None:
        if self.tty:
            self.out.write("\n")
        self._say(self._summary_text)
        if self.options.json:
            import json  # noqa: PLC0415 (only with --json)

            self._say(json.dumps(self.summary, sort_keys=True))
