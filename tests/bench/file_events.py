"""File events: MB/s through the store (commit) and through store + upload, RSS of 50 MB.

    python -m tests.bench file_events [--files 10] [--file-mb 5] [--mb 50]

In this process: the daemon's outbox watcher, file store and sender (real files, fsyncs,
a real `IntegrationClient`); in a child process: the sink server of
`tests.bench.integration_upload` (reads and md5s each body, answers 200), so its buffers
do not count in our RSS. Printed, each with the baseline measured in the same run:

- commit MB/s (hard link + md5 + fsync, and copy + md5 + fsync when linking is refused)
  against reading the same bytes once with md5 (the floor any commit pays);
- drop-to-delivered MB/s against the bare client's upload MB/s of the same files;
- peak RSS growth while one `--mb` MiB file is committed and uploaded (limit 5 MiB).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import multiprocessing
import resource
import tempfile
import time
from pathlib import Path
from unittest import mock

from gatewayd.clock import SystemClock
from gatewayd.config.models import FileEventConfig, LogFormat, LogLevel
from gatewayd.integration.drops import DeviceFileEvents
from gatewayd.integration.filestore import FileStore
from gatewayd.integration.http import HttpSettings, IntegrationClient
from gatewayd.integration.message import EventRecord, FileAttachment
from gatewayd.integration.outbox import OutboxWatcher
from gatewayd.integration.replies import UploadOutcome
from gatewayd.integration.sender import FileEventSender
from gatewayd.logging import configure_logging
from tests.bench.integration_upload import ACCESS_KEY, ORG, SECRET_KEY, _serve, _write_random

MIB = 1 << 20
DEVICES = {
    "meter-1": DeviceFileEvents(
        "subPK",
        "meter1",
        {"tripRecord": FileEventConfig(event="tripRecord", file_param="capture")},
    )
}


def _drop(outbox: Path, name: str, source: Path) -> None:
    _copy(source, outbox / name)  # a file of the outbox's own (linked later by the store)
    sidecar = {"device": "meter-1", "event": "tripRecord", "file_param": "capture"}
    (outbox / f"{name}.json").write_text(json.dumps(sidecar))


def _copy(source: Path, target: Path) -> None:
    with source.open("rb") as src, target.open("wb") as dst:
        while chunk := src.read(MIB):
            dst.write(chunk)


def _md5_floor(paths: list[Path]) -> float:
    """Seconds to read and md5 `paths` once (page cache warm, as for the commits)."""
    start = time.perf_counter()
    for path in paths:
        digest = hashlib.md5(usedforsecurity=False)
        with path.open("rb") as handle:
            while chunk := handle.read(MIB):
                digest.update(chunk)
    return time.perf_counter() - start


async def _commit_rate(root: Path, sources: list[Path], *, link: bool) -> tuple[float, float]:
    """(commit seconds, md5 floor seconds) for `sources` dropped into a fresh outbox."""
    outbox = root / ("outbox-link" if link else "outbox-copy")
    outbox.mkdir()
    for index, source in enumerate(sources):
        _drop(outbox, f"f{index:03d}.bin", source)
    floor = _md5_floor([outbox / f"f{i:03d}.bin" for i in range(len(sources))])
    store = FileStore.open(root / ("store-link" if link else "store-copy"), 1 << 40,
                           wall_ms=lambda: time.time_ns() // 1_000_000)  # fmt: skip
    watcher = OutboxWatcher([outbox], store, DEVICES)
    start = time.perf_counter()
    if link:
        result = await watcher.scan()
    else:
        with mock.patch("os.link", side_effect=OSError(18, "cross-device")):
            result = await watcher.scan()
    elapsed = time.perf_counter() - start
    assert len(result.committed) == len(sources), result
    return elapsed, floor


async def _deliver_rate(url: str, root: Path, sources: list[Path]) -> tuple[float, float]:
    """(drop-to-delivered seconds, bare client upload seconds) for `sources`."""
    settings = HttpSettings(url, url, ORG, ACCESS_KEY, SECRET_KEY, timeout=120.0)
    async with IntegrationClient(settings) as client:
        bare = await _bare_uploads(client, sources)
        outbox = root / "outbox-deliver"
        outbox.mkdir()
        for index, source in enumerate(sources):
            _drop(outbox, f"d{index:03d}.bin", source)
        store = FileStore.open(root / "store-deliver", 1 << 40, wall_ms=lambda: 0)
        sender = _sender(store, client)
        start = time.perf_counter()
        await OutboxWatcher([outbox], store, DEVICES).scan()
        while await sender.send_one():
            pass
        elapsed = time.perf_counter() - start
        assert sender.stats.delivered == len(sources), sender.stats
    return elapsed, bare


def _sender(store: FileStore, client: IntegrationClient) -> FileEventSender:
    async def post(record: EventRecord, file: FileAttachment, realtime: bool) -> UploadOutcome:
        return await client.post_event([record], [file], realtime=realtime)

    return FileEventSender(store, post, clock=SystemClock(), live_window=30.0)


async def _bare_uploads(client: IntegrationClient, sources: list[Path]) -> float:
    from gatewayd.integration.message import AssetRef, local_value
    from gatewayd.integration.stream import describe_file

    asset = AssetRef(product_key="subPK", device_key="meter1")
    start = time.perf_counter()
    for source in sources:
        attachment = await asyncio.to_thread(describe_file, source, "f1", "tripRecord", asset)
        record = EventRecord(asset, 1, {"tripRecord": {"capture": local_value("f1")}})
        await client.post_event([record], [attachment], realtime=False)
    return time.perf_counter() - start


async def _rss_of_one(url: str, root: Path, big: Path, small: Path) -> float:
    """Peak RSS growth (MiB) committing and uploading `big`, after a warm-up with `small`."""
    settings = HttpSettings(url, url, ORG, ACCESS_KEY, SECRET_KEY, timeout=120.0)
    async with IntegrationClient(settings) as client:
        store = FileStore.open(root / "store-rss", 1 << 40, wall_ms=lambda: 0)
        sender = _sender(store, client)
        outbox = root / "outbox-rss"
        outbox.mkdir()
        watcher = OutboxWatcher([outbox], store, DEVICES)
        _drop(outbox, "warm.bin", small)
        await watcher.scan()
        await sender.send_one()
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        _drop(outbox, "big.bin", big)
        await watcher.scan()
        await sender.send_one()
        assert sender.stats.delivered == 2, sender.stats
        return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024


def main() -> None:
    """Run the three measurements against a sink server in a child process."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=10)
    parser.add_argument("--file-mb", type=int, default=5)
    parser.add_argument("--mb", type=int, default=50, help="the RSS file's size in MiB")
    args = parser.parse_args()
    configure_logging(LogLevel.WARNING, LogFormat.CONSOLE)
    ctx = multiprocessing.get_context("spawn")
    ports = ctx.SimpleQueue()
    server = ctx.Process(target=_serve, args=("sink", ports), daemon=True)
    server.start()
    try:
        url = f"http://127.0.0.1:{ports.get()}"
        with tempfile.TemporaryDirectory() as scratch:
            root = Path(scratch)
            # RSS first: ru_maxrss is a peak, so the other phases must not have raised it.
            big, small = root / "big.bin", root / "small.bin"
            _write_random(big, args.mb * MIB)
            _write_random(small, MIB)
            growth = asyncio.run(_rss_of_one(url, root, big, small))
            verdict = "ok" if growth <= 5 else "OVER"
            print(f"{args.mb} MiB file committed and uploaded: peak RSS growth {growth:.1f} MiB "
                  f"(limit 5: {verdict})")  # fmt: skip
            sources = []
            for index in range(args.files):
                sources.append(root / f"src{index}.bin")
                _write_random(sources[-1], args.file_mb * MIB)
            total = args.files * args.file_mb
            for link in (True, False):
                spent, floor = asyncio.run(_commit_rate(root, sources, link=link))
                print(f"commit ({'hard link' if link else 'copy'}) {total} MiB in {args.files} "
                      f"files: {total / spent:7.1f} MB/s; md5 read floor {total / floor:7.1f} "
                      f"MB/s; ratio {floor / spent:.2f}")  # fmt: skip
            spent, bare = asyncio.run(_deliver_rate(url, root, sources))
            print(f"drop to delivered {total} MiB: {total / spent:7.1f} MB/s; bare client "
                  f"uploads {total / bare:7.1f} MB/s; ratio {bare / spent:.2f}")  # fmt: skip
    finally:
        server.kill()
        server.join()


if __name__ == "__main__":
    main()
