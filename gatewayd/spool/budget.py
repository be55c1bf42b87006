"""How the spool splits its byte cap between data pages, the WAL and slack (pure).

The cap covers everything on disk: the database file, its WAL and the shm index.
- The WAL is checkpointed every `wal_limit` bytes and truncated back to that size
  (`journal_size_limit`), so it stays below about `wal_limit` plus one transaction;
  twice `wal_limit` is reserved for it.
- A fixed slack covers the shm index (32 KiB while the WAL is below 16 MiB) and rounding.
- A reserve file of `reserve_bytes` (twice `wal_limit`) is kept next to the spool and
  given up when the disk fills, so SQLite has room to checkpoint and drop old rows.
- Data pages get the rest (`data_high`). The store drops oldest rows *before* an append
  would take the data past it, so the database file (whose free pages are reused before
  it grows) stays below it too.
- A drop episode ends when the data falls below `low_water` (half of `data_high`).
"""

from __future__ import annotations

from dataclasses import dataclass

_KIB = 1024
_MIB = 1024 * _KIB
SLACK_BYTES = 64 * _KIB


@dataclass(frozen=True, slots=True)
class Budget:
    """The byte budget of one spool file."""

    max_bytes: int
    page_size: int = 4096

    @property
    def wal_limit(self) -> int:
        """WAL bytes after which SQLite checkpoints and truncates the WAL."""
        return min(4 * _MIB, max(64 * _KIB, self.max_bytes // 16))

    @property
    def wal_autocheckpoint_pages(self) -> int:
        """`PRAGMA wal_autocheckpoint` for `wal_limit`."""
        return max(1, self.wal_limit // self.page_size)

    @property
    def data_high(self) -> int:
        """Most bytes of pages in use the database may hold."""
        return max(
            self.page_size * 16,
            self.max_bytes - 2 * self.wal_limit - SLACK_BYTES - self.reserve_bytes,
        )

    @property
    def reserve_bytes(self) -> int:
        """Size of the reserve file released on a full disk."""
        return 2 * self.wal_limit

    @property
    def low_water(self) -> int:
        """Bytes in use below which a drop episode is over."""
        return self.data_high // 2

    @property
    def drop_chunk(self) -> int:
        """Bytes freed beyond the need when dropping, so drops come in chunks, not per append."""
        return max(self.page_size * 4, self.data_high // 32)

    @property
    def vacuum_threshold(self) -> int:
        """Free bytes inside the file above which the store gives space back to the disk."""
        return max(self.page_size * 16, self.max_bytes // 8)

    @property
    def vacuum_step_pages(self) -> int:
        """Pages one incremental-vacuum step may move (bounds the latency and WAL growth)."""
        return max(16, self.wal_autocheckpoint_pages // 2)
