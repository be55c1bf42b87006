"""`IntegrationHttpServer`: the emulated integration channel on a loopback HTTP(S) port.

Harness only: stdlib `http.server` in a thread (one thread per connection), HTTP/1.1 with
keep-alive so the client's connection pool is exercised. All decisions are
`IntegrationCloud.handle`'s; this module only moves bytes.

    with IntegrationHttpServer(cloud) as server:
        ...  # server.url is http://127.0.0.1:<port>
"""

from __future__ import annotations

import ssl
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Self

from gatewayd.sim.emulator.http_cloud import HttpRequest, IntegrationCloud

#: The emulator refuses bodies larger than this (EnOS: 100 MB a file, a few per request).
MAX_BODY_BYTES = 512 * 1024 * 1024


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def _serve(self) -> None:
        length_text = self.headers.get("Content-Length")
        chunked = self.headers.get("Transfer-Encoding", "").lower() == "chunked"
        if chunked or (self.command == "POST" and length_text is None):
            # EnOS' gateway wants the length up front; so does this emulator. The chunked
            # body is read first: closing on unread data would reset the connection and
            # the client might never see the 411.
            if chunked:
                self._drain_chunked()
            self.send_error(411, "Length Required")
            return
        length = int(length_text or 0)
        if length > MAX_BODY_BYTES:
            self.send_error(413, "Payload Too Large")
            return
        body = self.rfile.read(length)
        headers = {k.lower(): v for k, v in self.headers.items()}
        response = self.server.cloud.handle(HttpRequest(self.command, self.path, headers, body))
        if response.delay:
            time.sleep(response.delay)  # a slow cloud: this connection's thread waits
        self.send_response(response.status)
        for name, value in response.headers.items():
            self.send_header(name, value)
        if isinstance(response.body, bytes):
            self.send_header("Content-Length", str(len(response.body)))
            self.end_headers()
            self.wfile.write(response.body)
        else:
            self.end_headers()
            for chunk in response.body:
                self.wfile.write(chunk)

    def _drain_chunked(self) -> None:
        """Read and drop a chunked body (up to `MAX_BODY_BYTES`)."""
        total = 0
        while total <= MAX_BODY_BYTES:
            size = int(self.rfile.readline(64).split(b";")[0].strip() or b"0", 16)
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailer fields
                return
            self.rfile.read(size + 2)  # the chunk and its CRLF
            total += size

    do_GET = _serve  # noqa: N815 (http.server's naming)
    do_POST = _serve  # noqa: N815

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: tests read the cloud's counters, not an access log on stderr."""


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    cloud: IntegrationCloud

    def handle_error(self, request: object, client_address: object) -> None:
        """A client that went away (aborted upload, timed-out wait) is not an error here."""
        if isinstance(sys.exc_info()[1], ConnectionError | TimeoutError):
            return
        super().handle_error(request, client_address)  # type: ignore[arg-type]


class IntegrationHttpServer:
    """Serves `cloud` on `host` (`port` 0: any free one), with TLS if `ssl_context`."""

    def __init__(
        self,
        cloud: IntegrationCloud,
        port: int = 0,
        ssl_context: ssl.SSLContext | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.cloud = cloud
        self._server = _Server((host, port), _Handler)
        self._server.cloud = cloud
        if ssl_context is not None:
            self._server.socket = ssl_context.wrap_socket(self._server.socket, server_side=True)
        self._scheme = "https" if ssl_context is not None else "http"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="integration-http", daemon=True
        )

    @property
    def port(self) -> int:
        port: int = self._server.server_address[1]
        return port

    @property
    def url(self) -> str:
        host = str(self._server.server_address[0])
        return f"{self._scheme}://{host}:{self.port}"

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
