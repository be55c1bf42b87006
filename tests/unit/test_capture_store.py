"""Capture files on a real directory: a running capture never looks like a drop; finish
publishes NAME then NAME.json; every crash point is completed by `recover`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from gatewayd.mapping.capture import Append, Begin, Finish
from gatewayd.mapping.capture_store import CaptureStore

NAME = "inv-01-trip-20251205T100005Z.csv"
SIDECAR = {
    "device": "inv-01",
    "event": "trip",
    "file_param": "record",
    "params": {"reason": 7},
    "time": 1_764_928_805_000,
    "filename": NAME,
}
HEADER_AND_BEFORE = "time,power\r\n2025-12-05T10:00:04.000Z,1.5\r\n2025-12-05T10:00:05.000Z,2.5\r\n"
AFTER = "2025-12-05T10:00:06.000Z,3.5\r\n"


def drops(directory: Path) -> list[str]:
    """Payload names with a sidecar: what an outbox watcher would take."""
    return sorted(p.name.removesuffix(".json") for p in directory.glob("*.json"))


def test_a_running_capture_is_no_drop_until_it_finishes(tmp_path: Path) -> None:
    """While running: only .part files; finished: NAME (header, before and after rows)
    and NAME.json (the sidecar), no .part left."""
    store = CaptureStore(tmp_path / "captures")
    name = store.begin(Begin(1, NAME, SIDECAR, HEADER_AND_BEFORE))
    store.append(Append(1, AFTER, 1))
    directory = tmp_path / "captures"
    assert name == NAME
    assert sorted(p.name for p in directory.iterdir()) == [NAME + ".json.part", NAME + ".part"]
    assert drops(directory) == []
    done = store.finish(Finish(1))
    assert done is not None
    assert (done.name, done.rows) == (NAME, 3)
    assert sorted(p.name for p in directory.iterdir()) == [NAME, NAME + ".json"]
    assert json.loads((directory / (NAME + ".json")).read_text()) == SIDECAR
    with (directory / NAME).open(newline="") as file:
        rows = list(csv.DictReader(file))
    assert [(r["time"], r["power"]) for r in rows] == [
        ("2025-12-05T10:00:04.000Z", "1.5"),
        ("2025-12-05T10:00:05.000Z", "2.5"),
        ("2025-12-05T10:00:06.000Z", "3.5"),
    ]
    assert done.size == (directory / NAME).stat().st_size


def test_recover_completes_a_capture_killed_while_running(tmp_path: Path) -> None:
    """A store that never finished (the process died): the next one's recover publishes
    the drop with what was written, and the sidecar it was begun with."""
    directory = tmp_path / "captures"
    dead = CaptureStore(directory)
    dead.begin(Begin(1, NAME, SIDECAR, HEADER_AND_BEFORE))
    dead.append(Append(1, AFTER, 1))
    (completed,) = CaptureStore(directory).recover()
    assert (completed.name, completed.rows) == (NAME, 3)
    assert drops(directory) == [NAME]
    assert (directory / NAME).read_bytes().decode() == HEADER_AND_BEFORE + AFTER
    assert json.loads((directory / (NAME + ".json")).read_text()) == SIDECAR
    assert CaptureStore(directory).recover() == []


def test_recover_completes_a_capture_killed_between_its_two_renames(tmp_path: Path) -> None:
    """NAME in place, its sidecar still NAME.json.part: recover renames the sidecar."""
    directory = tmp_path / "captures"
    CaptureStore(directory).begin(Begin(1, NAME, SIDECAR, HEADER_AND_BEFORE))
    (directory / (NAME + ".part")).rename(directory / NAME)
    (completed,) = CaptureStore(directory).recover()
    assert completed.rows == 2
    assert drops(directory) == [NAME]


def test_recover_keeps_an_event_whose_file_was_never_started(tmp_path: Path) -> None:
    """Killed after the sidecar, before the CSV: the drop gets a bare header, the event
    is not lost; a sidecar never renamed into place (.tmp) is removed."""
    directory = tmp_path / "captures"
    directory.mkdir()
    (directory / (NAME + ".json.part")).write_text(json.dumps(SIDECAR))
    (directory / ("other.csv.json.part.tmp")).write_text("{")
    (completed,) = CaptureStore(directory).recover()
    assert (completed.name, completed.rows) == (NAME, 0)
    assert (directory / NAME).read_bytes() == b"time\r\n"
    assert sorted(p.name for p in directory.iterdir()) == [NAME, NAME + ".json"]


def test_a_name_in_use_gets_a_number(tmp_path: Path) -> None:
    """Two captures of one event in one second: the second file is NAME-2.csv; both
    sidecars name the file the cloud keeps."""
    store = CaptureStore(tmp_path)
    assert store.begin(Begin(1, NAME, SIDECAR, HEADER_AND_BEFORE)) == NAME
    second = store.begin(Begin(2, NAME, SIDECAR, HEADER_AND_BEFORE))
    assert second == "inv-01-trip-20251205T100005Z-2.csv"
    store.finish(Finish(2))
    store.finish(Finish(1))
    assert drops(tmp_path) == sorted([NAME, second])
    assert json.loads((tmp_path / (second + ".json")).read_text())["filename"] == NAME
