"""Fault injection and traffic statistics of the emulator.

`Faults` is plain state the server consults at fixed points: when a CONNECT arrives
(`refuse_connect`), before a request is processed (`forced_code`, the rate cap), and before
a reply is published (`reply_fate`). Counted faults ("the next N") are consumed as they
fire, so a test states exactly how many messages a fault hits.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class _Counted:
    remaining: int | None  # None: until cleared
    method: str | None = None

    def matches(self, method: str | None) -> bool:
        return self.method is None or self.method == method

    def take(self) -> bool:
        """Consume one use; False when exhausted."""
        if self.remaining is None:
            return True
        if self.remaining <= 0:
            return False
        self.remaining -= 1
        return True


@dataclass
class _ForcedCode(_Counted):
    code: int = 200
    message: str = ""


@dataclass
class _Delay(_Counted):
    seconds: float = 0.0


@dataclass
class _Refusal:
    remaining: int | None
    return_code: int


@dataclass(frozen=True, slots=True)
class ReplyFate:
    """What happens to one reply: dropped, or sent after `delay` seconds."""

    drop: bool = False
    delay: float = 0.0


class Faults:
    """The faults currently armed. Every method returns self, so calls can be chained.

    `rng` decides probabilistic drops; seed it for reproducible runs.
    """

    def __init__(self, rng: random.Random | None = None) -> None:
        self.rng = rng or random.Random()
        self._drops: list[_Counted] = []
        self._drop_probability = 0.0
        self._delays: list[_Delay] = []
        self._forced: list[_ForcedCode] = []
        self._refusals: list[_Refusal] = []
        #: Upstream bytes/s per connection; None = unlimited. Excess is delayed, never dropped.
        self.rate_limit: float | None = None

    # --- arming -------------------------------------------------------------------------------

    def drop_replies(
        self, n: int | None = 1, *, method: str | None = None, probability: float | None = None
    ) -> Faults:
        """Drop the next `n` replies (of `method`), or each reply with `probability`.

        The request is still processed (data stored, state changed): only the answer is lost,
        as when a reply goes missing on a real link.
        """
        if probability is not None:
            if not 0.0 <= probability <= 1.0:
                raise ValueError("probability must be within 0..1")
            self._drop_probability = probability
        else:
            self._drops.append(_Counted(n, method))
        return self

    def delay_replies(
        self, seconds: float, n: int | None = None, *, method: str | None = None
    ) -> Faults:
        """Send the next `n` replies (all, if None) of `method` `seconds` late."""
        self._delays.append(_Delay(n, method, seconds))
        return self

    def answer_code(
        self, code: int, n: int | None = 1, *, method: str | None = None, message: str = ""
    ) -> Faults:
        """Answer the next `n` requests (of `method`) with `code` without processing them."""
        self._forced.append(_ForcedCode(n, method, code, message or f"injected code {code}"))
        return self

    def refuse_connects(self, n: int | None = None, *, return_code: int = 5) -> Faults:
        """Refuse the next `n` CONNECTs (all, if None) with CONNACK `return_code`."""
        self._refusals.append(_Refusal(n, return_code))
        return self

    def limit_rate(self, bytes_per_second: float | None) -> Faults:
        """Cap each connection's upstream traffic; None lifts the cap."""
        self.rate_limit = bytes_per_second
        return self

    def clear(self) -> Faults:
        """Disarm every fault (the connect throttle is separate: `emu.throttle`)."""
        self._drops.clear()
        self._drop_probability = 0.0
        self._delays.clear()
        self._forced.clear()
        self._refusals.clear()
        self.rate_limit = None
        return self

    # --- consulted by the server -----------------------------------------------------------------

    def refuse_connect(self) -> int | None:
        """The CONNACK code to refuse this CONNECT with, or None."""
        for refusal in self._refusals:
            if refusal.remaining is None:
                return refusal.return_code
            if refusal.remaining > 0:
                refusal.remaining -= 1
                return refusal.return_code
        return None

    def forced_code(self, method: str) -> tuple[int, str] | None:
        """(code, message) to answer a `method` request with instead of processing it."""
        for forced in self._forced:
            if forced.matches(method) and forced.take():
                return forced.code, forced.message
        return None

    def reply_fate(self, method: str | None) -> ReplyFate:
        """Whether the reply to a `method` request is dropped or delayed."""
        for drop in self._drops:
            if drop.matches(method) and drop.take():
                return ReplyFate(drop=True)
        if self._drop_probability and self.rng.random() < self._drop_probability:
            return ReplyFate(drop=True)
        for delay in self._delays:
            if delay.matches(method) and delay.take():
                return ReplyFate(delay=delay.seconds)
        return ReplyFate()


@dataclass
class Stats:
    """Traffic counters since start."""

    messages_in: int = 0
    bytes_in: int = 0
    messages_out: int = 0
    bytes_out: int = 0
    connects: int = 0
    refused_connects: int = 0
    refused_by_code: Counter[int] = field(default_factory=Counter)
    disconnects: int = 0
    requests_by_method: Counter[str] = field(default_factory=Counter)
    replies_by_code: Counter[int] = field(default_factory=Counter)
    replies_dropped: int = 0
    replies_unsubscribed: int = 0  # replies not delivered: no matching SUBSCRIBE
    commands_sent: int = 0
    command_timeouts: int = 0
    rate_limited_messages: int = 0  # upstream messages the rate cap held back
    rate_limited_seconds: float = 0.0

    def summary(self) -> str:
        """One line for the periodic stderr report."""
        return (
            f"in={self.messages_in} msgs/{self.bytes_in} B out={self.messages_out} msgs/"
            f"{self.bytes_out} B connects={self.connects} refused={self.refused_connects} "
            f"replies={dict(self.replies_by_code)} dropped={self.replies_dropped}"
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "messages_in": self.messages_in,
            "bytes_in": self.bytes_in,
            "messages_out": self.messages_out,
            "bytes_out": self.bytes_out,
            "connects": self.connects,
            "refused_connects": self.refused_connects,
            "refused_by_code": dict(self.refused_by_code),
            "disconnects": self.disconnects,
            "requests_by_method": dict(self.requests_by_method),
            "replies_by_code": dict(self.replies_by_code),
            "replies_dropped": self.replies_dropped,
            "replies_unsubscribed": self.replies_unsubscribed,
            "commands_sent": self.commands_sent,
            "command_timeouts": self.command_timeouts,
            "rate_limited_messages": self.rate_limited_messages,
            "rate_limited_seconds": round(self.rate_limited_seconds, 3),
        }
