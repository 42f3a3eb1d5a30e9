"""The wire format: how an event becomes an AMQP message and back.

Body: UTF-8 JSON of the validated payload. Properties: ``content_type``
``application/json``, ``message_id`` (uuid4 hex), ``timestamp`` (seconds),
``type`` (full model path + event), ``app_id`` (publishing service),
``delivery_mode`` 2. Headers the library adds all start with ``pubsubpy-``
(``pubsubpy-published-at``: when it was published, in epoch milliseconds),
except the W3C trace context (``traceparent``, ``tracestate``, ``baggage``)
that tracing adds;
``x-death`` is never sent back to the broker, and a library header arriving
from outside is clamped before it is used.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CONTENT_TYPE",
    "HEADER_PREFIX",
    "H_ATTEMPT",
    "H_COPY",
    "H_DEAD_LETTERED_AT",
    "H_DEFERRALS",
    "H_DEFERRED_SINCE",
    "H_ERROR",
    "H_HANDLERS",
    "H_KEY",
    "H_PROBE",
    "H_PUBLISHED_AT",
    "H_QUEUE",
    "H_REASON",
    "H_ROUTING_KEY",
    "H_SEQUENCE",
    "H_VERSION",
    "KEY_LIMIT",
    "SEQUENCE_LIMIT",
    "Properties",
    "attempt_from",
    "clean_headers",
    "key_from",
    "new_message_id",
    "sequence_from",
    "version_from",
]

CONTENT_TYPE = "application/json"
HEADER_PREFIX = "pubsubpy-"
H_VERSION = "pubsubpy-schema-version"
H_ATTEMPT = "pubsubpy-attempt"
H_HANDLERS = "pubsubpy-handlers"
H_ROUTING_KEY = "pubsubpy-routing-key"
H_REASON = "pubsubpy-reason"
H_ERROR = "pubsubpy-error"
H_QUEUE = "pubsubpy-original-queue"
H_DEAD_LETTERED_AT = "pubsubpy-dead-lettered-at"
H_DEFERRED_SINCE = "pubsubpy-deferred-since"  # epoch milliseconds: first sent back for another version
H_DEFERRALS = "pubsubpy-deferrals"            # how many times so far
H_PUBLISHED_AT = "pubsubpy-published-at"      # epoch milliseconds (the AMQP timestamp has whole seconds)
H_KEY = "pubsubpy-key"                        # ordering key: "<model path>:<key field's value>"
H_SEQUENCE = "pubsubpy-sequence"              # per-key sequence, an integer in [0, 2**63), growing in commit order
H_PROBE = "pubsubpy-probe"                    # a parked message moved back to test a paused subscription
H_REPLAYED = "pubsubpy-replayed"              # a replay's dead letter: the replay's id
H_LOG_MARKER = "pubsubpy-log-marker"          # a replay's marker in the event log (never an event): its id
H_COPY = "pubsubpy-copy-id"                   # fresh on every retry/deferral/dead-letter/replay copy, so a
                                              # consumer tells a redelivered copy from a later copy of it

# Notes about one journey through a queue: a copy made for another purpose (dead letter, retry, replay) drops them.
_DEAD_LETTER_HEADERS = (H_REASON, H_ERROR, H_QUEUE, H_DEAD_LETTERED_AT, H_DEFERRED_SINCE, H_DEFERRALS, H_COPY,
                        H_PROBE)
_BROKER_HEADERS = ("x-death", "x-first-death-exchange", "x-first-death-queue", "x-first-death-reason",
                   "x-last-death-exchange", "x-last-death-queue", "x-last-death-reason", "x-delivery-count",
                   "x-stream-offset")


def new_message_id() -> str:
    """A uuid4 as 32 hex digits (``uuid.uuid4().hex``, without building a UUID object)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    return raw.hex()


@dataclass(slots=True)
class Properties:
    """The AMQP basic properties pubsubpy reads and writes."""

    content_type: str | None = CONTENT_TYPE
    content_encoding: str | None = None
    message_id: str | None = None
    timestamp: int | None = None
    type: str | None = None
    app_id: str | None = None
    delivery_mode: int | None = 2
    expiration: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    # Not a wire property: set by a transport when it could not decode the message's properties
    # (what it could recover is filled in above); the message is dead-lettered as ``decode_error``.
    decode_error: str | None = None
    correlation_id: str | None = None  # the AMQP property, set by the publisher's caller

    def with_headers(self, headers: dict[str, Any]) -> Properties:
        """The same message properties (persistent) with ``headers`` instead: for retry, dead-letter
        and replay copies of a message."""
        return Properties(self.content_type, self.content_encoding, self.message_id, self.timestamp, self.type,
                          self.app_id, 2, None, headers, correlation_id=self.correlation_id)

    @classmethod
    def for_event(cls, event_type: str | None, app_id: str | None, headers: dict[str, Any]) -> Properties:
        now = time.time()
        headers[H_PUBLISHED_AT] = int(now * 1000)
        return cls(message_id=new_message_id(), timestamp=int(now), type=event_type, app_id=app_id, headers=headers)


def version_from(headers: Mapping[str, Any]) -> int:
    """The schema version a message claims (``pubsubpy-schema-version``): absent or garbled is 1."""
    raw = headers.get(H_VERSION)
    if isinstance(raw, int) and not isinstance(raw, bool) and 1 <= raw <= 1_000_000:
        return raw
    return 1


def attempt_from(headers: Mapping[str, Any], max_attempts: int) -> int:
    """The attempt number a header claims, clamped to ``1..max_attempts``; garbage counts as 1."""
    raw = headers.get(H_ATTEMPT)
    if isinstance(raw, bool):
        return 1
    if isinstance(raw, bytes):
        raw = raw.decode("ascii", "replace")
    try:
        value = int(raw) if raw is not None else 1
    except (TypeError, ValueError):
        return 1
    return min(max(value, 1), max_attempts)


def deferral_from(headers: Mapping[str, Any], now: float, window: float) -> tuple[float, int]:
    """(since, deferrals so far) claimed by a deferred message, clamped: a missing or garbled
    ``since`` is ``now``, one in the future is ``now``, one older than the window is the window's start."""
    raw, count = headers.get(H_DEFERRED_SINCE), headers.get(H_DEFERRALS)
    since = raw / 1000.0 if isinstance(raw, int) and not isinstance(raw, bool) else now
    since = min(max(since, now - window), now)
    count = count if isinstance(count, int) and not isinstance(count, bool) else 0
    return since, min(max(count, 0), 1000)


KEY_LIMIT = 255            # characters of an ordering key (the inbox's column)
SEQUENCE_LIMIT = 2 ** 63   # sequences are in [0, SEQUENCE_LIMIT): a signed 64-bit column holds them


def key_from(headers: Mapping[str, Any]) -> str | None:
    """The ordering key (``pubsubpy-key``) as text, at most ``KEY_LIMIT`` characters; None when absent or empty."""
    raw = headers.get(H_KEY)
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if raw is None or isinstance(raw, (bool, dict, list)):
        return None
    text = str(raw)[:KEY_LIMIT]
    return text or None


def sequence_from(headers: Mapping[str, Any]) -> int | None:
    """The per-key sequence (``pubsubpy-sequence``); None when absent, not an integer, or outside
    ``[0, 2**63)`` (the caller warns: such a message runs without the stale guard)."""
    raw = headers.get(H_SEQUENCE)
    if isinstance(raw, int) and not isinstance(raw, bool) and 0 <= raw < SEQUENCE_LIMIT:
        return raw
    return None


def clean_headers(headers: Mapping[str, Any], *, keep_dead_letter: bool = False) -> dict[str, Any]:
    """Headers safe to send again: no broker bookkeeping (``x-death``...), optionally no dead-letter notes."""
    drop = _BROKER_HEADERS if keep_dead_letter else _BROKER_HEADERS + _DEAD_LETTER_HEADERS
    return {key: value for key, value in headers.items() if key not in drop}


def header_text(headers: Mapping[str, Any], key: str, limit: int = 2000) -> str | None:
    """A header as text, bytes decoded, truncated; ``None`` when absent."""
    value = headers.get(key)
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return str(value)[:limit]


def published_at(headers: Mapping[str, Any]) -> float | None:
    """When the message was published (epoch seconds), from ``pubsubpy-published-at``; None when absent or garbled."""
    raw = headers.get(H_PUBLISHED_AT)
    if isinstance(raw, int) and not isinstance(raw, bool) and raw > 0:
        return raw / 1000.0
    return None
