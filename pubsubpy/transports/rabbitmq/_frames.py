"""Messages whose properties pika cannot decode, recovered instead of killing the connection.

RabbitMQ accepts header values pika 1.x cannot decode: a timestamp past year
9999, tables nested hundreds deep (``RecursionError``)... pika decodes the
content-header frame while reading the socket, so the exception kills the
connection, the broker redelivers the message, and no consumer ever gets past
it (nor to the messages behind it). ``tolerate_undecodable_properties`` makes
one connection decode such a header field by field instead: the headers table
is length-prefixed, so it is skipped whole and the other properties are kept.
The result is an ``UndecodableProperties`` carrying ``decode_error``, and the
message can be dead-lettered like any other bad input. Frame lengths never
change, so the body and the frames after it parse as usual. Only that
connection is changed; pika's modules are not patched. Private pika names
relied on: ``Connection._read_frame`` and ``Connection._frame_buffer`` (the
same in pika 1.3 to 1.4.4, the pin ``pika>=1.3,<=1.4.4``; pika's main branch no
longer calls ``_read_frame``). Guarded by ``_pika_hooks.py``, which proves at the
first connection that pika's read loop calls this reader and refuses a pika on
which it does not; covered by ``tests/test_undecodable_frames.py`` and
``tests/test_pika_hooks.py``.
"""

from __future__ import annotations

import logging
import struct
import types
from typing import Any

import pika
import pika.data
import pika.exceptions
import pika.frame
import pika.spec

__all__ = ["UndecodableProperties", "decode_frame_tolerantly", "tolerate_undecodable_properties"]

log = logging.getLogger("pubsubpy.rabbitmq")

_ERROR_LIMIT = 500
_P = pika.spec.BasicProperties
# AMQP 0-9-1 basic properties in wire order: (attribute, flag, struct format, or "s" short string / "F" table)
_FIELDS: tuple[tuple[str, int, str], ...] = (
    ("content_type", _P.FLAG_CONTENT_TYPE, "s"),
    ("content_encoding", _P.FLAG_CONTENT_ENCODING, "s"),
    ("headers", _P.FLAG_HEADERS, "F"),
    ("delivery_mode", _P.FLAG_DELIVERY_MODE, ">B"),
    ("priority", _P.FLAG_PRIORITY, ">B"),
    ("correlation_id", _P.FLAG_CORRELATION_ID, "s"),
    ("reply_to", _P.FLAG_REPLY_TO, "s"),
    ("expiration", _P.FLAG_EXPIRATION, "s"),
    ("message_id", _P.FLAG_MESSAGE_ID, "s"),
    ("timestamp", _P.FLAG_TIMESTAMP, ">Q"),
    ("type", _P.FLAG_TYPE, "s"),
    ("user_id", _P.FLAG_USER_ID, "s"),
    ("app_id", _P.FLAG_APP_ID, "s"),
    ("cluster_id", _P.FLAG_CLUSTER_ID, "s"),
)

Decoded = tuple[int, pika.frame.Frame | pika.frame.ProtocolHeader | None]


class UndecodableProperties(pika.spec.BasicProperties):
    """Properties pika could not decode, recovered field by field; ``headers`` is None when the table was lost."""

    def __init__(self, decode_error: str, **properties: Any) -> None:
        super().__init__(**properties)
        self.decode_error = decode_error


def tolerate_undecodable_properties(connection: pika.BlockingConnection) -> None:
    """Make ``connection`` hand over a message with undecodable properties instead of dying on it."""
    impl = connection._impl
    impl._read_frame = types.MethodType(_read_frame_tolerantly, impl)  # pika's method, one call level less


def _read_frame_tolerantly(impl: Any) -> Decoded:
    return decode_frame_tolerantly(impl._frame_buffer)


def decode_frame_tolerantly(data: bytes) -> Decoded:
    """``pika.frame.decode_frame``, except that a content header it cannot decode is recovered."""
    try:
        return pika.frame.decode_frame(data)
    except Exception as exc:  # whatever pika raised (ValueError, OSError, RecursionError, InvalidFieldType...)
        recovered = _recover_header_frame(data, exc)
        if recovered is None:
            raise
        return recovered


def _describe(exc: BaseException) -> str:
    if isinstance(exc, pika.exceptions.AMQPError):
        return repr(exc)  # pika's reprs say what went wrong; their str() is only the raw argument
    return f"{type(exc).__name__}: {exc}"


def _recover_header_frame(data: bytes, original: Exception) -> Decoded | None:
    """The content-header frame at the start of ``data``, decoded leniently; None if it is not one."""
    try:
        frame_type, channel_number, size = struct.unpack_from(">BHL", data, 0)
        frame_end = pika.spec.FRAME_HEADER_SIZE + size + pika.spec.FRAME_END_SIZE
        if (frame_type != pika.spec.FRAME_HEADER or len(data) < frame_end
                or data[frame_end - 1] != pika.spec.FRAME_END):
            return None
        payload = data[pika.spec.FRAME_HEADER_SIZE:frame_end - 1]
        class_id, _weight, body_size = struct.unpack_from(">HHQ", payload, 0)
        if class_id != pika.spec.BasicProperties.INDEX:
            return None
        properties = _recover_properties(payload[12:], original)
    except Exception:  # not a well-formed basic content header after all: pika's error stands
        return None
    log.warning("message properties on channel %d could not be decoded; recovered what could be: %s",
                channel_number, properties.decode_error)
    return frame_end, pika.frame.Header(channel_number, body_size, properties)


def _recover_properties(encoded: bytes, original: Exception) -> UndecodableProperties:
    flags, offset, word = 0, 0, 0
    while True:
        (partial,) = struct.unpack_from(">H", encoded, offset)
        offset += 2
        flags |= partial << (word * 16)
        if not partial & 1:
            break
        word += 1
    values: dict[str, Any] = {}
    error: str | None = None
    for name, flag, kind in _FIELDS:
        if not flags & flag:
            continue
        if kind == "s":
            values[name], offset = pika.data.decode_short_string(encoded, offset)
        elif kind == "F":
            (size,) = struct.unpack_from(">I", encoded, offset)
            end = offset + 4 + size
            if end > len(encoded):
                raise ValueError("the headers table runs past the frame")
            try:
                table, used = pika.data.decode_table(encoded[offset:end], 0)
                if used != end - offset:
                    raise ValueError(f"the headers table overruns its declared {size} bytes")
                values[name] = table
            except Exception as exc:  # anything the table holds that pika cannot read: skip it whole
                error = f"headers could not be decoded: {_describe(exc)}"
            offset = end
        else:
            (values[name],) = struct.unpack_from(kind, encoded, offset)
            offset += struct.calcsize(kind)
    if offset > len(encoded):
        raise ValueError("the properties run past the frame")
    if error is None:  # the table decodes now: report what pika raised
        error = f"properties could not be decoded: {_describe(original)}"
    return UndecodableProperties(error[:_ERROR_LIMIT], **values)
