"""The drain loop: take what is outstanding, settle each message, ack only what is safe.

Delivery semantics (at least once):

- A message is acked only after its outcome is safe: handled, or a copy
  (retry or dead letter) confirmed by the broker. A crash or a lost connection
  before that leaves it unacked, and the broker delivers it again
  (``MessageInfo.redelivered``).
- A retry copy carries the next attempt number and the names of the handlers
  that failed, so only those run again. With ``retry_delay > 0`` it waits in a
  TTL queue, so it does not block the drain or the messages behind it.
- Broker failures (not bad messages) end the drain with a ``TransportError``;
  whatever was not acked comes back next time.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Callable

from pubsubpy.dispatch import Decision, Dispatcher
from pubsubpy.envelope import (
    H_ATTEMPT,
    H_DEAD_LETTERED_AT,
    H_ERROR,
    H_HANDLERS,
    H_QUEUE,
    H_REASON,
    H_ROUTING_KEY,
    Properties,
    clean_headers,
)
from pubsubpy.errors import PublishError
from pubsubpy.outcomes import DrainResult, Outcome
from pubsubpy.settings import Settings
from pubsubpy.topology import dead_letter_exchange, retry_delay_ms, retry_queue, service_queue
from pubsubpy.transports.base import Delivery, OutgoingMessage, Transport

__all__ = ["drain_queue"]

log = logging.getLogger("pubsubpy.drain")


def _copy(delivery: Delivery, headers: dict[str, object]) -> Properties:
    merged = clean_headers(delivery.properties.headers)
    merged.update(headers)
    return delivery.properties.with_headers(merged)


class _Settler:
    """Turns a ``Decision`` into the broker operations that make it durable."""

    def __init__(self, settings: Settings, service: str, transport: Transport) -> None:
        self._settings = settings
        self._service = service
        self._transport = transport

    def retry_copy(self, delivery: Delivery, decision: Decision) -> OutgoingMessage:
        delay = retry_delay_ms(self._settings, decision.attempt)
        headers: dict[str, object] = {
            H_ATTEMPT: decision.attempt + 1,
            H_HANDLERS: ",".join(s.name for s in decision.failed),
            H_ROUTING_KEY: decision.routing_key,
        }
        target = retry_queue(self._service, delay) if delay > 0 else service_queue(self._service)
        return OutgoingMessage("", target, delivery.body, _copy(delivery, headers), mandatory=True)

    def dead_letter_copy(self, delivery: Delivery, decision: Decision) -> OutgoingMessage:
        assert decision.reason is not None
        headers: dict[str, object] = {
            H_REASON: decision.reason.value,
            H_ERROR: decision.error or "",
            H_ATTEMPT: decision.attempt,
            H_ROUTING_KEY: decision.routing_key,
            H_QUEUE: service_queue(self._service),
            H_DEAD_LETTERED_AT: dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        }
        if decision.exhausted:
            headers[H_HANDLERS] = ",".join(s.name for s in decision.exhausted)
        return OutgoingMessage(dead_letter_exchange(self._service), decision.routing_key, delivery.body,
                               _copy(delivery, headers), mandatory=True)

    def settle(self, delivery: Delivery, decision: Decision) -> Outcome:
        copies: list[OutgoingMessage] = []
        if decision.failed:
            copies.append(self.retry_copy(delivery, decision))
        if decision.reason is not None:
            copies.append(self.dead_letter_copy(delivery, decision))
        if copies:
            lost = self._transport.publish(copies)
            if lost:
                raise PublishError(
                    f"the retry or dead-letter queue of {self._service!r} is missing; message "
                    f"{delivery.properties.message_id} was left unacked. Run `pubsubpy declare`.", lost)
        if decision.reason is not None:
            return Outcome.DEAD_LETTERED
        return Outcome.RETRIED if decision.failed else Outcome.HANDLED


def drain_queue(
    settings: Settings,
    service: str,
    transport: Transport,
    dispatcher: Dispatcher,
    *,
    max_messages: int | None,
    timeout: float,
    on_message: Callable[[DrainResult], None] | None = None,
) -> DrainResult:
    """Consume ``service``'s queue until it is empty, ``max_messages`` are settled or ``timeout`` passes."""
    result = DrainResult()
    started = time.monotonic()
    deadline = started + timeout
    settler = _Settler(settings, service, transport)
    consumer = transport.consume(service_queue(service), settings.prefetch, limit=max_messages)
    try:
        while True:
            if max_messages is not None and result.messages >= max_messages:
                result.stopped_by = "max_messages"
                break
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                result.stopped_by = "timeout"
                break
            delivery = consumer.next(remaining)
            if delivery is None:
                if time.monotonic() >= deadline:
                    result.stopped_by = "timeout"
                break
            decision = dispatcher.dispatch(delivery)
            outcome = settler.settle(delivery, decision)
            consumer.ack(delivery.tag)
            result.count(outcome, decision.reason)
            if delivery.redelivered:
                result.redelivered += 1
            if on_message is not None:
                on_message(result)
    finally:
        consumer.close()
        result.seconds = time.monotonic() - started
    if result.messages:
        log.info("drained %s: %s", service_queue(service), result)
    return result
