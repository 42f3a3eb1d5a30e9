"""Messages to bytes: pika's encoding, faster for the types pubsubpy's headers hold.

pika encodes a content header in pure Python, with a chain of ``isinstance``
tests and a ``struct.pack`` per header value. A dead-letter copy carries its
original's headers plus seven of its own, and pika's ``BasicProperties.encode``
was a large share of a dead-lettering drain's CPU (docs/architecture.md has
the profile). ``FastProperties.encode`` writes the very same bytes (the field types pika
picks: ``str`` S, ``bytes`` x, ``bool`` t, ``int`` I when it fits 32 bits else
l, ``None`` V, ``dict`` F, ``list`` A) for values of exactly those types, and
hands any other value (subclasses, ``Decimal``, ``datetime``, pika's ``long``)
to pika's own encoder; tests/test_encoding.py compares both on generated tables.
``publish_frames`` writes a whole ``basic.publish`` the same way (compared with
pika's frames on generated messages too).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

import pika.data
import pika.exceptions
import pika.spec

__all__ = ["FastProperties", "publish_frames"]

_P = pika.spec.BasicProperties
_U32 = struct.Struct(">I").pack
_I32 = struct.Struct(">i").pack
_I64 = struct.Struct(">q").pack
_U64 = struct.Struct(">Q").pack
_U16 = struct.Struct(">H").pack
_OCTET = [bytes((n,)) for n in range(256)]
_INT32 = range(-(2**31), 2**31)


def _short(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else bytes(value)
    if len(raw) > 255:
        raise pika.exceptions.ShortStringTooLong(raw)
    return _OCTET[len(raw)] + raw


def _table(table: Mapping[Any, Any]) -> bytes:
    parts = []
    for key, value in table.items():
        parts.append(_short(key))
        parts.append(_value(value))
    payload = b"".join(parts)
    return _U32(len(payload)) + payload


def _value(value: Any) -> bytes:
    kind = type(value)
    if kind is str:
        raw: bytes = value.encode()
        return b"S" + _U32(len(raw)) + raw
    if kind is int:
        return b"I" + _I32(value) if value in _INT32 else b"l" + _I64(value)
    if value is None:
        return b"V"
    if kind is bool:
        return b"t\x01" if value else b"t\x00"
    if kind is bytes:
        octets: bytes = value
        return b"x" + _U32(len(octets)) + octets
    if kind is dict:
        return b"F" + _table(value)
    if kind is list:
        items = b"".join([_value(item) for item in value])
        return b"A" + _U32(len(items)) + items
    pieces: list[bytes] = []
    pika.data.encode_value(pieces, value)
    return b"".join(pieces)


class FastProperties(pika.spec.BasicProperties):
    """``BasicProperties`` whose ``encode`` is the fast one above (pika calls it when it sends a message)."""

    def encode(self) -> list[bytes]:
        flags = 0
        out: list[bytes] = []
        if self.content_type is not None:
            flags |= _P.FLAG_CONTENT_TYPE
            out.append(_short(self.content_type))
        if self.content_encoding is not None:
            flags |= _P.FLAG_CONTENT_ENCODING
            out.append(_short(self.content_encoding))
        if self.headers is not None:
            flags |= _P.FLAG_HEADERS
            out.append(_table(self.headers))
        if self.delivery_mode is not None:
            flags |= _P.FLAG_DELIVERY_MODE
            out.append(_OCTET[self.delivery_mode])
        if self.priority is not None:
            flags |= _P.FLAG_PRIORITY
            out.append(_OCTET[self.priority])
        for flag, field in ((_P.FLAG_CORRELATION_ID, self.correlation_id), (_P.FLAG_REPLY_TO, self.reply_to),
                            (_P.FLAG_EXPIRATION, self.expiration), (_P.FLAG_MESSAGE_ID, self.message_id)):
            if field is not None:
                flags |= flag
                out.append(_short(field))
        if self.timestamp is not None:
            flags |= _P.FLAG_TIMESTAMP
            out.append(_U64(self.timestamp))
        for flag, field in ((_P.FLAG_TYPE, self.type), (_P.FLAG_USER_ID, self.user_id),
                            (_P.FLAG_APP_ID, self.app_id), (_P.FLAG_CLUSTER_ID, self.cluster_id)):
            if field is not None:
                flags |= flag
                out.append(_short(field))
        return [_U16(flags), *out]  # every flag fits the first 16-bit word: no continuation bit


_FRAME_HEAD = struct.Struct(">BHL").pack
_PUBLISH = b"\x00\x3c\x00\x28\x00\x00"  # basic (60) . publish (40), ticket 0
_CONTENT_HEAD = struct.Struct(">HxxQ").pack
_FRAME_END = b"\xce"


def publish_frames(channel_number: int, body_max: int, exchange: str, routing_key: str, mandatory: bool,
                   properties: FastProperties, body: bytes) -> bytes:
    """The frames of one ``basic.publish`` exactly as pika's ``Channel.basic_publish`` writes them
    (method, content header, the body cut into frames of ``body_max`` bytes), as one string: pika builds
    three frame objects per message and hands each to its transport separately."""
    method = _PUBLISH + _short(exchange) + _short(routing_key) + (b"\x01" if mandatory else b"\x00")
    header = _CONTENT_HEAD(_P.INDEX, len(body)) + b"".join(properties.encode())
    parts = [_FRAME_HEAD(1, channel_number, len(method)), method, _FRAME_END,
             _FRAME_HEAD(2, channel_number, len(header)), header, _FRAME_END]
    for start in range(0, len(body), body_max):
        fragment = body[start:start + body_max]
        parts += (_FRAME_HEAD(3, channel_number, len(fragment)), fragment, _FRAME_END)
    return b"".join(parts)
