"""The outbox contract's sidecar checks (pure); the store's copy fallback and crash recovery."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from gatewayd.config.models import FileEventConfig
from gatewayd.integration.drops import BadDrop, DeviceFileEvents, parse_sidecar, payload_name
from gatewayd.integration.filestore import FileStore, SourceId

DEVICES = {
    "inv-01": DeviceFileEvents(
        "invPK",
        "inv01",
        {
            "tripRecord": FileEventConfig(
                event="tripRecord",
                file_param="record",
                params={"reason": "int", "level": "float", "ack": "bool", "note": "string"},
            )
        },
    )
}
GOOD = {
    "device": "inv-01",
    "event": "tripRecord",
    "file_param": "record",
    "params": {"reason": 7, "level": 2, "ack": False, "note": "x"},
    "time": 1733400000000,
    "filename": "inv-01-tripRecord-20261205T100000Z.csv",
}


def _parse(**changes: object) -> object:
    doc = {**GOOD, **changes}
    return parse_sidecar(json.dumps({k: v for k, v in doc.items() if v is not None}).encode(),
                         DEVICES)  # fmt: skip


def test_the_contract_example_parses_with_the_device_identity() -> None:
    """The README's sidecar: its device's keys, params as given (an int fits float)."""
    drop = _parse()
    assert (drop.product_key, drop.device_key, drop.event, drop.file_param) == (  # type: ignore[attr-defined]
        "invPK",
        "inv01",
        "tripRecord",
        "record",
    )
    assert drop.params == GOOD["params"]  # type: ignore[attr-defined]
    assert (drop.time_ms, drop.filename) == (GOOD["time"], GOOD["filename"])  # type: ignore[attr-defined]


def test_time_and_filename_are_optional() -> None:
    """Without them the caller uses the sidecar's mtime and the payload's name."""
    drop = _parse(time=None, filename=None)
    assert (drop.time_ms, drop.filename) == (None, None)  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("changes", "error"),
    [
        ({"params": {"reason": True, "level": 1.0, "ack": False, "note": "x"}},
         "param 'reason' must be int, not bool True"),
        ({"params": {"reason": 1, "level": "1", "ack": False, "note": "x"}},
         "param 'level' must be float, not str '1'"),
        ({"params": {"reason": 1, "level": 1, "ack": 0, "note": "x"}},
         "param 'ack' must be bool, not int 0"),
        ({"params": {"reason": 1, "level": 1, "ack": True, "note": 5}},
         "param 'note' must be string, not int 5"),
        ({"params": {"reason": 1, "level": 1, "ack": True, "note": "", "x": 1}},
         "unknown params ['x']"),
        ({"time": "yesterday"}, "time must be an integer (ms since the epoch), not 'yesterday'"),
        ({"time": -1}, "time must not be negative, not -1"),
        ({"filename": ""}, "filename must be a non-empty string, not ''"),
        ({"colour": "red"}, "sidecar has unknown keys ['colour']"),
        ({"device": 5}, "device must be a non-empty string, not 5"),
        ({"params": [1]}, "params must be a JSON object"),
    ],
)  # fmt: skip
def test_a_bad_sidecar_says_what_is_wrong(changes: dict[str, object], error: str) -> None:
    """Each broken field gives one line naming it, the expectation and what was found."""
    with pytest.raises(BadDrop) as caught:
        _parse(**changes)
    assert error in str(caught.value)


@pytest.mark.parametrize(
    "raw", [b'{"device": "inv-01", "ev', b"\xff\xfe", b"[" * 100_000], ids=["cut", "bytes", "deep"]
)
def test_a_sidecar_that_is_not_json_is_refused(raw: bytes) -> None:
    """A truncated, binary or absurdly nested sidecar is refused, not guessed or crashed on."""
    with pytest.raises(BadDrop, match="sidecar is not JSON"):
        parse_sidecar(raw, DEVICES)


@pytest.mark.parametrize(
    ("name", "payload"),
    [
        ("trip.csv.json", "trip.csv"),
        ("trip.csv", None),
        ("trip.csv.json.tmp", None),
        (".trip.csv.json", None),
        ("trip.part.json", None),
        ("trip.tmp.json", None),
        ("trip.json.json", None),
        (".json", None),
    ],
)
def test_only_a_sidecar_of_a_finished_payload_makes_a_drop(name: str, payload: str | None) -> None:
    """Temp names (.part, .tmp, hidden) and payloads named like sidecars are no drops."""
    assert payload_name(name) == payload


def test_a_payload_that_cannot_be_hard_linked_is_copied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another file system (EXDEV) or protected hard links: the store copies the payload,
    with the same md5, and the drop's files are removed after the commit."""
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    data = os.urandom(3 * (1 << 20) + 5)
    (outbox / "trip.csv").write_bytes(data)
    (outbox / "trip.csv.json").write_text(json.dumps(GOOD))

    def no_link(src: object, dst: object) -> None:
        raise OSError(18, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_link)
    store = FileStore.open(tmp_path / "store", 1 << 30, wall_ms=lambda: 5)
    drop = parse_sidecar((outbox / "trip.csv.json").read_bytes(), DEVICES)
    source = SourceId.of(outbox / "trip.csv.json")
    event = store.commit(drop, outbox / "trip.csv", time_ms=1, source=source)
    payload = store.payload(event)
    assert payload.read_bytes() == data
    assert payload.stat().st_nlink == 1  # a copy, not a link
    assert (event.md5, event.length) == (hashlib.md5(data).hexdigest(), len(data))
    assert os.listdir(outbox) == []
    assert FileStore.open(tmp_path / "store", 1 << 30, wall_ms=lambda: 5).pending() == [event]


def _committed_store(tmp_path: Path) -> tuple[FileStore, Path]:
    outbox = tmp_path / "outbox"
    outbox.mkdir()
    (outbox / "a.csv").write_bytes(b"a")
    (outbox / "a.csv.json").write_text(json.dumps(GOOD))
    store = FileStore.open(tmp_path / "store", 1 << 30, wall_ms=lambda: 5)
    drop = parse_sidecar((outbox / "a.csv.json").read_bytes(), DEVICES)
    store.commit(drop, outbox / "a.csv", time_ms=1, source=SourceId.of(outbox / "a.csv.json"))
    return store, tmp_path / "store"


def test_a_commit_cut_short_leaves_nothing_behind_after_a_restart(tmp_path: Path) -> None:
    """kill -9 mid-commit leaves a directory in tmp/ (payload, maybe no record): the next
    open removes it; the committed entry stays, and sequence numbers go on after it."""
    _store, root = _committed_store(tmp_path)
    half = root / "tmp" / "000000000002"
    half.mkdir()
    (half / "payload").write_bytes(b"half")
    reopened = FileStore.open(root, 1 << 30, wall_ms=lambda: 5)
    assert os.listdir(root / "tmp") == []
    assert [e.seq for e in reopened.pending()] == [1]
    assert reopened._next_seq == 2


def test_a_dead_letter_cut_short_is_completed_at_open(tmp_path: Path) -> None:
    """kill -9 after the reply was written and before the entry moved to dead/: the next
    open finishes the move, so the refused event is not sent again."""
    _store, root = _committed_store(tmp_path)
    (root / "pending" / "000000000001" / "reply.json").write_text(
        json.dumps({"code": 1204, "msg": "model", "at": 9})
    )
    reopened = FileStore.open(root, 1 << 30, wall_ms=lambda: 5)
    assert reopened.pending() == []
    (letter,) = reopened.dead_letters()
    assert (letter.event.seq, letter.code, letter.msg) == (1, 1204, "model")
