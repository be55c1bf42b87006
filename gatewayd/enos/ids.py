"""Request ids (PROTOCOL.md §2.1): decimal-digit strings, unique per connection lifetime.

A plain object owned by whoever owns the connection -- no global counter, no clock. The
caller seeds it from time (`IdGenerator.from_time_ms(now_ms)`) so that a restarted daemon
does not reuse the ids of its previous life: replies are correlated by (reply topic, id),
and a late reply to a request of the previous process must not match a fresh request.
"""

from __future__ import annotations

from collections.abc import Iterator

#: Seeds taken from time are folded into this range (the spec's `time_ms % 10**9` advice);
#: ids stay short (≤ 10 digits for the first billion requests) which matters on a 1 MB/s cap.
TIME_SEED_MODULUS = 10**9


class IdGenerator:
    """Produces ``str(seed)``, ``str(seed + 1)``, ... -- never repeating within its lifetime."""

    __slots__ = ("_next",)

    def __init__(self, seed: int) -> None:
        """Start at `seed` (a non-negative integer chosen by the caller)."""
        if seed < 0:
            raise ValueError(f"id seed must be >= 0, not {seed}")
        self._next = seed

    @classmethod
    def from_time_ms(cls, now_ms: int) -> IdGenerator:
        """A generator seeded from a wall-clock reading the caller took (Unix ms)."""
        return cls(now_ms % TIME_SEED_MODULUS)

    def next_id(self) -> str:
        """The next id."""
        value = self._next
        self._next = value + 1
        return str(value)

    def __call__(self) -> str:
        """Same as `next_id`, so the generator can be passed where a `Callable[[], str]` fits."""
        return self.next_id()

    def __iter__(self) -> Iterator[str]:
        """Endless stream of ids."""
        return self

    def __next__(self) -> str:
        """Same as `next_id`."""
        return self.next_id()

    def __repr__(self) -> str:
        """Show where the generator is, for logs."""
        return f"IdGenerator(next={self._next})"
