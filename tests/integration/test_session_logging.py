"""The MQTT libraries' logs at the session seam, against a real mosquitto: a publish burst
gives one warning and one "flow again" line, not a line per publish."""

from __future__ import annotations

import asyncio
import logging

import pytest
import structlog

from gatewayd.enos.mqttlog import MQTT_LOGGER_NAME, RepeatFilter
from gatewayd.enos.session import Endpoint, GatewaySession
from tests.integration.mosquitto_fixtures import Mosquitto, mosquitto

__all__ = ["mosquitto"]

BURST = 400


async def test_a_publish_burst_logs_one_warning_and_one_recovery(
    mosquitto: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    """400 QoS-1 publishes at once (a command burst): no per-publish library warning
    reaches the log, one 'piling up' warning and one 'flow again' line do."""
    caplog.set_level(logging.WARNING)
    target = Endpoint("127.0.0.1", mosquitto.port, "gw-burst", "gwDK&gwPK", "pw")
    with structlog.testing.capture_logs() as captured:
        async with GatewaySession(target, max_inflight=20) as session:
            await asyncio.gather(
                *(session.publish(f"/burst/{i % 7}", b"x" * 64) for i in range(BURST))
            )
    library = [r for r in caplog.records if "pending publish calls" in r.getMessage()]
    assert library == []
    piling = [e for e in captured if e["event"].startswith("MQTT publishes are piling up")]
    flowing = [e for e in captured if e["event"] == "MQTT publishes flow again"]
    assert len(piling) == 1
    assert piling[0]["log_level"] == "warning"
    assert len(flowing) == 1
    assert flowing[0]["peak"] == BURST


def test_repeated_library_warnings_pass_once_per_episode() -> None:
    """The same warning text passes once; repeats are dropped and counted; debug passes."""
    repeat = RepeatFilter()
    logger = logging.getLogger(MQTT_LOGGER_NAME)

    def record(level: int, msg: str, *args: object) -> logging.LogRecord:
        return logger.makeRecord(logger.name, level, __file__, 1, msg, args, None)

    queue_full = "Message queue is full. Discarding message."
    assert repeat.filter(record(logging.WARNING, queue_full))
    assert not repeat.filter(record(logging.WARNING, queue_full))
    assert not repeat.filter(record(logging.WARNING, queue_full))
    assert repeat.filter(record(logging.WARNING, "Could not gracefully disconnect: %d.", 4))
    assert repeat.filter(record(logging.DEBUG, "Sending PUBLISH"))
    assert repeat.filter(record(logging.DEBUG, "Sending PUBLISH"))
    assert repeat.end_episode() == {queue_full: 2}
    assert repeat.filter(record(logging.WARNING, queue_full))  # a new episode
