"""Files as uploads read them: described once (length, md5), then streamed in chunks.

Reads happen in a worker thread (`asyncio.to_thread`) so a slow disk never stalls the
event loop, and never hold more than one chunk of a file in memory. A file that changed
between being described and being sent (other length or md5) aborts the upload with
`FileChanged`: the body would contradict its own `files` map
(gatewayd/integration/PROTOCOL.md §3.4).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

from gatewayd.integration.message import AssetRef, FileAttachment

CHUNK_BYTES = 256 * 1024


class FileChanged(Exception):
    """An attached file's bytes differ from what its `files` entry declared."""


def describe_file(
    path: Path,
    local_name: str,
    feature_id: str,
    asset: AssetRef,
    original_filename: str | None = None,
) -> FileAttachment:
    """An attachment for `path`, with its length and md5 read from disk (blocking)."""
    digest = hashlib.md5(usedforsecurity=False)
    length = 0
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
            length += len(chunk)
    return FileAttachment(
        local_name=local_name,
        path=path,
        feature_id=feature_id,
        asset=asset,
        length=length,
        md5=digest.hexdigest(),
        original_filename=original_filename or path.name,
    )


async def file_chunks(attachment: FileAttachment) -> AsyncIterator[bytes]:
    """The attachment's bytes in chunks; `FileChanged` before the last one if they differ."""
    handle = await asyncio.to_thread(attachment.path.open, "rb")
    try:
        digest = hashlib.md5(usedforsecurity=False)
        sent = 0
        while sent < attachment.length:
            want = min(CHUNK_BYTES, attachment.length - sent)
            chunk = await asyncio.to_thread(handle.read, want)
            if not chunk:
                raise FileChanged(
                    f"{attachment.path} shrank to {sent} bytes (declared {attachment.length})"
                )
            digest.update(chunk)
            sent += len(chunk)
            if sent == attachment.length:
                extra = await asyncio.to_thread(handle.read, 1)
                if extra:
                    raise FileChanged(f"{attachment.path} grew past {attachment.length} bytes")
                if digest.hexdigest() != attachment.md5:
                    raise FileChanged(f"{attachment.path} changed (md5 differs)")
            yield chunk
    finally:
        await asyncio.to_thread(handle.close)


async def body_chunks(segments: Iterable[bytes | FileAttachment]) -> AsyncIterator[bytes]:
    """A multipart layout's segments as one stream of bytes."""
    for segment in segments:
        if isinstance(segment, bytes):
            yield segment
        else:
            async for chunk in file_chunks(segment):
                yield chunk
