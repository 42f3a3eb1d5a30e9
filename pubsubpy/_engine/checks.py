"""The checks a delivery meets before it is read, in order; each returns a problem or nothing.

A problem is ``(reason, error text)``: the message is dead-lettered with it and
no later check runs. What the message claims about itself (the routing key of a
retry, the handlers a retry is aimed at) is read here too, and trusted only on
messages that came back through the default exchange.
"""

from __future__ import annotations

import logging

from pubsubpy.envelope import CONTENT_TYPE, H_HANDLERS, H_ROUTING_KEY, header_text
from pubsubpy.errors import InvalidTopic
from pubsubpy.messages import Delivery, Reason
from pubsubpy.topics import validate_routing_key

__all__ = ["Problem", "content_problem", "event_routing_key", "property_problem", "retry_targets", "size_problem"]

log = logging.getLogger("pubsubpy.drain")

Problem = tuple[Reason, str]
"""Why a message is dead-lettered before any handler runs: the reason and the error text."""

_READABLE_ENCODINGS = frozenset({"", "utf-8", "utf8", "identity"})


def event_routing_key(delivery: Delivery) -> str:
    """The event's routing key. A message that came back through the default exchange
    (a retry or a replay) carries it in a header, which is validated before use."""
    if delivery.exchange == "":
        claimed = header_text(delivery.properties.headers, H_ROUTING_KEY, limit=300)
        if claimed is not None:
            try:
                return validate_routing_key(claimed)
            except InvalidTopic:
                log.warning("ignoring malformed %s header %r", H_ROUTING_KEY, claimed[:80])
    return delivery.routing_key


def retry_targets(delivery: Delivery) -> frozenset[str] | None:
    """On a retry, the names of the handlers that failed (only they run again); None: every handler."""
    if delivery.exchange != "":
        return None
    named = header_text(delivery.properties.headers, H_HANDLERS, limit=10_000)
    return frozenset(named.split(",")) if named else None


def property_problem(delivery: Delivery) -> Problem | None:
    """1. The transport could not decode its properties or headers."""
    error = delivery.properties.decode_error
    if error is None:
        return None
    return Reason.DECODE_ERROR, f"message properties could not be decoded: {error}"


def size_problem(delivery: Delivery, max_message_size: int) -> Problem | None:
    """2. A body over ``max_message_size`` is never parsed."""
    size = len(delivery.body)
    if size <= max_message_size:
        return None
    return Reason.TOO_LARGE, f"body of {size} bytes exceeds max_message_size={max_message_size}"


def content_problem(delivery: Delivery) -> Problem | None:
    """3. A ``content_type`` other than JSON, or an encoding (gzip...) we do not read; a missing type is JSON."""
    props = delivery.properties
    if props.content_type == CONTENT_TYPE and props.content_encoding is None:
        return None  # the common case, decided without parsing
    if props.content_type is not None:
        media = props.content_type.split(";", 1)[0].strip().lower()
        if media not in ("application/json", ""):
            return (Reason.UNSUPPORTED_CONTENT_TYPE,
                    f"content_type {props.content_type!r} is not application/json; it was not read")
    if props.content_encoding is not None and props.content_encoding.strip().lower() not in _READABLE_ENCODINGS:
        return (Reason.UNSUPPORTED_CONTENT_TYPE,
                f"content_encoding {props.content_encoding!r} is not supported; send plain UTF-8 JSON")
    return None
