"""The layout of a streamed `multipart/form-data` upload body (RFC 7578), without the I/O.

`MultipartLayout` lists the body as segments: header/delimiter bytes written here, and
the attachments whose bytes the sender reads from disk in between. Because every file's
length is known up front, so is the body's, and the request carries a plain
`Content-Length` instead of chunked encoding (some gateways refuse chunked uploads).
The parts EnOS expects: gatewayd/integration/PROTOCOL.md §3.2; why sized: §6.7.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from gatewayd.integration.message import FileAttachment

MESSAGE_PART = "enos-message"
FILE_PART = "enos-file"
CRLF = b"\r\n"


def new_boundary() -> str:
    """A boundary no file will contain by chance (128 random bits)."""
    return f"gatewayd-{secrets.token_hex(16)}"


@dataclass(frozen=True, slots=True)
class MultipartLayout:
    """One upload's body: the message part, then one part per file."""

    boundary: str
    message: bytes
    files: Sequence[FileAttachment]

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def segments(self) -> Iterator[bytes | FileAttachment]:
        """The body in order: bytes to send as they are, and files to send whole."""
        delimiter = b"--" + self.boundary.encode("ascii") + CRLF
        yield (
            delimiter
            + f'Content-Disposition: form-data; name="{MESSAGE_PART}"'.encode()
            + CRLF
            + b"Content-Type: application/json; charset=utf-8"
            + CRLF
            + CRLF
            + self.message
            + CRLF
        )
        for attachment in self.files:
            yield (
                delimiter
                + (
                    f'Content-Disposition: form-data; name="{FILE_PART}"; '
                    f'filename="{attachment.local_name}"'
                ).encode()
                + CRLF
                + b"Content-Type: application/octet-stream"
                + CRLF
                + f"Content-Length: {attachment.length}".encode()
                + CRLF
                + CRLF
            )
            yield attachment
            yield CRLF
        yield b"--" + self.boundary.encode("ascii") + b"--" + CRLF

    def content_length(self) -> int:
        """The body's length in bytes."""
        return sum(s.length if isinstance(s, FileAttachment) else len(s) for s in self.segments())
