"""The EnOS integration HTTP client: the only module that imports httpx.

`IntegrationClient` gets and caches the APIM token (`token`), posts one event upload with
its files as a streamed multipart body (`post_event`, a typed `UploadOutcome`), and
downloads or deletes a stored file (`download`, `delete`, our own `IntegrationError`s).
The calls are those of gatewayd/integration/PROTOCOL.md: the token §2, the upload §3.1,
stored files §4.
Every call that is refused for its token refreshes the token and is tried once more.
httpx's exceptions never leave this module: transport failures and timeouts become
`Retryable` outcomes or `IntegrationUnavailable`.

The secret key only ever enters the sha256 of a token request; it is not logged.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Self

import httpx
import structlog

from gatewayd.config.models import IntegrationHttpConfig
from gatewayd.enos.ids import IdGenerator
from gatewayd.integration.message import (
    AssetRef,
    EventRecord,
    FileAttachment,
    build_event_message,
)
from gatewayd.integration.multipart import MultipartLayout, new_boundary
from gatewayd.integration.replies import (
    Accepted,
    AuthFailure,
    IntegrationAuthError,
    IntegrationError,
    IntegrationUnavailable,
    Rejected,
    Retryable,
    UploadOutcome,
    classify_upload_reply,
    file_call_error,
    is_error_envelope,
)
from gatewayd.integration.stream import body_chunks
from gatewayd.integration.token import (
    TOKEN_PATH,
    TokenCache,
    TokenRefused,
    parse_token_reply,
    token_request_body,
)

log = structlog.get_logger(__name__)

TOKEN_HEADER = "apim-accesstoken"  # noqa: S105 (a header name, not a secret)
INTEGRATION_PATH = "/connect-service/v2.1/integration"
FILES_PATH = "/connect-service/v2.1/files"
#: Replies other than file downloads are small JSON; read no more than this of one.
MAX_REPLY_BYTES = 1 << 20
#: A download reply in JSON this small may be an error envelope rather than the file.
ENVELOPE_MAX_BYTES = 64 * 1024


def base_url(value: str) -> str:
    """`host[:port]` or a URL, as `scheme://host[:port]` (https when no scheme is given)."""
    url = value if "://" in value else f"https://{value}"
    return url.rstrip("/")


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """Where the integration channel is and how the service account signs in."""

    address: str
    apigw: str
    org_id: str
    access_key: str
    secret_key: str = field(repr=False)
    #: Where the secret key came from ("inline" or its file), to name it in auth errors.
    secret_source: str = "inline"  # noqa: S105 (a description, not a secret)
    verify: bool = True
    ca_file: Path | None = None
    connect_timeout: float = 10.0
    timeout: float = 30.0

    @classmethod
    def from_config(cls, config: IntegrationHttpConfig) -> HttpSettings:
        """Settings from a loaded `integration.http` (its secret already read)."""
        if config.secret_key is None:
            raise ValueError("integration.http has no secret key (the loader reads the file)")
        address = base_url(config.address)
        return cls(
            address=address,
            apigw=base_url(config.apigw) if config.apigw else address,
            org_id=config.org_id,
            access_key=config.access_key,
            secret_key=config.secret_key.get_secret_value(),
            secret_source=str(config.secret_key_file) if config.secret_key_file else "inline",
            verify=config.verify,
            ca_file=config.ca_file,
            connect_timeout=config.connect_timeout,
            timeout=config.timeout,
        )


class _AuthRefused(Exception):
    """Internal: a call's reply said the token is bad."""


class IntegrationClient:
    """One service account's connection pool to the token service and integration address."""

    def __init__(
        self,
        settings: HttpSettings,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        self.settings = settings
        self._clock = clock
        self._wall_ms = wall_ms
        self._tokens = TokenCache()
        self._token_lock = asyncio.Lock()
        self._client: httpx.AsyncClient | None = None
        self._ids = IdGenerator.from_time_ms(wall_ms())
        self._last_stamp = 0

    async def __aenter__(self) -> Self:
        verify: ssl.SSLContext | bool = self.settings.verify
        if self.settings.verify and self.settings.ca_file is not None:
            verify = ssl.create_default_context(cafile=str(self.settings.ca_file))
        self._client = httpx.AsyncClient(
            verify=verify,
            timeout=httpx.Timeout(self.settings.timeout, connect=self.settings.connect_timeout),
            follow_redirects=False,
            trust_env=False,  # a proxy from the environment must not see the token silently
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    @property
    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            raise RuntimeError("IntegrationClient used outside 'async with'")
        return self._client

    # ------------------------------------------------------------------ token

    async def token(self) -> str:
        """A token good for now: the cached one, or a fresh one from the token service.

        Raises `IntegrationAuthError` when the service refuses the account and
        `IntegrationUnavailable` when it cannot be reached.
        """
        async with self._token_lock:
            held = self._tokens.current(self._clock())
            if held is not None:
                return held
            now = self._clock()
            # Strictly increasing: the service refuses an encryption it has seen (1001), and
            # two requests in one millisecond (a refresh right after a refusal) would repeat it.
            stamp = max(self._wall_ms(), self._last_stamp + 1)
            self._last_stamp = stamp
            body = token_request_body(self.settings.access_key, stamp, self.settings.secret_key)
            try:
                response = await self._http.post(
                    self.settings.apigw + TOKEN_PATH,
                    content=body,
                    headers={"Content-Type": "application/json"},
                )
            except httpx.HTTPError as exc:
                raise IntegrationUnavailable(
                    f"token service {self.settings.apigw} unreachable: {_describe(exc)}"
                ) from None
            if response.status_code >= 500:
                raise IntegrationUnavailable(f"token service answered HTTP {response.status_code}")
            try:
                grant = parse_token_reply(response.content)
            except TokenRefused as exc:
                raise IntegrationAuthError(
                    f"token service refused access key {self.settings.access_key!r} "
                    f"(secret key: {self.settings.secret_source}): status {exc.status}: {exc.msg}"
                ) from None
            self._tokens.store(grant, now)
            log.debug("integration token obtained", expire_s=grant.expire)
            return grant.token

    async def _with_token(self, call: Callable[[str], Awaitable[object]]) -> object:
        """`call(token)`; on an auth refusal, once more with a fresh token."""
        token = await self.token()
        try:
            return await call(token)
        except _AuthRefused:
            self._tokens.invalidate(token)
            log.info("integration token refused; getting a new one")
        return await call(await self.token())

    # ------------------------------------------------------------------ upload

    async def post_event(
        self,
        records: Sequence[EventRecord],
        files: Sequence[FileAttachment] = (),
        *,
        realtime: bool = True,
        request_id: str | None = None,
    ) -> UploadOutcome:
        """Post one `integration.event.post` with its files; the files are streamed from disk.

        `realtime=False` marks backlog data. Raises `BadEventRequest` for a request that
        cannot be built and `FileChanged` when a file changed since it was described;
        everything the cloud or the network does is an outcome.
        """
        message = build_event_message(
            request_id or self._ids.next_id(), records, files, realtime=realtime
        )
        url = self.settings.address + INTEGRATION_PATH
        params = {"action": "postEvent", "orgId": self.settings.org_id}
        last_auth: list[AuthFailure] = []

        async def send(token: str) -> UploadOutcome:
            # A fresh layout each try: the body stream is read from disk again.
            layout = MultipartLayout(new_boundary(), message, files)
            headers = {
                TOKEN_HEADER: token,
                "Content-Type": layout.content_type,
                "Content-Length": str(layout.content_length()),
            }
            request = self._http.build_request(
                "POST", url, params=params, headers=headers, content=body_chunks(layout.segments())
            )
            status, body = await self._exchange(request)
            outcome = classify_upload_reply(status, body)
            if isinstance(outcome, AuthFailure):
                last_auth.append(outcome)
                raise _AuthRefused
            return outcome

        try:
            result = await self._with_token(send)
        except _AuthRefused:
            return Retryable(f"refused after a token refresh: {last_auth[-1].reason}", auth=True)
        except IntegrationAuthError as exc:
            return Retryable(str(exc), auth=True)
        except IntegrationUnavailable as exc:
            return Retryable(str(exc))
        assert isinstance(result, Accepted | Rejected | Retryable)
        return result

    async def _exchange(self, request: httpx.Request) -> tuple[int, bytes]:
        """Send `request`; its status and (bounded) body, or `IntegrationUnavailable`."""
        try:
            response = await self._http.send(request, stream=True)
            try:
                return response.status_code, await _read_bounded(response)
            finally:
                await response.aclose()
        except httpx.HTTPError as exc:
            where = request.url.copy_with(query=None)  # the query is long and says nothing here
            raise IntegrationUnavailable(f"{request.method} {where}: {_describe(exc)}") from None

    # ------------------------------------------------------------------ files

    def _file_params(self, action: str, uri: str, asset: AssetRef) -> dict[str, str]:
        params = {"action": action, "orgId": self.settings.org_id, "fileUri": uri}
        if action == "download":
            params["category"] = "feature"
        return {**params, **asset.fields()}

    async def download(self, uri: str, asset: AssetRef, write: Callable[[bytes], object]) -> int:
        """Stream the stored file `uri` of `asset` into `write`, chunk by chunk; its length.

        Raises `IntegrationNotFound`, `IntegrationAuthError`, `IntegrationUnavailable` or
        `IntegrationRefused`. Nothing is written before the reply is known to be the file.
        """
        url = self.settings.address + FILES_PATH
        params = self._file_params("download", uri, asset)

        async def fetch(token: str) -> int:
            request = self._http.build_request(
                "GET", url, params=params, headers={TOKEN_HEADER: token}
            )
            try:
                response = await self._http.send(request, stream=True)
                try:
                    if response.status_code != 200:
                        _raise_file_error(response.status_code, await _read_bounded(response))
                        raise IntegrationUnavailable(
                            f"EnOS answered a download with HTTP {response.status_code}"
                        )
                    return await _stream_file(response, write)
                finally:
                    await response.aclose()
            except httpx.HTTPError as exc:
                raise IntegrationUnavailable(f"download failed: {_describe(exc)}") from None

        written = await self._authorised(fetch)
        assert isinstance(written, int)
        return written

    async def delete(self, uri: str, asset: AssetRef) -> None:
        """Delete the stored file `uri` of `asset`; the same errors as `download`."""
        url = self.settings.address + FILES_PATH
        params = self._file_params("delete", uri, asset)

        async def remove(token: str) -> None:
            request = self._http.build_request(
                "POST", url, params=params, headers={TOKEN_HEADER: token}
            )
            status, body = await self._exchange(request)
            _raise_file_error(status, body)

        await self._authorised(remove)

    async def _authorised(self, call: Callable[[str], Awaitable[object]]) -> object:
        """`_with_token` for file calls: a second refusal is an `IntegrationAuthError`."""
        try:
            return await self._with_token(call)
        except _AuthRefused:
            raise IntegrationAuthError(
                f"EnOS refused the token of access key {self.settings.access_key!r} "
                "after a refresh (is the service account authorised for this asset?)"
            ) from None


def _raise_file_error(status: int, body: bytes) -> None:
    error = file_call_error(status, body)
    if isinstance(error, AuthFailure):
        raise _AuthRefused
    if isinstance(error, IntegrationError):
        raise error


async def _stream_file(response: httpx.Response, write: Callable[[bytes], object]) -> int:
    """Copy a 200 download reply into `write`; its length. An EnOS error envelope raises.

    EnOS answers some failures with 200 and a JSON `{"code", "msg"}`. A JSON reply is
    therefore looked at first; a small object with an integer `code` and a `msg` is taken
    for such an envelope (a stored JSON file of exactly that shape is the one ambiguity),
    anything else is the file and is written out, head first.
    """
    chunks = response.aiter_bytes()
    written = 0
    if _is_json(response):
        head = bytearray()
        async for chunk in chunks:
            head += chunk
            if len(head) > ENVELOPE_MAX_BYTES:
                break
        if len(head) <= ENVELOPE_MAX_BYTES and is_error_envelope(bytes(head)):
            _raise_file_error(200, bytes(head))
        write(bytes(head))
        written = len(head)
    async for chunk in chunks:
        write(chunk)
        written += len(chunk)
    return written


def _is_json(response: httpx.Response) -> bool:
    content_type: str = response.headers.get("content-type", "")
    return content_type.startswith("application/json")


async def _read_bounded(response: httpx.Response) -> bytes:
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > MAX_REPLY_BYTES:
            break
    return bytes(body[:MAX_REPLY_BYTES])


def _describe(exc: httpx.HTTPError) -> str:
    """One line for a transport failure: its kind and the library's words."""
    kinds: dict[type[httpx.HTTPError], str] = {
        httpx.ConnectTimeout: "connect timed out",
        httpx.ReadTimeout: "timed out waiting for the reply",
        httpx.WriteTimeout: "timed out sending",
        httpx.PoolTimeout: "timed out waiting for a connection",
        httpx.ConnectError: "connection failed",
    }
    kind = kinds.get(type(exc), type(exc).__name__)
    detail = str(exc).strip()
    return f"{kind}: {detail}" if detail else kind
