"""MQTT 3.1.1 packets by hand: framing, CONNECT parsing, CONNACK and QoS 0 PUBLISH building.

Only what the connect gate needs; written from the OASIS MQTT 3.1.1 standard (§2.2 fixed
header, §3.1 CONNECT, §3.2 CONNACK, §3.3 PUBLISH), not from any MQTT library.
"""

from __future__ import annotations

import asyncio
import struct
from dataclasses import dataclass

CONNECT = 1
CONNACK = 2
PUBLISH = 3

#: CONNACK return codes (MQTT 3.1.1 §3.2.2.3).
ACCEPTED = 0
BAD_USERNAME_OR_PASSWORD = 4
NOT_AUTHORIZED = 5


class MalformedPacket(ValueError):
    """Bytes that are not a well-formed MQTT 3.1.1 packet."""


@dataclass(frozen=True)
class Packet:
    """One whole control packet: its type (high nibble of byte 1) and every byte of it."""

    kind: int
    flags: int
    body: bytes  # the variable header and payload, after the remaining length
    raw: bytes  # the packet as it travelled


@dataclass(frozen=True)
class Connect:
    """The fields of a CONNECT packet that EnOS authentication looks at."""

    protocol_name: str
    protocol_level: int
    clean_session: bool
    keepalive_s: int
    client_id: str
    username: str | None
    password: bytes | None
    will_topic: str | None


def encode_remaining_length(length: int) -> bytes:
    """The variable-length integer of §2.2.3: 7 bits per byte, high bit = more follow."""
    if not 0 <= length <= 268_435_455:
        raise ValueError(f"remaining length {length} out of range")
    out = bytearray()
    while True:
        byte, length = length % 128, length // 128
        out.append(byte | (0x80 if length else 0))
        if not length:
            return bytes(out)


async def read_packet(reader: asyncio.StreamReader) -> Packet:
    """Read exactly one packet; `asyncio.IncompleteReadError` when the stream ends."""
    first = await reader.readexactly(1)
    length_bytes = bytearray()
    length, multiplier = 0, 1
    for _ in range(4):
        byte = (await reader.readexactly(1))[0]
        length_bytes.append(byte)
        length += (byte & 0x7F) * multiplier
        multiplier *= 128
        if not byte & 0x80:
            break
    else:
        raise MalformedPacket("remaining length longer than 4 bytes")
    body = await reader.readexactly(length)
    return Packet(first[0] >> 4, first[0] & 0x0F, body, first + bytes(length_bytes) + body)


class _Cursor:
    """Reads the length-prefixed fields of a packet body, failing clearly when short."""

    def __init__(self, data: bytes) -> None:
        self.data, self.at = data, 0

    def take(self, count: int) -> bytes:
        if self.at + count > len(self.data):
            raise MalformedPacket(f"packet ends {self.at + count - len(self.data)} bytes early")
        chunk = self.data[self.at : self.at + count]
        self.at += count
        return chunk

    def u16(self) -> int:
        value: int = struct.unpack(">H", self.take(2))[0]
        return value

    def binary(self) -> bytes:
        return self.take(self.u16())

    def text(self) -> str:
        try:
            return self.binary().decode("utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedPacket(f"string is not UTF-8: {exc}") from None


def parse_connect(packet: Packet) -> Connect:
    """The CONNECT fields (§3.1.2 variable header, §3.1.3 payload in its fixed order)."""
    if packet.kind != CONNECT:
        raise MalformedPacket(f"first packet has type {packet.kind}, not CONNECT")
    cursor = _Cursor(packet.body)
    name = cursor.text()
    level = cursor.take(1)[0]
    flags = cursor.take(1)[0]
    keepalive = cursor.u16()
    if flags & 0x01:
        raise MalformedPacket("reserved connect flag is set")
    client_id = cursor.text()
    will_topic = None
    if flags & 0x04:
        will_topic = cursor.text()
        cursor.binary()  # the will message
    username = cursor.text() if flags & 0x80 else None
    password = cursor.binary() if flags & 0x40 else None
    if cursor.at != len(cursor.data):
        raise MalformedPacket(f"{len(cursor.data) - cursor.at} stray bytes after CONNECT payload")
    return Connect(
        name, level, bool(flags & 0x02), keepalive, client_id, username, password, will_topic
    )


def build_connect(
    client_id: str, username: str, password: str, *, keepalive_s: int = 60, clean: bool = True
) -> bytes:
    """A CONNECT packet with username and password (used by the tests to probe the gate)."""

    def text(value: str) -> bytes:
        data = value.encode("utf-8")
        return struct.pack(">H", len(data)) + data

    flags = 0x80 | 0x40 | (0x02 if clean else 0)
    body = text("MQTT") + bytes([4, flags]) + struct.pack(">H", keepalive_s)
    body += text(client_id) + text(username) + text(password)
    return bytes([CONNECT << 4]) + encode_remaining_length(len(body)) + body


def build_connack(code: int, *, session_present: bool = False) -> bytes:
    """CONNACK: fixed header 0x20, remaining length 2, flags byte, return code."""
    return bytes([CONNACK << 4, 2, 1 if session_present else 0, code])


def connack_code(packet: Packet) -> int:
    """The return code of a CONNACK packet."""
    if packet.kind != CONNACK or len(packet.body) != 2:
        raise MalformedPacket("not a CONNACK")
    return packet.body[1]


def build_publish_qos0(topic: str, payload: bytes) -> bytes:
    """A QoS 0 PUBLISH (no packet identifier, no DUP, no RETAIN)."""
    name = topic.encode("utf-8")
    body = struct.pack(">H", len(name)) + name + payload
    return bytes([PUBLISH << 4]) + encode_remaining_length(len(body)) + body


def parse_publish(packet: Packet) -> tuple[str, int, bytes]:
    """(topic, qos, payload) of a PUBLISH packet."""
    if packet.kind != PUBLISH:
        raise MalformedPacket("not a PUBLISH")
    qos = (packet.flags >> 1) & 0x03
    cursor = _Cursor(packet.body)
    topic = cursor.text()
    if qos:
        cursor.u16()  # packet identifier
    return topic, qos, packet.body[cursor.at :]
