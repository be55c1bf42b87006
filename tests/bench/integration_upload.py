"""Integration upload: MB/s of file uploads on loopback, and the CPU/RSS cost of a 50 MB file.

    python -m tests.bench integration_upload [--mb 50] [--repeats 3]

The client (gatewayd's `IntegrationClient`) runs in this process; the server runs in a
child process so its buffers do not count in our RSS. Two servers:

- sink: answers the token request and reads each upload's body in 256 KiB chunks,
  discarding it (md5 only), then 200: the client's own throughput.
- emulator: the project's emulated cloud, which parses the multipart body with the
  stdlib `email` parser and checks md5/length: an end-to-end figure (slower: it parses
  in memory).

Printed: MB/s per server (median of the repeats), client CPU seconds per 50 MB, and the
client's peak RSS growth during the upload (ru_maxrss after a warm-up upload; the issue's
limit is 5 MiB: the body must be streamed, not built in memory).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import multiprocessing
import os
import resource
import statistics
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from gatewayd.integration.http import HttpSettings, IntegrationClient
from gatewayd.integration.message import AssetRef, EventRecord, local_value
from gatewayd.integration.replies import Accepted
from gatewayd.integration.stream import describe_file

ASSET = AssetRef(product_key="subPK", device_key="meter1")
ACCESS_KEY, SECRET_KEY, ORG = "ak-bench", "sk-bench", "o-bench"
MIB = 1 << 20


class _Sink(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        left = int(self.headers.get("Content-Length", "0"))
        digest = hashlib.md5()
        while left:
            chunk = self.rfile.read(min(left, 256 * 1024))
            if not chunk:
                break
            digest.update(chunk)
            left -= len(chunk)
        if self.path.startswith("/apim-token-service"):
            reply = {"status": 0, "msg": "SUCCESS", "data": {"accessToken": "T", "expire": 7200}}
        else:
            reply = {"code": 200, "msg": "OK", "requestId": digest.hexdigest(), "data": {}}
        body = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet."""


def _serve(kind: str, port_out: multiprocessing.SimpleQueue) -> None:  # type: ignore[type-arg]
    if kind == "sink":
        server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
        port_out.put(server.server_address[1])
        server.serve_forever()
    from gatewayd.sim.emulator.http_cloud import Asset, IntegrationCloud, IntegrationSpec
    from gatewayd.sim.emulator.http_server import IntegrationHttpServer

    spec = IntegrationSpec(
        ORG,
        {ACCESS_KEY: SECRET_KEY},
        (Asset("subPK", "meter1", "a1", {"tripRecord": frozenset({"capture"})}),),
    )
    emulator = IntegrationHttpServer(IntegrationCloud(spec))
    emulator.start()
    port_out.put(emulator.port)
    while True:
        time.sleep(3600)


def _write_random(path: Path, size: int) -> None:
    with path.open("wb") as handle:
        for _ in range(size // MIB):
            handle.write(os.urandom(MIB))


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _maxrss_kib() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


async def _upload(client: IntegrationClient, path: Path) -> None:
    attachment = await asyncio.to_thread(describe_file, path, "f1", "tripRecord", ASSET)
    record = EventRecord(ASSET, 1, {"tripRecord": {"capture": local_value("f1")}})
    outcome = await client.post_event([record], [attachment], realtime=False)
    if not isinstance(outcome, Accepted):
        raise SystemExit(f"upload not accepted: {outcome}")


async def measure(url: str, big: Path, size: int, small: Path, repeats: int) -> dict[str, float]:
    """Median MB/s, client CPU s per upload and peak RSS growth (MiB) for `big` (`size` B)."""
    settings = HttpSettings(url, url, ORG, ACCESS_KEY, SECRET_KEY, timeout=120.0)
    async with IntegrationClient(settings) as client:
        await _upload(client, small)  # warm-up: code paths, token, connection
        base_rss = _maxrss_kib()
        rates, cpus = [], []
        for _ in range(repeats):
            cpu0, t0 = _cpu(), time.perf_counter()
            await _upload(client, big)
            wall = time.perf_counter() - t0
            cpus.append(_cpu() - cpu0)
            rates.append(size / MIB / wall)
        growth = (_maxrss_kib() - base_rss) / 1024
    return {"mb_s": statistics.median(rates), "cpu_s": statistics.median(cpus), "rss": growth}


def main() -> None:
    """Run both servers and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=50, help="file size in MiB (50)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        big, small = Path(scratch) / "big.bin", Path(scratch) / "small.bin"
        _write_random(big, args.mb * MIB)
        _write_random(small, MIB)
        for kind in ("sink", "emulator"):
            ctx = multiprocessing.get_context("spawn")
            ports = ctx.SimpleQueue()
            server = ctx.Process(target=_serve, args=(kind, ports), daemon=True)
            server.start()
            try:
                url = f"http://127.0.0.1:{ports.get()}"
                figures = asyncio.run(measure(url, big, args.mb * MIB, small, args.repeats))
            finally:
                server.kill()
                server.join()
            verdict = "ok" if figures["rss"] <= 5 else "OVER"
            print(
                f"{kind:9s} {args.mb} MiB upload: {figures['mb_s']:7.1f} MB/s, "
                f"client CPU {figures['cpu_s']:.2f} s ({figures['cpu_s'] / args.mb * 50:.2f} s "
                f"per 50 MiB), client peak RSS growth {figures['rss']:.1f} MiB "
                f"(limit 5: {verdict})"
            )


if __name__ == "__main__":
    main()
