"""What `gatewayd demo` prints, as pure functions of a snapshot: table, line, summary.

Nothing here reads a clock, a terminal or the running parts: the runner builds a
`Snapshot` once per refresh and chooses between `render_table` (a terminal: redrawn in
place) and `render_line` (a pipe or log: one plain line per refresh).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gatewayd.samples import Value
from gatewayd.sim.demo.files import StoredFileEvent
from gatewayd.sim.demo.registered import RegisteredDevice
from gatewayd.sim.demo.tally import Accounting, OutageTimeline

__all__ = [
    "CLEAR_HOME",
    "DeviceRow",
    "Snapshot",
    "format_value",
    "render_file_event",
    "render_line",
    "render_registered",
    "render_summary",
    "render_table",
]

#: ANSI: cursor home, then clear the screen (the table is redrawn in place).
CLEAR_HOME = "\x1b[H\x1b[2J"
_MIN_WIDTH = 40


@dataclass(frozen=True, slots=True)
class DeviceRow:
    """One device as the table shows it."""

    name: str
    link: str  # how the gateway reaches it: "tcp", "rtu pty", "rtu/tcp"
    state: str  # the poller's view: up, backoff, down, ...
    points_per_second: float  # arriving in the cloud
    points: int  # received by the cloud so far
    events: int
    values: tuple[tuple[str, Value], ...]  # latest values, in first-arrival order


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything one refresh shows."""

    elapsed_s: float
    devices: tuple[DeviceRow, ...]
    post: int
    resume: int
    events: int
    backlog_rows: int
    dead_letters: int
    uplink: str
    outage: str = ""  # the outage's phase in words, empty without --outage
    warnings: int = 0
    last_warning: str = ""
    registered: tuple[RegisteredDevice, ...] = ()  # devices the gateway registers itself
    file_events: tuple[StoredFileEvent, ...] = ()  # stored by the cloud's HTTP side


def format_value(value: Value) -> str:
    """A compact spelling: floats to 5 significant digits, bools as true/false."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:.5g}"
    return str(value)


def _clock(seconds: float) -> str:
    whole = int(seconds)
    return f"{whole // 3600:d}:{whole // 60 % 60:02d}:{whole % 60:02d}"


def _fit(line: str, width: int) -> str:
    return line if len(line) <= width else line[: max(0, width - 1)] + "…"


def _values_text(values: tuple[tuple[str, Value], ...], room: int) -> str:
    parts: list[str] = []
    used = 0
    for name, value in values:
        part = f"{name}={format_value(value)}"
        if used + len(part) > room and parts:
            break
        parts.append(part)
        used += len(part) + 1
    return " ".join(parts)


def _attributes_text(device: RegisteredDevice) -> str:
    return ", ".join(f"{name}={format_value(value)}" for name, value in device.attributes)


def render_registered(device: RegisteredDevice) -> str:
    """One sentence: a `register:` device as the cloud holds it (or that it does not yet)."""
    keys = f"{device.product_key}/{device.device_key}"
    if device.asset_id is None:
        return f"{device.name} ({keys}) is not registered in the cloud yet."
    text = f"The gateway registered {device.name} in the cloud as {keys}"
    text += f", asset id {device.asset_id}"
    text += ", bound to the gateway" if device.bound else ", not bound to the gateway yet"
    if not device.attributes:
        return text + "; the cloud holds no attributes for it yet."
    return text + f"; the cloud holds its attributes {_attributes_text(device)}."


def _file_event_line(event: StoredFileEvent) -> str:
    # The file name last: it is the longest and repeats device and event (cut if need be).
    md5 = f"md5 {event.md5[:8]} " + ("verified" if event.md5_verified else "NOT as declared")
    return (
        f"file    {event.event} of {event.device} · {event.size} B · {md5}"
        f" · realtime {'yes' if event.realtime else 'no'} · {event.filename}"
    )


def render_file_event(event: StoredFileEvent) -> str:
    """One sentence: a file event as the cloud stored it."""
    md5 = "the md5 the upload declared" if event.md5_verified else "NOT the md5 the upload declared"
    sent = "in real time" if event.realtime else "as backlog (isRealtimeIntegration false)"
    return (
        f"The cloud stored the file event {event.event} of {event.device} with "
        f"{event.param}={event.filename} ({event.size} bytes, md5 {event.md5}, {md5}), "
        f"sent {sent}."
    )


def render_table(snapshot: Snapshot, width: int = 100) -> str:
    """The live table for a terminal: header, one row per device, a status footer.

    Every line fits `width` columns (the last values are cut to what fits). The caller
    prefixes `CLEAR_HOME` to redraw in place.
    """
    width = max(width, _MIN_WIDTH)
    name_w = max([len("DEVICE"), *(len(d.name) for d in snapshot.devices)])
    link_w = max([len("LINK"), *(len(d.link) for d in snapshot.devices)])
    state_w = max([len("STATE"), *(len(d.state) for d in snapshot.devices)])
    head = (
        f"{'DEVICE':<{name_w}}  {'LINK':<{link_w}}  {'STATE':<{state_w}}  "
        f"{'PTS/S':>6}  {'POINTS':>7}  {'EVENTS':>6}  "
    )
    lines = [
        f"gatewayd demo  {_clock(snapshot.elapsed_s)}  "
        "Modbus simulator -> gatewayd -> EnOS emulator   (Ctrl-C stops)",
        "",
        head + "LAST VALUES (in the cloud)",
    ]
    for device in snapshot.devices:
        row = (
            f"{device.name:<{name_w}}  {device.link:<{link_w}}  {device.state:<{state_w}}  "
            f"{device.points_per_second:>6.1f}  {device.points:>7d}  {device.events:>6d}  "
        )
        lines.append(row + _values_text(device.values, width - len(row)))
    lines += [
        "",
        f"cloud   {snapshot.post} points live (post) · {snapshot.resume} backfilled "
        f"(resume) · {snapshot.events} events",
        f"spool   backlog {snapshot.backlog_rows} rows · dead letters {snapshot.dead_letters}",
        f"uplink  {snapshot.uplink}" + (f" · {snapshot.outage}" if snapshot.outage else ""),
    ]
    for new in snapshot.registered:
        state = f"registered, asset {new.asset_id}" if new.asset_id else "not registered yet"
        lines.append(
            f"device  {new.name} {state} · {len(new.attributes)} attributes in the cloud"
            + (f": {_attributes_text(new)}" if new.attributes else "")
        )
    lines += [_file_event_line(event) for event in snapshot.file_events] or [
        "file    no file event in the cloud yet"
    ]
    if snapshot.warnings:
        lines.append(f"log     {snapshot.warnings} warnings, last: {snapshot.last_warning}")
    return "\n".join(_fit(line, width) for line in lines) + "\n"


def render_line(snapshot: Snapshot) -> str:
    """One plain line per refresh (no ANSI), for pipes, CI logs and tests."""
    devices = " ".join(
        f"{d.name}={d.points_per_second:.1f}/s,{d.points}pts,{d.events}ev" for d in snapshot.devices
    )
    outage = f" [{snapshot.outage}]" if snapshot.outage else ""
    return (
        f"[{_clock(snapshot.elapsed_s)}] uplink={snapshot.uplink.replace(' ', '_')} "
        f"backlog={snapshot.backlog_rows} post={snapshot.post} resume={snapshot.resume} "
        f"events={snapshot.events} dead={snapshot.dead_letters} "
        f"files={len(snapshot.file_events)} | {devices}{outage}"
    )


def _outage_sentence(outage: OutageTimeline) -> str:
    if outage.cut_at is None:
        return "The planned uplink cut did not start before the demo ended."
    text = f"The uplink was cut at {outage.cut_at:.0f}s"
    if outage.restored_at is None:
        return text + " and was still down when the demo ended."
    text += f" for {outage.restored_at - outage.cut_at:.0f}s; the spool backlog peaked at "
    text += f"{outage.backlog_peak} rows"
    if outage.reconnected_at is None:
        return text + ", and the daemon had not reconnected yet when the demo ended."
    text += (
        f", the daemon reconnected {outage.reconnected_at - outage.restored_at:.0f}s after "
        "the cloud came back"
    )
    if outage.drained_at is None:
        return text + " and was still draining when the demo ended."
    return (
        text + f" and drained the backlog via resume in "
        f"{outage.drained_at - outage.reconnected_at:.0f}s."
    )


def render_summary(
    accounting: Accounting,
    *,
    elapsed_s: float,
    devices: int,
    meter_link: str,
    dead_letters: int,
    outage: OutageTimeline | None,
    registered: Sequence[RegisteredDevice] = (),
    file_events: Sequence[StoredFileEvent] = (),
    file_events_left: int = 0,
) -> str:
    """The closing paragraph: what was delivered, live and backfilled, and what was lost;
    then a sentence per device the gateway registered, with its attributes in the cloud,
    and one per file event the cloud stored (and how many the daemon still holds)."""
    text = (
        f"Ran {elapsed_s:.0f}s with {devices} devices (meters {meter_link}). "
        f"The cloud received {accounting.live} points live (post) and "
        f"{accounting.backfilled} backfilled (resume), and {accounting.events} events; "
        f"{dead_letters} dead letters, {accounting.duplicates} duplicates. "
    )
    if outage is not None:
        text += _outage_sentence(outage) + " "
    text += (
        f"The daemon committed {accounting.offered_samples} samples and "
        f"{accounting.offered_events} events: lost {accounting.lost}"
    )
    if accounting.in_spool:
        text += f" ({accounting.in_spool} rows kept in the spool for the next start)"
    text += "."
    for device in registered:
        text += " " + render_registered(device)
    for event in file_events:
        text += " " + render_file_event(event)
    if file_events_left:
        text += (
            f" {file_events_left} file event(s) were not uploaded before the stop "
            "(the daemon sends them at its next start)."
        )
    return text
