"""Dead letters: the ``DeadLetter`` record, and list / replay / purge.

Semantics:

- ``list`` is non-destructive: it reads the dead-letter queue without acking
  and gives every message back, in the same order.
- ``replay`` publishes a confirmed copy into the service queue (original body,
  routing key and properties, dead-letter headers removed, attempts reset,
  aimed at the handlers that failed) and only then acks the dead letter. A
  connection lost in between leaves the dead letter in place: at worst one
  duplicate, never a loss.
- ``purge`` acks (removes) the chosen dead letters.
- A connection lost during any of these raises ``BrokerUnavailable`` rather than
  reconnecting mid-walk (the broker would hand back letters already seen); what
  was done stays done, so running the command again finishes the job.

A dead letter that cannot be decoded is listed as it is (``payload`` is None);
one without a ``message_id`` gets a stable id derived from its body.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

from pubsubpy.deadline import Deadline
from pubsubpy.envelope import (
    H_ATTEMPT,
    H_COPY,
    H_DEAD_LETTERED_AT,
    H_ERROR,
    H_HANDLERS,
    H_QUEUE,
    H_REASON,
    H_ROUTING_KEY,
    Properties,
    clean_headers,
    header_text,
    new_message_id,
)
from pubsubpy.errors import InvalidTopic, OperationTimeout, PublishError
from pubsubpy.outcomes import Reason
from pubsubpy.topics import topic_matches, validate_routing_key
from pubsubpy.topology import dead_letter_queue, service_queue
from pubsubpy.transports.base import Delivery, OutgoingMessage, Transport

__all__ = ["DeadLetter", "DeadLetterFilter", "DeadLetterStore"]

_SETTLE_TIMEOUT = 5.0


def _broker_reason(headers: Mapping[str, Any]) -> Reason:
    reason = headers.get("x-first-death-reason")
    deaths = headers.get("x-death")
    if reason is None and isinstance(deaths, list) and deaths and isinstance(deaths[0], Mapping):
        reason = deaths[0].get("reason")
    return Reason.parse(reason) if reason is not None else Reason.UNKNOWN


@dataclass(frozen=True)
class DeadLetter:
    message_id: str
    routing_key: str
    event_type: str | None
    reason: str
    error: str | None
    handler: str | None
    queue: str | None
    attempts: int
    dead_lettered_at: dt.datetime | None
    body: bytes
    headers: Mapping[str, Any]
    properties: Properties = field(repr=False)

    @property
    def payload(self) -> Any:
        """The body as JSON, or None when it is not valid UTF-8 JSON."""
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return None

    @classmethod
    def from_delivery(cls, delivery: Delivery) -> DeadLetter:
        props = delivery.properties
        headers = props.headers
        reason_text = header_text(headers, H_REASON)
        if reason_text is not None:
            reason = Reason.parse(reason_text)
        elif props.decode_error:  # its headers (and any reason in them) were lost
            reason = Reason.DECODE_ERROR
        else:
            reason = _broker_reason(headers)
        routing_key = delivery.routing_key
        claimed = header_text(headers, H_ROUTING_KEY, limit=300)
        if claimed is not None:
            with contextlib.suppress(InvalidTopic):
                routing_key = validate_routing_key(claimed)
        attempts = headers.get(H_ATTEMPT)
        when = header_text(headers, H_DEAD_LETTERED_AT)
        try:
            dead_at = dt.datetime.fromisoformat(when) if when else None
        except ValueError:
            dead_at = None
        message_id = props.message_id or "sha1-" + hashlib.sha1(delivery.body).hexdigest()[:24]
        return cls(
            message_id=message_id,
            routing_key=routing_key,
            event_type=props.type,
            reason=reason.value,
            error=props.decode_error or header_text(headers, H_ERROR),
            handler=header_text(headers, H_HANDLERS),
            queue=header_text(headers, H_QUEUE),
            attempts=attempts if isinstance(attempts, int) and not isinstance(attempts, bool) and attempts > 0 else 1,
            dead_lettered_at=dead_at,
            body=delivery.body,
            headers=dict(headers),
            properties=props,
        )


@dataclass(frozen=True)
class DeadLetterFilter:
    """Which dead letters an operation applies to; every given criterion must hold."""

    ids: Collection[str] | None = None
    reason: str | None = None
    topic: str | None = None
    handler: str | None = None

    def __call__(self, letter: DeadLetter) -> bool:
        if self.ids is not None and letter.message_id not in self.ids:
            return False
        if self.reason is not None and letter.reason != self.reason:
            return False
        if self.topic is not None and not topic_matches(self.topic, letter.routing_key):
            return False
        return self.handler is None or (letter.handler is not None and self.handler in letter.handler.split(","))


class DeadLetterStore:
    """List, replay and purge one service's dead-letter queue."""

    def __init__(self, transport: Transport, service: str, deadline: Deadline | None = None) -> None:
        self._transport = transport
        self._service = service
        self._deadline = deadline or Deadline.never()

    def _walk(self, visit: Callable[[Delivery, DeadLetter], bool], enough: Callable[[], bool] = lambda: False) -> None:
        """Read the queue once (or until ``enough()``); ``visit`` returns True to ack (remove) a message.
        The rest go back. Past the deadline: ``OperationTimeout``, with whatever was done staying done."""
        consumer = self._transport.consume(dead_letter_queue(self._service), 0, recover=False,
                                           deadline=self._deadline)
        seen = 0
        try:
            while not enough():
                if self._deadline.expired:
                    raise OperationTimeout(f"the dead-letter queue of {self._service!r} was not read to the end "
                                           f"before the deadline ({seen} letters seen); run the command again")
                delivery = consumer.next(self._deadline.cap(_SETTLE_TIMEOUT))
                if delivery is None:
                    break
                if visit(delivery, DeadLetter.from_delivery(delivery)):
                    consumer.ack(delivery.tag)
                    consumer.flush()  # ack now, not in a batch: a lost connection then duplicates one at most
                seen += 1
        finally:
            consumer.close()

    def list_letters(self, match: DeadLetterFilter, limit: int | None = None) -> list[DeadLetter]:
        found: list[DeadLetter] = []

        def visit(_: Delivery, letter: DeadLetter) -> bool:
            if match(letter):
                found.append(letter)
            return False

        self._walk(visit, lambda: limit is not None and len(found) >= limit)  # stops at ``limit`` matches
        return found

    def _remove(self, match: DeadLetterFilter, before_ack: Callable[[DeadLetter], None],
                progress: Callable[[DeadLetter], None] | None) -> list[str]:
        """Ack every matching letter once ``before_ack`` returned for it; returns their ids."""
        removed: list[str] = []

        def visit(_: Delivery, letter: DeadLetter) -> bool:
            if not match(letter):
                return False
            before_ack(letter)
            removed.append(letter.message_id)
            if progress is not None:
                progress(letter)
            return True

        self._walk(visit)
        return removed

    def _republish(self, letter: DeadLetter) -> None:
        """A confirmed copy into the service queue: original body, routing key and properties, no
        dead-letter headers, attempts reset, aimed at the handlers that failed."""
        headers = clean_headers(letter.headers)
        headers.pop(H_ATTEMPT, None)
        headers[H_ROUTING_KEY] = letter.routing_key
        headers[H_COPY] = new_message_id()
        if letter.handler:
            headers[H_HANDLERS] = letter.handler
        queue = service_queue(self._service)
        lost = self._transport.publish(
            [OutgoingMessage("", queue, letter.body, letter.properties.with_headers(headers), mandatory=True)],
            deadline=self._deadline.sooner(60.0))
        if lost:
            raise PublishError(f"service queue {queue!r} is missing; run `pubsubpy declare`", lost)

    def replay(self, match: DeadLetterFilter, progress: Callable[[DeadLetter], None] | None = None) -> list[str]:
        return self._remove(match, self._republish, progress)

    def purge(self, match: DeadLetterFilter, progress: Callable[[DeadLetter], None] | None = None) -> list[str]:
        return self._remove(match, lambda _letter: None, progress)

    def depth(self) -> int:
        return self._transport.queue_depth(dead_letter_queue(self._service), deadline=self._deadline.sooner(60.0))
