"""Logging for gatewayd: one structlog pipeline, three outputs, no secrets.

`configure_logging()` sets up structlog and the stdlib root logger together, so gatewayd's
own structured events and the libraries' stdlib records (pymodbus, paho, amqtt, asyncio)
take the same path: level filter -> context -> secret masking -> one renderer:

* console (`LogFormat.CONSOLE`): human-readable lines, coloured on a terminal;
* JSON lines (`LogFormat.JSON`): one object per line;
* journald (`LogFormat.JOURNALD`): native journal entries through systemd-python, with
  `DEVICE=`, `BUS=`, `UNIT_ID=`, `EVENT=`, `PRIORITY=`, `SYSLOG_IDENTIFIER=gatewayd` and
  every other key as an upper-case field, so `journalctl -u gatewayd DEVICE=meter-1` works.
  Without systemd-python it falls back to JSON lines on the stream.

`LogFormat.AUTO` picks journald when stderr is the journal stream systemd connected
(`$JOURNAL_STREAM`), console on a terminal, JSON otherwise.

Secrets: values of keys named like secret/password/token/sign/credential are replaced by
`***`, and so is every registered secret (`register_secret`) wherever it appears inside a
string value, on every renderer.

One warning per episode, one "recovered" line: `gatewayd.episodes.Episodes`.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Callable, Mapping
from typing import TextIO, cast

import structlog
from pydantic import SecretStr
from structlog.typing import EventDict, Processor, WrappedLogger

from gatewayd.config.models import LogFormat, LogLevel

MASK = "***"
SYSLOG_IDENTIFIER = "gatewayd"

#: Libraries whose stdlib logs join the pipeline at `library_level` (WARNING by default).
LIBRARY_LOGGERS: tuple[str, ...] = (
    "pymodbus",
    "paho",
    "aiomqtt",
    "amqtt",
    "transitions",
    "asyncio",
)

#: structlog keys with a well-known journald field name; the rest are upper-cased.
JOURNAL_FIELDS: Mapping[str, str] = {
    "device": "DEVICE",
    "bus": "BUS",
    "unit_id": "UNIT_ID",
    "event_id": "EVENT",
}

#: syslog priorities (journald's PRIORITY=) for structlog/stdlib level names.
PRIORITIES: Mapping[str, int] = {
    "critical": 2,
    "exception": 3,
    "error": 3,
    "warning": 4,
    "warn": 4,
    "info": 6,
    "debug": 7,
    "notset": 7,
}

# Key names whose values are secrets: deviceSecret, mqtt_password, access_token, sign, ...
_SECRET_KEY = re.compile(
    r"secret|passw(?:or)?d|token|credential|api_?key|(?:^|[_.\-])sign(?:$|[_.\-]|ature)",
    re.IGNORECASE,
)
# Registered secrets shorter than this are masked only when a value equals them: masking
# every "1" inside every message would make logs unreadable and protect nothing.
_MIN_SUBSTRING_SECRET = 4

# Keys that are bookkeeping, not content: never shown as fields.
_INTERNAL_KEYS = frozenset({"event", "level", "logger", "timestamp", "exception"})


class SecretRegistry:
    """The set of secret values that must never reach a log line."""

    def __init__(self) -> None:
        self._secrets: set[str] = set()

    def register(self, value: str | SecretStr | None) -> None:
        """Remember `value` (a configured password, device secret, ...) for masking."""
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if value:
            self._secrets.add(value)

    def clear(self) -> None:
        """Forget every registered secret (tests; a reload re-registers the new ones)."""
        self._secrets.clear()

    def mask_text(self, text: str) -> str:
        """`text` with every registered secret in it replaced by `***`."""
        if text in self._secrets:
            return MASK
        # Longest first, so a secret containing another one is masked whole.
        for secret in sorted(self._secrets, key=len, reverse=True):
            if len(secret) >= _MIN_SUBSTRING_SECRET and secret in text:
                text = text.replace(secret, MASK)
        return text

    def mask_value(self, key: str | None, value: object) -> object:
        """`value` masked by its key's name and by registered secrets, recursively."""
        if key is not None and _SECRET_KEY.search(key) and value not in (None, ""):
            return MASK
        if isinstance(value, SecretStr):
            return MASK
        if isinstance(value, str):
            return self.mask_text(value)
        if isinstance(value, Mapping):
            return {k: self.mask_value(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.mask_value(None, item) for item in value]
        if isinstance(value, bytes | bytearray):
            return self.mask_text(bytes(value).decode("utf-8", "backslashreplace"))
        return value

    def __call__(self, _logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
        """structlog processor: mask every value of the event dict."""
        for key, value in list(event_dict.items()):
            if not key.startswith("_"):
                event_dict[key] = self.mask_value(key if key != "event" else None, value)
        return event_dict


#: The process-wide registry the pipeline masks with.
SECRETS = SecretRegistry()


def register_secret(value: str | SecretStr | None) -> None:
    """Never log `value`; the daemon registers every configured secret at load time."""
    SECRETS.register(value)


def _journal_field_name(key: str) -> str | None:
    """A valid journald field name for `key` (A-Z, 0-9, _; not starting with _ or a digit)."""
    if key in JOURNAL_FIELDS:
        return JOURNAL_FIELDS[key]
    name = re.sub(r"[^A-Z0-9_]", "_", key.upper()).lstrip("_0123456789")
    return name[:64] or None


def _field_text(value: object) -> str:
    """A journald field value: strings as they are, structures as JSON."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping | list | tuple):
        return json.dumps(value, default=str, separators=(",", ":"))
    return str(value)


def _message_text(event_dict: EventDict) -> str:
    """`event key=value ...`: what `journalctl` shows without `-o verbose`."""
    parts = [str(event_dict.get("event", ""))]
    parts.extend(
        f"{key}={_field_text(value)}"
        for key, value in event_dict.items()
        if key not in _INTERNAL_KEYS and not key.startswith("_")
    )
    text = " ".join(parts)
    exception = event_dict.get("exception")
    return f"{text}\n{exception}" if exception else text


class JournaldRenderer:
    """Final processor for journald: the entry's fields as a JSON object (see JournaldHandler).

    JSON is the hand-over format because stdlib formatters must return a string.
    """

    def __call__(self, _logger: WrappedLogger, method: str, event_dict: EventDict) -> str:
        """Render `event_dict` into journald fields."""
        level = str(event_dict.get("level", method)).lower()
        fields: dict[str, str] = {
            "MESSAGE": _message_text(event_dict),
            "PRIORITY": str(PRIORITIES.get(level, 6)),
            "SYSLOG_IDENTIFIER": SYSLOG_IDENTIFIER,
        }
        if "logger" in event_dict:
            fields["LOGGER"] = str(event_dict["logger"])
        record = event_dict.get("_record")
        if isinstance(record, logging.LogRecord):
            fields["CODE_FILE"] = record.pathname
            fields["CODE_LINE"] = str(record.lineno)
            fields["CODE_FUNC"] = record.funcName
        for key, value in event_dict.items():
            if key in _INTERNAL_KEYS or key.startswith("_"):
                continue
            name = _journal_field_name(key)
            if name and name not in fields:
                fields[name] = _field_text(value)
        return json.dumps(fields)


JournalSend = Callable[..., object]


def _systemd_journal_send() -> JournalSend | None:
    """`systemd.journal.send` when systemd-python is installed, else None."""
    try:
        from systemd import journal  # noqa: PLC0415 - optional dependency, probed lazily
    except ImportError:
        return None
    send: JournalSend = journal.send
    return send


class JournaldHandler(logging.Handler):
    """Sends each record as a native journal entry (fields rendered by JournaldRenderer)."""

    def __init__(self, send: JournalSend) -> None:
        super().__init__()
        self._send = send

    def emit(self, record: logging.LogRecord) -> None:
        """Hand the rendered fields to journald; errors go to `handleError` like stdlib's."""
        try:
            fields: dict[str, str] = json.loads(self.format(record))
            message = fields.pop("MESSAGE")
            code_line = fields.pop("CODE_LINE", None)
            self._send(
                message,
                CODE_FILE=fields.pop("CODE_FILE", None),
                CODE_LINE=int(code_line) if code_line is not None else None,
                CODE_FUNC=fields.pop("CODE_FUNC", None),
                **fields,
            )
        except Exception:  # logging must never raise into the caller
            self.handleError(record)


def journal_stream_matches(stream: TextIO, environ: Mapping[str, str]) -> bool:
    """True when `stream` is the journal stream systemd connected (`$JOURNAL_STREAM`).

    Compares device and inode as systemd.exec(5) advises, so a child process that merely
    inherited the variable but writes elsewhere is not fooled.
    """
    value = environ.get("JOURNAL_STREAM", "")
    if ":" not in value:
        return False
    try:
        stat = os.fstat(stream.fileno())
        device, inode = (int(part) for part in value.split(":", 1))
    except (OSError, ValueError, AttributeError):
        return False
    return (stat.st_dev, stat.st_ino) == (device, inode)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def resolve_format(
    fmt: LogFormat,
    stream: TextIO,
    environ: Mapping[str, str],
    journald_available: bool,
) -> LogFormat:
    """The concrete format `AUTO` (or an unavailable journald) stands for."""
    if fmt is LogFormat.AUTO:
        if journald_available and journal_stream_matches(stream, environ):
            return LogFormat.JOURNALD
        return LogFormat.CONSOLE if _isatty(stream) else LogFormat.JSON
    if fmt is LogFormat.JOURNALD and not journald_available:
        return LogFormat.JSON
    return fmt


class CurrentStderr:
    """Writes to whatever `sys.stderr` is at the time of each write.

    The default log stream: logs never go to stdout, which carries the machine-readable
    output of `read --json`, `plan --json`, `status --json`..., and a stream swapped after
    configuration (pytest's capture, a test running the CLI in-process) is followed.
    """

    def write(self, text: str) -> int:
        """Write `text` to the current stderr."""
        return sys.stderr.write(text)

    def flush(self) -> None:
        """Flush the current stderr."""
        sys.stderr.flush()

    def isatty(self) -> bool:
        """Whether the current stderr is a terminal."""
        return _isatty(sys.stderr)

    def fileno(self) -> int:
        """The current stderr's file descriptor (for the `$JOURNAL_STREAM` check)."""
        return sys.stderr.fileno()


def _level_number(level: LogLevel | str | int) -> int:
    if isinstance(level, int):
        return level
    number = logging.getLevelNamesMapping().get(str(level).upper())
    if number is None:
        raise ValueError(f"unknown log level {level!r}; use debug, info, warning or error")
    return number


_installed_handler: logging.Handler | None = None


def configure_logging(
    level: LogLevel | str | int = LogLevel.INFO,
    fmt: LogFormat = LogFormat.AUTO,
    *,
    stream: TextIO | None = None,
    environ: Mapping[str, str] | None = None,
    journal_send: JournalSend | None = None,
    library_level: int = logging.WARNING,
) -> LogFormat:
    """Configure structlog and stdlib logging for the whole process; returns the format used.

    `level` applies to gatewayd's own loggers, `library_level` to pymodbus, paho, amqtt,
    asyncio and anything else logging through stdlib. Calling it again (a reload changing
    `logging:`) replaces the previous set-up instead of adding a second handler.
    `journal_send` replaces `systemd.journal.send` (tests); `stream` defaults to stderr
    (whatever `sys.stderr` is when a line is written); never stdout.
    """
    global _installed_handler  # noqa: PLW0603 - logging is process-wide by nature

    out: TextIO = cast(TextIO, CurrentStderr()) if stream is None else stream
    env = os.environ if environ is None else environ
    send = journal_send if journal_send is not None else _systemd_journal_send()
    resolved = resolve_format(fmt, out, env, journald_available=send is not None)

    handler: logging.Handler
    renderer: Processor
    if resolved is LogFormat.JOURNALD:
        assert send is not None  # resolve_format only picks journald when it can send
        handler = JournaldHandler(send)
        renderer = JournaldRenderer()
    elif resolved is LogFormat.CONSOLE:
        handler = logging.StreamHandler(out)
        renderer = structlog.dev.ConsoleRenderer(colors=_isatty(out))
    else:
        handler = logging.StreamHandler(out)
        renderer = structlog.processors.JSONRenderer(default=str)

    context: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
    ]
    if resolved is not LogFormat.JOURNALD:  # journald stamps entries itself
        context.append(structlog.processors.TimeStamper(fmt="iso", utc=True))

    meta_filter: list[Processor] = []
    if resolved is not LogFormat.JOURNALD:
        meta_filter.append(structlog.stdlib.ProcessorFormatter.remove_processors_meta)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*context, structlog.stdlib.ExtraAdder()],
            processors=[
                # The journald renderer reads `_record` (code location) and skips `_` keys.
                *meta_filter,
                structlog.processors.format_exc_info,
                SECRETS,  # last before rendering: nothing added later can leak
                renderer,
            ],
        )
    )

    root = logging.getLogger()
    if _installed_handler is not None:
        root.removeHandler(_installed_handler)
    root.addHandler(handler)
    root.setLevel(library_level)
    _installed_handler = handler
    logging.getLogger("gatewayd").setLevel(_level_number(level))
    for name in LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(library_level)
    logging.captureWarnings(True)

    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *context,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # Not cached: a reload may reconfigure, and loggers bound earlier must follow.
        cache_logger_on_first_use=False,
    )
    return resolved

