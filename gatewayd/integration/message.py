"""The `enos-message` JSON of an upload, with its `files` map.

The request, its `local://` file values and its limits: gatewayd/integration/PROTOCOL.md
§3.3-3.5.

Pure: attachments arrive already described (length, md5); building one from a file on
disk is `stream.describe_file`'s job. A file-typed value is the string `local://<name>`,
and `<name>` is both the key in `files` and the `filename` of the file's form-data part.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

EVENT_METHOD = "integration.event.post"
VERSION = "1.1"
LOCAL_PREFIX = "local://"
#: The request message part may hold at most this many bytes (EnOS' limit).
MAX_MESSAGE_BYTES = 512 * 1024
#: Each file part may hold at most this many bytes.
MAX_FILE_BYTES = 100 * 1024 * 1024

#: Local names go into a Content-Disposition header unquoted-safe: no quotes, no CR/LF.
_LOCAL_NAME = re.compile(r"^[A-Za-z0-9._-]{1,128}$")


class BadEventRequest(ValueError):
    """An upload that cannot be sent as built (the caller's mistake, not the cloud's)."""


@dataclass(frozen=True, slots=True)
class AssetRef:
    """The asset a value belongs to: product key + device key, or an asset id."""

    product_key: str | None = None
    device_key: str | None = None
    asset_id: str | None = None

    def __post_init__(self) -> None:
        keys = self.product_key is not None and self.device_key is not None
        if keys == (self.asset_id is not None) or (
            not keys and (self.product_key or self.device_key)
        ):
            raise BadEventRequest("name an asset by productKey+deviceKey or by assetId")

    def fields(self) -> dict[str, str]:
        """The asset as message fields (also the query parameters of file calls)."""
        if self.asset_id is not None:
            return {"assetId": self.asset_id}
        return {"productKey": self.product_key or "", "deviceKey": self.device_key or ""}


@dataclass(frozen=True, slots=True)
class FileAttachment:
    """One file of an upload: where it is, what it belongs to, and its length and md5."""

    local_name: str
    path: Path
    feature_id: str
    asset: AssetRef
    length: int
    md5: str
    original_filename: str

    @property
    def file_ext(self) -> str:
        """The original name's extension with its dot (`.csv`), or empty."""
        return PurePath(self.original_filename).suffix

    def files_entry(self) -> dict[str, Any]:
        """This file's entry in the message's `files` map."""
        entry: dict[str, Any] = {"featureId": self.feature_id, **self.asset.fields()}
        entry["originalFilename"] = self.original_filename
        if self.file_ext:
            entry["fileExt"] = self.file_ext
        entry["md5"] = self.md5
        entry["fileLength"] = self.length
        return entry


@dataclass(frozen=True, slots=True)
class EventRecord:
    """The events of one asset at one time: `{eventId: {param: value}}`."""

    asset: AssetRef
    time_ms: int
    events: dict[str, dict[str, Any]]


def local_value(local_name: str) -> str:
    """The value that stands for an attached file in `events`."""
    return f"{LOCAL_PREFIX}{local_name}"


def build_event_message(
    request_id: str,
    records: Sequence[EventRecord],
    files: Sequence[FileAttachment],
    *,
    realtime: bool,
) -> bytes:
    """The `enos-message` part's bytes; `BadEventRequest` when they would be refused."""
    if not records:
        raise BadEventRequest("an upload needs at least one event record")
    _check_files(records, files)
    message: dict[str, Any] = {
        "method": EVENT_METHOD,
        "id": request_id,
        "version": VERSION,
        "params": [
            {**record.asset.fields(), "time": record.time_ms, "events": record.events}
            for record in records
        ],
        "files": {f.local_name: f.files_entry() for f in files},
        # false marks backlog (offline) data, so EnOS does not treat it as happening now.
        "isRealtimeIntegration": realtime,
    }
    body = json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode()
    if len(body) > MAX_MESSAGE_BYTES:
        raise BadEventRequest(
            f"the request message is {len(body)} bytes, over EnOS' {MAX_MESSAGE_BYTES}"
        )
    return body


def _check_files(records: Sequence[EventRecord], files: Sequence[FileAttachment]) -> None:
    """Every attachment is referenced once by a `local://` value, and every reference has one."""
    names = [f.local_name for f in files]
    for name in names:
        if not _LOCAL_NAME.match(name):
            raise BadEventRequest(f"file name {name!r} must match {_LOCAL_NAME.pattern}")
    if len(set(names)) != len(names):
        raise BadEventRequest("two attachments share a local name")
    for attachment in files:
        if attachment.length > MAX_FILE_BYTES:
            raise BadEventRequest(
                f"file {attachment.path} is {attachment.length} bytes, over EnOS' {MAX_FILE_BYTES}"
            )
    referenced = [
        value.removeprefix(LOCAL_PREFIX)
        for record in records
        for value in _string_values(record.events)
        if value.startswith(LOCAL_PREFIX)
    ]
    missing = sorted(set(referenced) - set(names))
    unused = sorted(set(names) - set(referenced))
    if missing:
        raise BadEventRequest(f"values refer to files not attached: {missing}")
    if unused:
        raise BadEventRequest(f"attached files no value refers to: {unused}")


def _string_values(node: object) -> Iterator[str]:
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for value in node.values():
            yield from _string_values(value)
    elif isinstance(node, list):
        for value in node:
            yield from _string_values(value)
