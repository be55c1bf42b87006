"""The logging pipeline: formats, journald fields, library routing, secret masking."""

from __future__ import annotations

import io
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
import structlog
from pydantic import SecretStr

from gatewayd.config.models import LogFormat, LogLevel
from gatewayd.logging import (
    LIBRARY_LOGGERS,
    SECRETS,
    configure_logging,
    journal_stream_matches,
    register_secret,
    resolve_format,
)

SECRET = "s3cr3t-Device-Key-42"
PASSWORD = "hunter2-mqtt-pass"


class JournalCapture:
    """Stands in for systemd.journal.send: records (message, fields) per entry."""

    def __init__(self) -> None:
        self.entries: list[dict[str, Any]] = []

    def __call__(self, message: str, **fields: Any) -> None:
        self.entries.append({"MESSAGE": message, **fields})


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Each test configures logging afresh; put the process back afterwards."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    named = [logging.getLogger(name) for name in ("gatewayd", *LIBRARY_LOGGERS)]
    levels = [logger.level for logger in named]
    yield
    for handler in list(root.handlers):
        if handler not in handlers:
            root.removeHandler(handler)
    root.setLevel(level)
    for logger, saved in zip(named, levels, strict=True):
        logger.setLevel(saved)
    logging.captureWarnings(False)
    SECRETS.clear()
    structlog.reset_defaults()


def emit_everything() -> None:
    """One event per leak route: key names, registered values, nested, stdlib, exceptions."""
    log = structlog.get_logger("gatewayd.test")
    log.warning(
        "device poll failed",
        device="meter-1",
        bus="rs485-1",
        unit_id=3,
        event_id="overvoltage",
        device_secret="plain-for-key-name-check",
        payload={"params": {"sign": "abcdef0123", "value": 1}},
        note=f"connecting with {PASSWORD}",
    )
    logging.getLogger("pymodbus.client").warning("reconnect using key %s", SECRET)
    try:
        raise RuntimeError(f"login refused for secret {SECRET}")  # noqa: TRY301
    except RuntimeError:
        log.exception("uplink crashed", token=SecretStr("tok-tok-tok"))


def assert_no_secret(text: str) -> None:
    for secret in (SECRET, PASSWORD, "plain-for-key-name-check", "abcdef0123", "tok-tok-tok"):
        assert secret not in text


@pytest.mark.parametrize("fmt", [LogFormat.JSON, LogFormat.CONSOLE])
def test_secrets_are_masked_on_stream_renderers(fmt: LogFormat) -> None:
    """Neither JSON nor console output contains a registered or key-named secret."""
    register_secret(SECRET)
    register_secret(SecretStr(PASSWORD))
    stream = io.StringIO()
    assert configure_logging("info", fmt, stream=stream, environ={}) is fmt
    emit_everything()
    text = stream.getvalue()
    assert_no_secret(text)
    assert text.count("***") >= 6
    assert "meter-1" in text
    assert "login refused for secret ***" in text  # the traceback is masked too


def test_secrets_are_masked_in_journald_entries() -> None:
    """journald entries carry masked values in MESSAGE and in every field."""
    register_secret(SECRET)
    register_secret(PASSWORD)
    journal = JournalCapture()
    configure_logging("info", LogFormat.JOURNALD, environ={}, journal_send=journal)
    emit_everything()
    assert len(journal.entries) == 3
    assert_no_secret(json.dumps(journal.entries))
    first = journal.entries[0]
    assert first["DEVICE_SECRET"] == "***"
    assert json.loads(first["PAYLOAD"]) == {"params": {"sign": "***", "value": 1}}
    assert first["NOTE"] == "connecting with ***"


def test_journald_fields_priority_and_identifier() -> None:
    """Well-known keys map to DEVICE/BUS/UNIT_ID/EVENT, levels to syslog priorities."""
    journal = JournalCapture()
    configure_logging(LogLevel.DEBUG, LogFormat.JOURNALD, environ={}, journal_send=journal)
    log = structlog.get_logger("gatewayd.poller")
    log.debug("polled", device="meter-1", points=12)
    log.info("alarm raised", device="meter-1", bus="tcp-a", unit_id=7, event_id="trip")
    log.error("bus down", bus="tcp-a", **{"weird key!": "x"})
    debug, info, error = journal.entries
    assert debug["PRIORITY"] == "7"
    assert info["PRIORITY"] == "6"
    assert error["PRIORITY"] == "3"
    assert info["DEVICE"] == "meter-1"
    assert info["BUS"] == "tcp-a"
    assert info["UNIT_ID"] == "7"
    assert info["EVENT"] == "trip"
    assert info["SYSLOG_IDENTIFIER"] == "gatewayd"
    assert info["LOGGER"] == "gatewayd.poller"
    assert info["MESSAGE"] == "alarm raised device=meter-1 bus=tcp-a unit_id=7 event_id=trip"
    assert debug["POINTS"] == "12"
    assert error["WEIRD_KEY_"] == "x"
    assert info["CODE_FUNC"] == "test_journald_fields_priority_and_identifier"
    assert "TIMESTAMP" not in info  # journald stamps entries itself


def test_json_lines_have_level_logger_timestamp_and_context() -> None:
    """JSON output is one parseable object per line with the structured keys."""
    stream = io.StringIO()
    configure_logging("info", LogFormat.JSON, stream=stream, environ={})
    structlog.get_logger("gatewayd.x").info("started", devices=3)
    (line,) = stream.getvalue().splitlines()
    record = json.loads(line)
    assert record["event"] == "started"
    assert record["devices"] == 3
    assert record["level"] == "info"
    assert record["logger"] == "gatewayd.x"
    assert record["timestamp"].endswith("Z")


def test_library_logs_join_the_pipeline_at_warning() -> None:
    """pymodbus/paho/asyncio INFO is dropped, their WARNING rendered like our own lines."""
    stream = io.StringIO()
    configure_logging("debug", LogFormat.JSON, stream=stream, environ={})
    logging.getLogger("pymodbus.logging").info("chatty frame dump")
    logging.getLogger("paho.mqtt.client").debug("PINGREQ")
    logging.getLogger("asyncio").warning("slow callback %s", "x")
    logging.getLogger("paho.mqtt.client").error("connection lost")
    structlog.get_logger("gatewayd.poller").debug("own debug kept")
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert [(line["logger"], line["level"], line["event"]) for line in lines] == [
        ("asyncio", "warning", "slow callback x"),
        ("paho.mqtt.client", "error", "connection lost"),
        ("gatewayd.poller", "debug", "own debug kept"),
    ]


def test_level_filters_gatewayd_loggers() -> None:
    """At `warning`, gatewayd's info lines are dropped."""
    stream = io.StringIO()
    configure_logging(LogLevel.WARNING, LogFormat.JSON, stream=stream, environ={})
    log = structlog.get_logger("gatewayd.poller")
    log.info("dropped")
    log.warning("kept")
    assert [json.loads(line)["event"] for line in stream.getvalue().splitlines()] == ["kept"]


def test_reconfiguring_replaces_the_handler() -> None:
    """Calling configure_logging twice writes each line once, to the newest stream."""
    first, second = io.StringIO(), io.StringIO()
    configure_logging("info", LogFormat.JSON, stream=first, environ={})
    configure_logging("info", LogFormat.JSON, stream=second, environ={})
    structlog.get_logger("gatewayd.x").info("once")
    assert first.getvalue() == ""
    assert len(second.getvalue().splitlines()) == 1


def test_unknown_level_is_a_clear_error() -> None:
    """A misspelt level names the accepted ones."""
    with pytest.raises(ValueError, match="debug, info, warning or error"):
        configure_logging("loud", LogFormat.JSON, stream=io.StringIO(), environ={})


def test_auto_format_detection() -> None:
    """AUTO: journald on the matching journal stream, console on a tty, JSON otherwise."""
    with tempfile.TemporaryFile("w+") as stream:
        stat = os.fstat(stream.fileno())
        matching = {"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino}"}
        assert journal_stream_matches(stream, matching)
        assert resolve_format(LogFormat.AUTO, stream, matching, True) is LogFormat.JOURNALD
        # Without systemd-python the journal stream still gets JSON lines.
        assert resolve_format(LogFormat.AUTO, stream, matching, False) is LogFormat.JSON
        other = {"JOURNAL_STREAM": f"{stat.st_dev}:{stat.st_ino + 1}"}
        assert resolve_format(LogFormat.AUTO, stream, other, True) is LogFormat.JSON
        assert resolve_format(LogFormat.JOURNALD, stream, {}, False) is LogFormat.JSON
    primary, secondary = os.openpty()
    with open(secondary, "w") as tty:
        assert resolve_format(LogFormat.AUTO, tty, {}, True) is LogFormat.CONSOLE
    os.close(primary)


def test_short_registered_secret_is_masked_only_as_a_whole_value() -> None:
    """A 3-character secret masks an equal value but not every word containing it."""
    register_secret("abc")
    stream = io.StringIO()
    configure_logging("info", LogFormat.JSON, stream=stream, environ={})
    structlog.get_logger("gatewayd.x").info("fabcd", code="abc")
    record = json.loads(stream.getvalue())
    assert record["code"] == "***"
    assert record["event"] == "fabcd"

