"""pubsubpy's ``Properties`` to pika's ``BasicProperties`` and back: the one place that knows both.

Properties pika could not decode arrive as ``UndecodableProperties`` (see ``frames.py``): what was
recovered is kept, and ``Properties.decode_error`` says what was lost.
"""

from __future__ import annotations

import pika
import pika.spec

from pubsubpy.envelope import Properties
from pubsubpy.transports.rabbitmq.frames import UndecodableProperties

__all__ = ["from_pika_properties", "to_pika_properties"]


def to_pika_properties(props: Properties) -> pika.BasicProperties:
    return pika.BasicProperties(
        content_type=props.content_type,
        content_encoding=props.content_encoding,
        message_id=props.message_id,
        timestamp=props.timestamp,
        type=props.type,
        app_id=props.app_id,
        delivery_mode=props.delivery_mode,
        expiration=props.expiration,
        headers=props.headers or None,
    )


def from_pika_properties(props: pika.spec.BasicProperties) -> Properties:
    return Properties(
        content_type=props.content_type,
        content_encoding=props.content_encoding,
        message_id=props.message_id,
        timestamp=props.timestamp,
        type=props.type,
        app_id=props.app_id,
        delivery_mode=props.delivery_mode,
        expiration=props.expiration,
        headers=dict(props.headers) if props.headers else {},
        decode_error=props.decode_error if isinstance(props, UndecodableProperties) else None,
    )
