"""Markers: messages a replay writes into the event log to find its place in it (never events).

A marker goes straight into the stream (the default exchange, routing key the
stream's name), so no other queue sees it, and every replay skips every marker.
"""

from __future__ import annotations

import time

from pubsubpy.envelope import H_LOG_MARKER, H_PUBLISHED_AT, Properties, header_text, new_message_id
from pubsubpy.messages import Delivery, OutgoingMessage

__all__ = ["is_marker", "marker_id", "new_marker"]

MARKER_TYPE = "pubsubpy.log-marker"


def new_marker(stream: str, marker: str) -> OutgoingMessage:
    headers: dict[str, object] = {H_LOG_MARKER: marker, H_PUBLISHED_AT: int(time.time() * 1000)}
    properties = Properties(message_id=new_message_id(), timestamp=int(time.time()), type=MARKER_TYPE,
                            headers=headers)
    return OutgoingMessage("", stream, b"", properties, mandatory=True)


def is_marker(delivery: Delivery) -> bool:
    return H_LOG_MARKER in delivery.properties.headers


def marker_id(delivery: Delivery) -> str | None:
    return header_text(delivery.properties.headers, H_LOG_MARKER)
