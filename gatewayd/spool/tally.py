"""The spool's figures kept in memory, so status lines never scan the file (pure).

Rows and points mirror the tables; the loss counters (rows dropped by the byte cap or
lost to a full disk, points never spooled, points ever committed) are persisted in
`meta` with the next write. Counters of rows lost while nothing could be written are
kept apart as well ("unpersisted") until a commit carries them into the file, so a
reload from the file after a rollback does not forget them.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass

from gatewayd.spool import stats
from gatewayd.spool.rows import Kind

#: The `meta` counters the tally keeps and persists.
COUNTER_KEYS = (
    *stats.META_DROPPED.values(),
    stats.META_DROPPED_DEAD_LETTERS,
    stats.META_UNSENDABLE,
    stats.META_APPENDED,
)


@dataclass(frozen=True, slots=True)
class TableCounts:
    """What the tables hold, counted in one pass at open (where the tally starts)."""

    frames: int
    points: int
    events: int
    dead_letters: int


class Tally:
    """Row, point and loss counts of one spool file."""

    def __init__(self) -> None:
        self.rows: dict[Kind, int] = dict.fromkeys(Kind, 0)  # frames and events
        self.points = 0  # points in all frames
        self.dead_letters = 0
        self.counters: dict[str, int] = dict.fromkeys(COUNTER_KEYS, 0)
        self._unpersisted: dict[str, int] = {}
        self.dirty = False  # counters changed since they were last written
        self._written = False  # set by `to_persist` inside the open transaction

    def load(self, tables: TableCounts, meta: Mapping[str, int]) -> None:
        """Start from what the file holds (plus losses not yet written to it)."""
        self.rows[Kind.SAMPLES], self.points = tables.frames, tables.points
        self.rows[Kind.EVENTS] = tables.events
        self.dead_letters = tables.dead_letters
        self.counters = {
            key: meta.get(key, 0) + self._unpersisted.get(key, 0) for key in COUNTER_KEYS
        }
        self.dirty = bool(self._unpersisted)

    def appended(self, frames: int, points: int, events: int, unsendable: int) -> None:
        """A poll cycle's rows are being inserted."""
        self.rows[Kind.SAMPLES] += frames
        self.points += points
        # Every point ever committed, for loss accounting (frame ids count frames).
        self.counters[stats.META_APPENDED] += points
        self.rows[Kind.EVENTS] += events
        if unsendable:
            self.counters[stats.META_UNSENDABLE] += unsendable
        self.dirty = True

    def dropped(self, kind: Kind, rows: int, weight: int) -> None:
        """The byte cap or a full disk deleted `rows` holding `weight` points (or events)."""
        self.rows[kind] -= rows
        if kind is Kind.SAMPLES:
            self.points -= weight
        self.counters[stats.META_DROPPED[kind]] += weight
        self.dirty = True

    def lost(self, points: int, events: int) -> None:
        """Values that could not be written at all count as dropped (persisted later)."""
        for kind, lost in ((Kind.SAMPLES, points), (Kind.EVENTS, events)):
            key = stats.META_DROPPED[kind]
            self.counters[key] += lost
            self._unpersisted[key] = self._unpersisted.get(key, 0) + lost
        self.dirty = True

    def removed(self, kind: Kind, rows: int, points: int = 0) -> None:
        """Rows (or points of rows) left the spool by delivery or as dead letters."""
        self.rows[kind] -= rows
        self.points -= points

    def trimmed(self, dead_letters: int) -> None:
        """The dead-letter table dropped its oldest entries (counted, persisted)."""
        self.counters[stats.META_DROPPED_DEAD_LETTERS] += dead_letters

    # -- persisting ------------------------------------------------------------------

    def begin(self) -> None:
        """A write transaction starts."""
        self._written = False

    def to_persist(self) -> list[tuple[str, str]]:
        """The `meta` rows of every counter, now being written in the open transaction."""
        self.dirty = False
        self._written = True
        return [(key, str(value)) for key, value in self.counters.items()]

    def committed(self) -> None:
        """The transaction committed: counters it wrote are in the file now."""
        if self._written:
            self._unpersisted = {}


@contextmanager
def persisting(tally: Tally, transaction: AbstractContextManager[None]) -> Iterator[None]:
    """Run the block in `transaction`; counters it persists count as written once it
    commits (a rollback keeps them pending)."""
    with transaction:
        tally.begin()
        yield
    tally.committed()
