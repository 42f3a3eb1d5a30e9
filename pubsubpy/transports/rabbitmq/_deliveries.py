"""Whole deliveries read straight off a consuming connection's buffer.

pika turns each delivery into three frames, and each frame goes through its
decoder, the connection's callback table, the channel, a content assembler and
``BlockingChannel``'s pending-event queue before the consumer's callback sees the
message, and trims the read buffer (a copy) once per frame. Profiled on a drain,
that machinery was about half of the consumer's CPU per message, more than
pubsubpy's own work. ``DirectDeliveries`` reads a ``basic.deliver`` whose three
(or more) frames are all in the buffer in one step, decodes it exactly as pika
would (pika's own ``BasicProperties.decode`` for the properties), hands it to the
consumer, and tells pika's loop only that the bytes were used.

Anything else goes the usual way, frame by frame, through the tolerant reader
of ``_frames.py``: other frames and channels, a delivery still arriving in
pieces, a consumer tag that is not the active one (pika rejects deliveries to a
cancelled consumer itself), and anything that does not decode cleanly (a
malformed frame, undecodable properties, a non-UTF-8 name), so errors and
recoveries are exactly pika's and ``_frames.py``'s. Private pika names relied
on, besides ``_frames.py``'s: ``BlockingConnection._request_channel_dispatch``
(ends a waiting ``process_data_events`` as a delivery of pika's own would),
``Channel._consumers`` (a consumer's callback) and the ``_process_frame`` rule
that frames of type -1 are skipped; pinned by ``pika>=1.3,<=1.4.4``, guarded by
``_pika_hooks.py`` (checked at the first connection: a pika without them is refused),
covered by tests/test_direct_deliveries.py.
"""

from __future__ import annotations

import struct
import types
from collections.abc import Callable
from typing import Any

import pika
import pika.spec
from pika.adapters.blocking_connection import BlockingChannel

from pubsubpy.transports.rabbitmq._frames import Decoded, _read_frame_tolerantly

__all__ = ["DirectDeliveries", "OnDelivery", "decode_delivery"]

# delivery_tag, exchange, routing_key, redelivered, properties, body
OnDelivery = Callable[[int, str, str, bool, pika.spec.BasicProperties, bytes], None]
# bytes used, delivery tag, consumer tag, exchange, routing key, redelivered, properties, body
Message = tuple[int, int, str, str, str, bool, pika.spec.BasicProperties, bytes]

_FRAME_HEAD = struct.Struct(">BHL")  # type, channel, payload size
_DELIVER = b"\x00\x3c\x00\x3c"  # basic (60) . deliver (60)
_TAG = struct.Struct(">QB")  # delivery tag, bits (redelivered)
_CONTENT = struct.Struct(">HHQ")  # class, weight, body size
_END = pika.spec.FRAME_END
_METHOD, _HEADER, _BODY = pika.spec.FRAME_METHOD, pika.spec.FRAME_HEADER, pika.spec.FRAME_BODY


class _Used:
    """What ``_read_frame`` returns for bytes already delivered: pika's ``_process_frame`` skips frame
    type -1 (its protocol-header marker), so the loop only trims the buffer."""

    frame_type = -1


_USED = _Used()


def decode_delivery(data: bytes, channel_number: int) -> Message | None:
    """The delivery at the start of ``data`` when every frame of it is there and decodes as pika would
    decode it: (bytes used, delivery tag, consumer tag, ...). None: leave it to pika, frame by frame."""
    size = len(data)
    if size < 12 or data[0] != _METHOD:
        return None
    _, channel, length = _FRAME_HEAD.unpack_from(data, 0)
    end = 7 + length
    if channel != channel_number or data[7:11] != _DELIVER or end + 1 > size or data[end] != _END:
        return None
    try:
        offset = 11
        consumer_tag = data[offset + 1:offset + 1 + data[offset]].decode()
        offset += 1 + data[offset]
        delivery_tag, bits = _TAG.unpack_from(data, offset)
        offset += 9
        exchange = data[offset + 1:offset + 1 + data[offset]].decode()
        offset += 1 + data[offset]
        routing_key = data[offset + 1:offset + 1 + data[offset]].decode()
        offset += 1 + data[offset]
        if offset != end:
            return None
        start = end + 1  # the content header
        if start + 7 > size or data[start] != _HEADER:
            return None
        _, channel, length = _FRAME_HEAD.unpack_from(data, start)
        end = start + 7 + length
        if channel != channel_number or end + 1 > size or data[end] != _END:
            return None
        class_id, _, body_size = _CONTENT.unpack_from(data, start + 7)
        if class_id != pika.spec.BasicProperties.INDEX:
            return None
        properties = pika.spec.BasicProperties()
        properties.decode(data[start + 19:end])
        offset = end + 1
        if body_size == 0:
            return offset, delivery_tag, consumer_tag, exchange, routing_key, bool(bits & 1), properties, b""
        parts = []
        left = body_size
        while left > 0:
            if offset + 7 > size or data[offset] != _BODY:
                return None
            _, channel, length = _FRAME_HEAD.unpack_from(data, offset)
            end = offset + 7 + length
            if channel != channel_number or end + 1 > size or data[end] != _END or length > left:
                return None
            parts.append(data[offset + 7:end])
            left -= length
            offset = end + 1
    except Exception:  # whatever it is, pika's frame-by-frame path meets it and says what it is
        return None
    body = parts[0] if len(parts) == 1 else b"".join(parts)
    return offset, delivery_tag, consumer_tag, exchange, routing_key, bool(bits & 1), properties, body


class DirectDeliveries:
    """Installed on one consuming connection for one channel's consumer (``consumer_tag``); ``stop()``
    before cancelling it: from then on pika sees every frame again.

    The deliveries pika still assembles (those that arrived in pieces) reach ``on_delivery`` straight
    from pika's channel too, not through ``BlockingChannel``'s queue of events, which it would empty
    only after this read: so every delivery reaches the consumer in the order the broker sent it."""

    def __init__(self, connection: pika.BlockingConnection, channel: BlockingChannel, consumer_tag: str,
                 on_delivery: OnDelivery) -> None:
        self.consumer_tag = consumer_tag
        self._channel_number = channel.channel_number
        self._on_delivery = on_delivery
        self._wake = connection._request_channel_dispatch
        impl = connection._impl
        impl._read_frame = types.MethodType(self._reader(), impl)
        channel._impl._consumers[consumer_tag] = self._assembled_by_pika

    def stop(self) -> None:
        self.consumer_tag = ""

    def _assembled_by_pika(self, _channel: object, method: pika.spec.Basic.Deliver,
                           properties: pika.spec.BasicProperties, body: bytes) -> None:
        self._on_delivery(method.delivery_tag, method.exchange, method.routing_key, bool(method.redelivered),
                          properties, body)
        self._wake(self._channel_number)

    def _reader(self) -> Callable[[Any], Decoded | tuple[int, _Used]]:
        channel_number = self._channel_number

        def read_frame(impl: Any) -> Decoded | tuple[int, _Used]:
            data: bytes = impl._frame_buffer
            if data[0] == _METHOD:  # pika calls this with a non-empty buffer only
                message = decode_delivery(data, channel_number)
                if message is not None and message[2] == self.consumer_tag:
                    used, tag, _, exchange, routing_key, redelivered, properties, body = message
                    self._on_delivery(tag, exchange, routing_key, redelivered, properties, body)
                    self._wake(channel_number)  # a waiting process_data_events returns, as for pika's own
                    return used, _USED
            return _read_frame_tolerantly(impl)

        return read_frame
