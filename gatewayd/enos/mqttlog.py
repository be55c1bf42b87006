"""aiomqtt's and paho's log lines, held to the daemon's rule: one warning per episode, one
"recovered" line.

aiomqtt warns "There are N pending publish calls." on every publish while more than ten
wait for their PUBACK: a burst of cloud commands once gave 8,764 such lines. The session
switches that warning off and counts its own publishes in flight with `PublishBacklog`
(one warning when they pile up, one line when they flow again). Every other warning the
MQTT libraries log passes `RepeatFilter` once per message text per connection; repeats are
counted and summed up in one line when the connection closes.
"""

from __future__ import annotations

import logging

import structlog

from gatewayd.episodes import Episodes

log = structlog.get_logger(__name__)

#: The stdlib logger aiomqtt (and paho, through `enable_logger`) write to; a library
#: logger in `gatewayd.logging`, so it runs at the configured library level.
MQTT_LOGGER_NAME = "aiomqtt"


class RepeatFilter(logging.Filter):
    """Passes the first warning (or worse) of each message text; drops and counts repeats
    until `end_episode()`."""

    def __init__(self) -> None:
        super().__init__()
        self._repeats: dict[str, int] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        text = str(record.msg)  # the template: "There are %d ..." is one text
        if text in self._repeats:
            self._repeats[text] += 1
            return False
        self._repeats[text] = 0
        return True

    def end_episode(self) -> dict[str, int]:
        """The warnings dropped as repeats since the last call, by text; starts afresh."""
        repeated = {text: n for text, n in self._repeats.items() if n}
        self._repeats.clear()
        return repeated


_FILTER = RepeatFilter()


def mqtt_logger() -> logging.Logger:
    """The logger to hand aiomqtt, with the repeat filter installed (once)."""
    logger = logging.getLogger(MQTT_LOGGER_NAME)
    if _FILTER not in logger.filters:
        logger.addFilter(_FILTER)
    return logger


def end_library_episode() -> None:
    """The connection closed: say once how many library warnings were repeats."""
    repeated = _FILTER.end_episode()
    if repeated:
        log.info("MQTT library warnings repeated (not logged again)", repeats=repeated)


class PublishBacklog:
    """Publishes waiting for their PUBACK: one warning when more than `threshold` wait,
    one line when no more than half of that wait again."""

    def __init__(self, threshold: int) -> None:
        self.threshold = threshold
        self.waiting = 0
        self.peak = 0
        self._episode = Episodes(log)  # one key: "backlog"

    @property
    def piling_up(self) -> bool:
        return "backlog" in self._episode

    def enter(self) -> None:
        self.waiting += 1
        if self.waiting > self.threshold and self._episode.start(
            "backlog",
            "MQTT publishes are piling up: waiting for the broker's PUBACK",
            waiting=self.waiting,
            threshold=self.threshold,
        ):
            self.peak = self.waiting
        self.peak = max(self.peak, self.waiting)

    def leave(self) -> None:
        self.waiting -= 1
        if self.waiting <= self.threshold // 2 and self._episode.end(
            "backlog",
            "MQTT publishes flow again",
            count_as=None,
            timed_as="seconds",
            peak=self.peak,
        ):
            self.peak = 0
