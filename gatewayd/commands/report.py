"""What a command did, point by point, and the reply that says so (pure).

A `WriteReport` is filled while the writes run on the bus task: each planned write ends
up `written` (acknowledged by the device, and confirmed by the read-back when the device
verifies writes) or in `failures` with its reply code and reason; writes never tried are
failures too ("not written: ..."), so the reply accounts for every point of the command.

Reply shape for a failure (`code` >= 2000)::

    {"code": 2013, "message": "2 of 3 points failed: b: device rejected ...; c: not
     written: ... (written: a)", "data": {"written": ["a"], "failed": {"b": "...", "c": "..."}}}

The code is `PARTIAL_FAILURE` (2013) when anything was written, else the failures' common
code, else the first failure's code. Messages and data list at most `MAX_LISTED` points.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from gatewayd.commands.validate import PlannedWrite, Refusal
from gatewayd.enos.codes import ReplyCode

#: Failures spelled out in a reply (a hostile command may name thousands of points).
MAX_LISTED = 50

#: (code, data, message): what the uplink's `CommandHandler` returns.
Reply = tuple[int, object, str]


def reply_code(failures: Sequence[Refusal], *, anything_written: bool) -> int:
    """The one code for a reply with `failures` (see the module docstring)."""
    if anything_written:
        return ReplyCode.PARTIAL_FAILURE
    codes = {f.code for f in failures}
    if len(codes) == 1:
        return next(iter(codes))
    return failures[0].code


def _listing(failures: Sequence[Refusal]) -> str:
    shown = "; ".join(f"{f.subject}: {f.reason}" for f in failures[:MAX_LISTED])
    hidden = len(failures) - MAX_LISTED
    return shown + (f"; and {hidden} more" if hidden > 0 else "")


def _failed_data(failures: Sequence[Refusal]) -> dict[str, str]:
    data: dict[str, str] = {}
    for failure in failures[:MAX_LISTED]:
        # A point written twice by a service fails under one key: keep the first reason.
        data.setdefault(failure.subject, failure.reason)
    return data


def refused(
    failures: Sequence[Refusal], *, what: str = "refused", nothing: str = "written"
) -> Reply:
    """The reply to a command refused before anything was written (or read)."""
    data = {"written": [], "failed": _failed_data(failures)}
    message = f"{what}, nothing {nothing}: {_listing(failures)}"
    return reply_code(failures, anything_written=False), data, message


@dataclass
class WriteReport:
    """Progress of a command's writes; shared between the handler and the bus operation."""

    planned: tuple[PlannedWrite, ...]
    written: list[PlannedWrite] = field(default_factory=list)
    failures: list[Refusal] = field(default_factory=list)
    #: The write on the wire right now (its outcome is unknown if the reply goes first).
    in_flight: PlannedWrite | None = None
    #: Set once the reply is decided: the bus operation must not start another write.
    closed: bool = False
    _next: int = 0  # index of the next planned write to run

    def take(self) -> PlannedWrite | None:
        """The next planned write (marked in flight), or None when done or closed."""
        if self.closed or self._next >= len(self.planned):
            return None
        self.in_flight = self.planned[self._next]
        self._next += 1
        return self.in_flight

    def succeeded(self, write: PlannedWrite) -> None:
        """The device acknowledged `write`."""
        self.in_flight = None
        self.written.append(write)

    def failed(self, write: PlannedWrite, code: int, reason: str) -> None:
        """`write` failed."""
        self.in_flight = None
        self.failures.append(Refusal(_subject(write), code, reason))

    def unverified(self, write: PlannedWrite, code: int, reason: str) -> None:
        """`write` was acknowledged but its read-back does not confirm it."""
        self.written.remove(write)
        self.failures.append(Refusal(_subject(write), code, reason))

    def skip_rest(self, code: int, reason: str) -> None:
        """Give up on the writes not yet tried (and the one in flight, if any)."""
        if self.in_flight is not None:
            self.failures.append(
                Refusal(
                    _subject(self.in_flight),
                    code,
                    "outcome unknown: the write was still in progress at the reply deadline",
                )
            )
            self.in_flight = None
        for write in self.planned[self._next :]:
            self.failures.append(Refusal(_subject(write), code, reason))
        self._next = len(self.planned)

    @property
    def complete(self) -> bool:
        """Every planned write was acknowledged (and verified where that applies)."""
        return not self.failures and len(self.written) == len(self.planned)

    def written_names(self) -> list[str]:
        """Points written, in order (a point written twice appears twice)."""
        return [w.name for w in self.written]

    def reply(self, *, context: str) -> Reply:
        """The failure reply (call only when not `complete`); `context` leads the message."""
        failures = self.failures
        written = self.written_names()
        data = {"written": written, "failed": _failed_data(failures)}
        total = len(self.planned)
        message = f"{context}: {len(failures)} of {total} writes failed: {_listing(failures)}"
        message += f" (written: {', '.join(written)})" if written else " (nothing was written)"
        return reply_code(failures, anything_written=bool(written)), data, message


def _subject(write: PlannedWrite) -> str:
    return write.name


def unique(names: Iterable[str]) -> list[str]:
    """`names` without repeats, first occurrence first."""
    return list(dict.fromkeys(names))
