"""Dead letters: the ``DeadLetter`` record, and list / replay / purge.

Semantics:

- ``list`` is non-destructive: it reads the dead-letter queue without acking
  and gives every message back, in the same order.
- Every operation returns only once the letters it gave back are in the queue
  again (bounded wait), so a count, list or replay right after it sees them.
  The broker requeues unacked messages asynchronously after the consumer goes
  away (a quorum queue applies the return through its Raft log), so without
  this wait a count read at once could miss every letter just listed.
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
import logging
import time
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
from pubsubpy.errors import InvalidTopic, OperationTimeout, PublishError, TransportError
from pubsubpy.messages import Reason
from pubsubpy.topics import topic_matches, validate_routing_key
from pubsubpy.topology import dead_letter_queue, service_queue
from pubsubpy.transports.base import Delivery, OutgoingMessage, Transport

__all__ = ["DeadLetter", "DeadLetterFilter", "DeadLetterStore", "ShardedReplay"]

log = logging.getLogger("pubsubpy.deadletters")

_SETTLE_TIMEOUT = 5.0
_GIVE_BACK_POLL = (0.002, 0.1)  # first and longest pause between depth reads while letters go back


def _broker_reason(headers: Mapping[str, Any]) -> Reason:
    reason = headers.get("x-first-death-reason")
    deaths = headers.get("x-death")
    if reason is None and isinstance(deaths, list) and deaths and isinstance(deaths[0], Mapping):
        reason = deaths[0].get("reason")
    return Reason.parse(reason) if reason is not None else Reason.UNKNOWN


@dataclass(frozen=True)
class DeadLetter:
    """One message in a service's dead-letter queue, as ``list_dead_letters()`` returns it.

    The body is exactly what was published; replaying sends it back unchanged.
    """

    message_id: str
    """The message id; for a message published without one, a stable id derived from its body (``sha1-...``)."""
    routing_key: str
    """The event's routing key (``Booking.paid``)."""
    event_type: str | None
    """The AMQP ``type``: full model path and event."""
    reason: str
    """Why it was dead-lettered: a ``Reason`` value (``"handler_error"``, ``"rejected"``...)."""
    error: str | None
    """What went wrong, e.g. ``"ValueError: negative amount -500"`` or the validation error."""
    handler: str | None
    """The handler(s) that failed or rejected it (``module.function``, comma-separated)."""
    queue: str | None
    """The queue it was consumed from."""
    attempts: int
    """How many times the failed handlers ran."""
    dead_lettered_at: dt.datetime | None
    """When it was dead-lettered."""
    body: bytes
    """The body, byte for byte as it was published."""
    headers: Mapping[str, Any]
    """Every header, the library's dead-letter headers included."""
    properties: Properties = field(repr=False)
    """The AMQP properties."""

    @property
    def payload(self) -> Any:
        """The body as JSON, or None when it is not valid UTF-8 JSON."""
        try:
            return json.loads(self.body)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return None

    @classmethod
    def from_delivery(cls, delivery: Delivery) -> DeadLetter:
        """Read a delivery from the dead-letter queue (its reason from pubsubpy's headers or the broker's
        ``x-death``)."""
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


@dataclass(frozen=True)
class ShardedReplay:
    """A service with shards: a letter of its ordered subscriptions (by the handlers it names, else by its
    routing key) is replayed through ``exchange`` (``<service>.shards``), never into the service queue."""

    exchange: str
    ordered_names: frozenset[str]
    ordered_key: Callable[[str], bool]  # a routing key an ordered subscription of the service takes

    def takes(self, letter: DeadLetter) -> bool:
        if letter.handler:
            return any(name in self.ordered_names for name in letter.handler.split(","))
        return self.ordered_key(letter.routing_key)


class DeadLetterStore:
    """List, replay and purge one service's dead-letter queue."""

    def __init__(self, transport: Transport, service: str, deadline: Deadline | None = None,
                 shards: ShardedReplay | None = None) -> None:
        """``deadline`` bounds the whole walk; without one, each call to the broker has the transport's own
        bound (a connect per URL plus a confirm wait), so a silent broker is still an error in time.
        ``shards``: where a service with shards replays the letters of its ordered subscriptions."""
        self._transport = transport
        self._service = service
        self._shards = shards
        self._deadline = deadline or Deadline.never()
        self._call_deadline = deadline  # None: the transport bounds each call itself

    def _call(self, longest: float) -> Deadline | None:
        """The deadline of one call to the broker: ``longest`` at most, within the walk's deadline."""
        return None if self._call_deadline is None else self._call_deadline.sooner(longest)

    def _walk(self, visit: Callable[[Delivery, DeadLetter], bool], enough: Callable[[], bool] = lambda: False) -> None:
        """Read the queue once (or until ``enough()``); ``visit`` returns True to ack (remove) a message.
        The rest go back. Past the deadline: ``OperationTimeout``, with whatever was done staying done."""
        queue = dead_letter_queue(self._service)
        before = self._transport.queue_depth(queue, deadline=self._call(60.0))
        consumer = self._transport.consume(queue, 0, recover=False, deadline=self._call_deadline)
        seen = removed = 0
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
                    removed += 1
                seen += 1
        finally:
            consumer.close()
        # Everything we held and did not remove goes back: what was ready before (a walk stopped at
        # ``limit`` holds unread letters too) or all we read (letters dead-lettered during the walk).
        self._await_given_back(queue, max(before, seen) - removed)

    def _await_given_back(self, queue: str, expected: int) -> None:
        """Wait (bounded) until ``queue`` holds at least ``expected`` ready messages again.

        Closing the consumer only asks the broker to requeue what it held; the broker does it
        afterwards (for a quorum queue, once the return is committed to its log). Letters taken
        meanwhile by another reader keep the depth low: past the bound this gives up with a warning,
        the letters are safe either way."""
        if expected <= 0:
            return
        limit = self._deadline.sooner(_SETTLE_TIMEOUT)
        pause, longest = _GIVE_BACK_POLL
        try:
            while (depth := self._transport.queue_depth(queue, deadline=limit)) < expected and not limit.expired:
                time.sleep(limit.cap(pause))
                pause = min(pause * 2, longest)
        except TransportError as exc:  # the walk itself is done; the broker requeues regardless
            log.warning("could not check that the dead letters went back to %r: %s", queue, exc)
            return
        if depth < expected:
            log.warning("%d of the %d dead letters given back to %r are not ready yet (another reader may "
                        "hold them); an immediate count or list may miss them", expected - depth, expected, queue)

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
        exchange, routing_key, target = "", queue, f"service queue {queue!r}"
        if self._shards is not None and self._shards.takes(letter):  # to its key's shard, by its key header
            exchange, routing_key = self._shards.exchange, letter.routing_key
            target = f"exchange {exchange!r}"
        lost = self._transport.publish(
            [OutgoingMessage(exchange, routing_key, letter.body, letter.properties.with_headers(headers),
                             mandatory=True)],
            deadline=self._call(60.0))
        if lost:
            raise PublishError(f"{target} routed it nowhere; run `pubsubpy declare`", lost)

    def replay(self, match: DeadLetterFilter, progress: Callable[[DeadLetter], None] | None = None) -> list[str]:
        return self._remove(match, self._republish, progress)

    def purge(self, match: DeadLetterFilter, progress: Callable[[DeadLetter], None] | None = None) -> list[str]:
        return self._remove(match, lambda _letter: None, progress)

    def depth(self) -> int:
        return self._transport.queue_depth(dead_letter_queue(self._service), deadline=self._call(60.0))
