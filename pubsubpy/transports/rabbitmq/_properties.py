"""pubsubpy's ``Properties`` to pika's ``BasicProperties`` and back: the one place that knows both.

Properties pika could not decode arrive as ``UndecodableProperties`` (see ``_frames.py``): what was
recovered is kept, and ``Properties.decode_error`` says what was lost.
"""

from __future__ import annotations

import pika
import pika.spec

from pubsubpy.envelope import Properties
from pubsubpy.transports.rabbitmq._encoding import FastProperties
from pubsubpy.transports.rabbitmq._frames import UndecodableProperties

__all__ = ["from_pika_properties", "to_pika_properties"]


def to_pika_properties(props: Properties) -> FastProperties:
    return FastProperties(
        content_type=props.content_type,
        content_encoding=props.content_encoding,
        message_id=props.message_id,
        timestamp=props.timestamp,
        type=props.type,
        app_id=props.app_id,
        delivery_mode=props.delivery_mode,
        expiration=props.expiration,
        headers=props.headers or None,
        correlation_id=props.correlation_id,
    )


def from_pika_properties(props: pika.spec.BasicProperties) -> Properties:
    """Ours from pika's (positional and without copying ``headers``: pika decodes a fresh table for
    every message, and this runs once per delivery)."""
    return Properties(props.content_type, props.content_encoding, props.message_id, props.timestamp, props.type,
                      props.app_id, props.delivery_mode, props.expiration, props.headers or {},
                      props.decode_error if type(props) is UndecodableProperties else None, props.correlation_id)
