"""The durable store of file events: committed before anything is sent, deleted after EnOS' 200.

Layout, under `<state dir>/file-events/` (next to the spool):

    pending/<seq>/payload      the file (hard link to the drop, or a copy)
    pending/<seq>/event.json   device, event, params, time, filename, md5, length, source
    dead/<seq>/...             permanently rejected, with reply.json (code, msg)
    tmp/                       entries being written or removed; emptied at every open
    counters.json              events and bytes dropped at the byte cap

One directory per event rather than a SQLite table: the payload has to be a file anyway
(it is streamed from disk), and a directory that is complete before one `rename` makes
payload and record appear together atomically, with nothing to reconcile between a
database row and a file after a `kill -9`. A commit is: write into `tmp/`, fsync the
files and the directory, rename into `pending/`, fsync `pending/`. Removal is the
reverse: rename into `tmp/`, then delete. So at any instant an entry is either complete
in `pending/` (or `dead/`) or not there at all; `tmp/` leftovers are cleaned at open.

Exactly once across a crash between committing a drop and removing it from the outbox:
the entry keeps the sidecar's identity (path, device, inode, mtime, size); a sidecar that
is still there with that identity is the same drop, already committed, and is only
removed (`release_sources`, at open, before the first upload). Entries are handed to the
sender only after their drop's files are gone, so an entry is never delivered while its
drop could still be committed again.

Blocking (file I/O, fsync): the async callers run it with `asyncio.to_thread`. A lock
guards the in-memory index, which the event loop reads while a commit runs in a thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from gatewayd.integration.drops import MAX_FILE_BYTES, Drop
from gatewayd.integration.message import (
    AssetRef,
    BadEventRequest,
    EventRecord,
    FileAttachment,
    build_event_message,
    local_value,
)

PENDING, DEAD, TMP = "pending", "dead", "tmp"
PAYLOAD, RECORD, REPLY = "payload", "event.json", "reply.json"
COUNTERS = "counters.json"
CHUNK = 1 << 20
#: The `local://` name of the one file of an upload.
LOCAL_NAME = "f1"


class CommitRefused(Exception):
    """This drop can never be uploaded (too big, message over 512 KB); one line why."""


@dataclass(frozen=True, slots=True)
class SourceId:
    """Which drop an entry came from: the sidecar's path and what `stat` said of it."""

    path: str
    dev: int
    ino: int
    mtime_ns: int
    size: int

    @classmethod
    def of(cls, sidecar: Path) -> SourceId:
        st = sidecar.stat()
        return cls(str(sidecar), st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


@dataclass(frozen=True, slots=True)
class FileEvent:
    """One committed file event."""

    seq: int
    device: str
    product_key: str
    device_key: str
    event: str
    file_param: str
    params: dict[str, Any]
    time_ms: int
    filename: str
    md5: str
    length: int
    committed_ms: int
    #: The drop it came from (None: written by the gateway itself).
    source: SourceId | None
    #: Bytes it holds on disk (payload + record), for the byte cap.
    size: int = 0

    @property
    def ready_ms(self) -> int:
        """When the drop was complete: its sidecar is written last (a capture's once its
        `after` has passed); the commit time for the gateway's own events."""
        return self.source.mtime_ns // 1_000_000 if self.source else self.committed_ms

    @property
    def asset(self) -> AssetRef:
        return AssetRef(product_key=self.product_key, device_key=self.device_key)

    def record(self) -> EventRecord:
        """The `params[]` entry of its upload."""
        values = {**self.params, self.file_param: local_value(LOCAL_NAME)}
        return EventRecord(self.asset, self.time_ms, {self.event: values})

    def attachment(self, payload: Path) -> FileAttachment:
        """Its file, as the upload streams it from `payload`."""
        return FileAttachment(
            LOCAL_NAME, payload, self.event, self.asset, self.length, self.md5, self.filename
        )

    def to_json(self) -> bytes:
        fields = asdict(self)
        del fields["size"]
        return json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()

    @classmethod
    def from_json(cls, raw: bytes, size: int) -> FileEvent:
        fields = json.loads(raw)
        source = fields.pop("source")
        return cls(**fields, source=SourceId(**source) if source else None, size=size)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A file event EnOS refused for good, with its reply."""

    event: FileEvent
    code: int | None
    msg: str
    at_ms: int


@dataclass(frozen=True, slots=True)
class Dropped:
    """What the byte cap has cost since the store was created."""

    events: int = 0
    bytes: int = 0


def check_message(event: FileEvent) -> None:
    """`CommitRefused` when the upload of `event` could never be built (over 512 KB)."""
    try:
        # A request id longer than any the client makes: the real message is never larger.
        build_event_message(
            "0" * 40, [event.record()], [event.attachment(Path(PAYLOAD))], realtime=True
        )
    except BadEventRequest as exc:
        raise CommitRefused(str(exc)) from None


class FileStore:
    """Committed file events, oldest first, under one directory; see the module docstring."""

    def __init__(self, root: Path, max_bytes: int, *, wall_ms: Callable[[], int]) -> None:
        """Use `FileStore.open` (this does no I/O)."""
        self.root = root
        self.max_bytes = max_bytes
        self._wall_ms = wall_ms
        self._lock = threading.Lock()
        self._pending: dict[int, FileEvent] = {}
        #: Committed, but the drop they came from is not removed yet: not to be uploaded.
        self._held: set[int] = set()
        self._dead: dict[int, FileEvent] = {}
        self._next_seq = 1
        self._dropped = Dropped()
        #: The entry being uploaded: never dropped at the cap under the sender's feet.
        self.in_flight: int | None = None

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, root: Path, max_bytes: int, *, wall_ms: Callable[[], int]) -> FileStore:
        """Open (or create) the store at `root`, finishing what a crash interrupted."""
        store = cls(root, max_bytes, wall_ms=wall_ms)
        for name in (PENDING, DEAD, TMP):
            (root / name).mkdir(parents=True, exist_ok=True)
        for leftover in (root / TMP).iterdir():  # half-written or half-removed entries
            _remove_tree(leftover)
        for entry in _entries(root / PENDING):
            if (entry / REPLY).exists():  # dead-lettered, not yet moved
                os.replace(entry, root / DEAD / entry.name)
        store._pending = store._scan(root / PENDING)
        store._dead = store._scan(root / DEAD)
        seqs = [*store._pending, *store._dead]
        store._next_seq = max(seqs, default=0) + 1
        store._dropped = _read_counters(root / COUNTERS)
        return store

    def _scan(self, directory: Path) -> dict[int, FileEvent]:
        found: dict[int, FileEvent] = {}
        for entry in _entries(directory):
            try:
                raw = (entry / RECORD).read_bytes()
                payload = (entry / PAYLOAD).stat().st_size
                event = FileEvent.from_json(raw, payload + len(raw))
            except (OSError, ValueError, TypeError, KeyError):
                # Cannot happen through this module (entries appear complete by rename);
                # a hand-damaged entry is moved aside rather than blocking the queue.
                os.replace(entry, self.root / TMP / f"damaged-{entry.name}")
                continue
            found[event.seq] = event
        return dict(sorted(found.items()))

    # ------------------------------------------------------------------ reading

    def oldest(self) -> FileEvent | None:
        """The oldest pending file event (its device's order and everyone's is kept)."""
        with self._lock:
            return next((e for e in self._pending.values() if e.seq not in self._held), None)

    def pending(self) -> list[FileEvent]:
        with self._lock:
            return list(self._pending.values())

    def dead_count(self) -> int:
        """How many dead letters are kept (without reading their replies)."""
        with self._lock:
            return len(self._dead)

    def dead_letters(self) -> list[DeadLetter]:
        """Every dead letter with its reply, oldest first."""
        with self._lock:
            events = list(self._dead.values())
        letters = []
        for event in events:
            try:
                reply = json.loads((self._dir(DEAD, event.seq) / REPLY).read_bytes())
            except (OSError, ValueError):
                reply = {}
            letters.append(
                DeadLetter(event, reply.get("code"), str(reply.get("msg", "")), reply.get("at", 0))
            )
        return letters

    @property
    def dropped(self) -> Dropped:
        return self._dropped

    def held_bytes(self) -> int:
        """Bytes of pending events and dead letters (what the byte cap counts)."""
        with self._lock:
            return sum(e.size for e in (*self._pending.values(), *self._dead.values()))

    def payload(self, event: FileEvent) -> Path:
        return self._dir(PENDING, event.seq) / PAYLOAD

    def _dir(self, kind: str, seq: int) -> Path:
        return self.root / kind / f"{seq:012d}"

    # ------------------------------------------------------------------ committing

    def committed(self, source: SourceId) -> FileEvent | None:
        """The pending entry committed from the drop `source`, if any."""
        with self._lock:
            return next((e for e in self._pending.values() if e.source == source), None)

    def release_sources(self) -> int:
        """Remove the drops of pending entries that a crash left in the outbox; how many."""
        released = 0
        for event in self.pending():
            source = event.source
            if source is None:
                continue
            sidecar = Path(source.path)
            try:
                same = SourceId.of(sidecar) == source
            except OSError:
                continue
            if same:
                with self._lock:
                    self._held.add(event.seq)
                self.release(event)
                released += 1
        return released

    def commit(
        self,
        drop: Drop,
        payload: Path,
        *,
        time_ms: int,
        source: SourceId | None,
        on_drop: Callable[[FileEvent], None] | None = None,
    ) -> FileEvent:
        """Commit `payload` as the file event `drop`; then remove the drop's files.

        Raises `CommitRefused` for a drop that can never go (too big for EnOS or for the
        byte cap, a message over 512 KB) and OSError when the disk refuses (try again).
        `on_drop` hears of each older event dropped to make room.
        """
        length = payload.stat().st_size
        if length > MAX_FILE_BYTES:
            raise CommitRefused(f"file is {length} bytes, over EnOS' limit of {MAX_FILE_BYTES}")
        with self._lock:
            seq = self._next_seq
            self._next_seq += 1
        work = self.root / TMP / f"{seq:012d}"
        try:
            work.mkdir()
            md5 = _link_or_copy(payload, work / PAYLOAD)
            event = FileEvent(
                seq=seq,
                device=drop.device,
                product_key=drop.product_key,
                device_key=drop.device_key,
                event=drop.event,
                file_param=drop.file_param,
                params=dict(drop.params),
                time_ms=time_ms,
                filename=drop.filename or payload.name,
                md5=md5,
                length=length,
                committed_ms=self._wall_ms(),
                source=source,
            )
            check_message(event)
            raw = event.to_json()
            event = FileEvent.from_json(raw, length + len(raw))
            self._check_cap(event)
            _write_synced(work / RECORD, raw)
            _fsync_dir(work)
        except BaseException:
            _remove_tree(work)
            raise
        self._make_room(event.size, on_drop)
        os.replace(work, self._dir(PENDING, seq))
        _fsync_dir(self.root / PENDING)
        with self._lock:
            self._pending[seq] = event
            if source is not None:
                self._held.add(seq)
        self.release(event)
        return event

    def release(self, event: FileEvent) -> None:
        """Remove the drop `event` was committed from; only then may it be uploaded.

        An OSError (an outbox we may not write) leaves it held: the next scan finds the
        same drop, sees it committed (`committed`) and tries again, never committing twice.
        """
        if event.source is not None:
            remove_drop(Path(event.source.path))
        with self._lock:
            self._held.discard(event.seq)

    def _check_cap(self, event: FileEvent) -> None:
        if event.size > self.max_bytes:
            raise CommitRefused(
                f"file event is {event.size} bytes, over integration.max_bytes ({self.max_bytes})"
            )

    def _make_room(self, needed: int, on_drop: Callable[[FileEvent], None] | None) -> None:
        """Drop the oldest dead letters, then the oldest pending events, until `needed` fits."""
        while self.held_bytes() + needed > self.max_bytes:
            with self._lock:
                victims = [*self._dead.values(), *self._pending.values()]
                victim = next((e for e in victims if e.seq != self.in_flight), None)
            if victim is None:
                return  # only the upload in flight is left; it goes soon
            kind = DEAD if victim.seq in self._dead else PENDING
            self._remove(kind, victim.seq)
            self._dropped = Dropped(self._dropped.events + 1, self._dropped.bytes + victim.size)
            _write_atomic(self.root / COUNTERS, json.dumps(asdict(self._dropped)).encode())
            if on_drop is not None:
                on_drop(victim)

    # ------------------------------------------------------------------ outcomes

    def delivered(self, event: FileEvent) -> None:
        """EnOS accepted `event`: it is gone for good."""
        self._remove(PENDING, event.seq)

    def dead_letter(self, event: FileEvent, code: int | None, msg: str) -> None:
        """EnOS refused `event` for good: keep it aside with the reply."""
        entry = self._dir(PENDING, event.seq)
        if not entry.exists():
            return  # dropped at the cap meanwhile
        reply = {"code": code, "msg": msg, "at": self._wall_ms()}
        _write_synced(entry / REPLY, json.dumps(reply).encode())
        os.replace(entry, self._dir(DEAD, event.seq))
        _fsync_dir(self.root / DEAD)
        _fsync_dir(self.root / PENDING)
        with self._lock:
            self._pending.pop(event.seq, None)
            self._dead[event.seq] = event

    def _remove(self, kind: str, seq: int) -> None:
        entry = self._dir(kind, seq)
        gone = self.root / TMP / f"{seq:012d}.gone"
        with contextlib.suppress(FileNotFoundError):
            os.replace(entry, gone)
            _fsync_dir(self.root / kind)
            _remove_tree(gone)
        with self._lock:
            (self._pending if kind == PENDING else self._dead).pop(seq, None)


def read_dead_letters(root: Path) -> list[DeadLetter]:
    """The dead letters under `root`, read without changing anything (a daemon may run)."""
    letters = []
    directory = root / DEAD
    if not directory.is_dir():
        return []
    for entry in _entries(directory):
        try:
            raw = (entry / RECORD).read_bytes()
            event = FileEvent.from_json(raw, len(raw))
            reply = json.loads((entry / REPLY).read_bytes())
        except (OSError, ValueError, TypeError, KeyError):
            continue  # being moved or removed right now
        letters.append(
            DeadLetter(event, reply.get("code"), str(reply.get("msg", "")), reply.get("at", 0))
        )
    return letters


def read_counts(root: Path) -> tuple[int, Dropped]:
    """Pending events and the byte cap's losses under `root`, read without changes."""
    pending = root / PENDING
    count = sum(1 for _ in _entries(pending)) if pending.is_dir() else 0
    return count, _read_counters(root / COUNTERS)


# ---------------------------------------------------------------------- file helpers


def remove_drop(sidecar: Path) -> None:
    """Remove a drop: its payload first, then the sidecar (which alone makes it ready)."""
    with contextlib.suppress(FileNotFoundError):
        sidecar.with_name(sidecar.name.removesuffix(".json")).unlink()
    with contextlib.suppress(FileNotFoundError):
        sidecar.unlink()
    _fsync_dir(sidecar.parent)


def _entries(directory: Path) -> Iterator[Path]:
    for entry in sorted(directory.iterdir()):
        if entry.is_dir() and entry.name.isdigit():
            yield entry


def _link_or_copy(source: Path, target: Path) -> str:
    """Hard-link (same file system, allowed) or copy `source` to `target`; its md5.

    The data is fsynced either way: the writer of a linked file may not have synced it.
    """
    try:
        os.link(source, target)
    except OSError:  # another file system, or protected_hardlinks: copy instead
        with source.open("rb") as src, target.open("wb") as dst:
            while chunk := src.read(CHUNK):
                dst.write(chunk)
            dst.flush()
            os.fsync(dst.fileno())
    digest = hashlib.md5(usedforsecurity=False)
    with target.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
        os.fsync(handle.fileno())
    return digest.hexdigest()


def _write_synced(path: Path, data: bytes) -> None:
    with path.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _write_atomic(path: Path, data: bytes) -> None:
    temp = path.with_name(path.name + ".tmp")
    _write_synced(temp, data)
    os.replace(temp, path)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_tree(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def _read_counters(path: Path) -> Dropped:
    try:
        fields = json.loads(path.read_bytes())
        return Dropped(int(fields["events"]), int(fields["bytes"]))
    except (OSError, ValueError, KeyError, TypeError):
        return Dropped()
