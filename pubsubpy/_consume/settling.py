"""Settling: turn verdicts into the broker operations that make them durable, a window at a time.

A handled message needs only its ack. A retried, deferred or dead-lettered
one first needs a copy (in a retry queue, or the dead-letter queue) confirmed
by the broker; only then is the original acked. ``Settler.copies`` builds the copies
of a whole batch, which go out in one publish with one round of confirms, so a
window of failures costs one round trip, not one per message.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Sequence

from pubsubpy._engine import Verdict
from pubsubpy.envelope import (
    H_ATTEMPT,
    H_COPY,
    H_DEAD_LETTERED_AT,
    H_DEFERRALS,
    H_DEFERRED_SINCE,
    H_ERROR,
    H_HANDLERS,
    H_PROBE,
    H_QUEUE,
    H_REASON,
    H_ROUTING_KEY,
    Properties,
    clean_headers,
    new_message_id,
)
from pubsubpy.errors import PublishError
from pubsubpy.messages import Delivery, OutgoingMessage
from pubsubpy.settings import Settings
from pubsubpy.topology import (
    dead_letter_exchange,
    deferral_delay_ms,
    parked_queue,
    retry_delays_ms,
    retry_queue,
    service_queue,
)

__all__ = ["Settler"]


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")


def _copy(delivery: Delivery, headers: dict[str, object]) -> Properties:
    merged = clean_headers(delivery.properties.headers)
    merged.update(headers)
    merged[H_COPY] = new_message_id()
    return delivery.properties.with_headers(merged)


class Settler:
    def __init__(self, settings: Settings, service: str) -> None:
        self._settings = settings
        self._service = service

    def retry_copy(self, delivery: Delivery, verdict: Verdict) -> OutgoingMessage:
        delay = random.choice(retry_delays_ms(self._settings, verdict.attempt))  # spreading, not secrets
        headers: dict[str, object] = {
            H_ATTEMPT: verdict.attempt + 1,
            H_HANDLERS: ",".join(verdict.retry),
            H_ROUTING_KEY: verdict.routing_key,
        }
        target = retry_queue(self._service, delay) if delay > 0 else service_queue(self._service)
        return OutgoingMessage("", target, delivery.body, _copy(delivery, headers), mandatory=True)

    def requeue_copy(self, delivery: Delivery, verdict: Verdict) -> OutgoingMessage:
        """A failed probe's message, to the back of the service queue for every handler, attempt unchanged
        (a ``basic.nack(requeue=True)`` would put it back at the head, to be the next probe again)."""
        headers: dict[str, object] = {H_ATTEMPT: verdict.attempt, H_ROUTING_KEY: verdict.routing_key}
        return OutgoingMessage("", service_queue(self._service), delivery.body, _copy(delivery, headers),
                               mandatory=True)

    def park_copy(self, delivery: Delivery, verdict: Verdict) -> OutgoingMessage:
        """A paused subscription's share, aimed at just those handlers, attempt unchanged, into
        ``<service>.parked`` until its breaker closes and the share is moved back."""
        headers: dict[str, object] = {H_ATTEMPT: verdict.attempt, H_HANDLERS: ",".join(verdict.park),
                                      H_ROUTING_KEY: verdict.routing_key}
        return OutgoingMessage("", parked_queue(self._service), delivery.body, _copy(delivery, headers), mandatory=True)

    def moved_back(self, delivery: Delivery, probe: bool = False) -> OutgoingMessage:
        """A parked message back into the service queue (as it was parked; ``probe``: to test its handlers)."""
        headers: dict[str, object] = {H_PROBE: 1} if probe else {}
        return OutgoingMessage("", service_queue(self._service), delivery.body, _copy(delivery, headers),
                               mandatory=True)

    def deferral_copy(self, delivery: Delivery, verdict: Verdict) -> OutgoingMessage:
        """Back through a retry queue, for a version of this service that subscribes its key; the attempt
        count is left alone (no handler ran)."""
        deferral = verdict.deferrals + 1
        headers: dict[str, object] = {
            H_ROUTING_KEY: verdict.routing_key,
            H_DEFERRED_SINCE: int((verdict.deferred_since or 0.0) * 1000),
            H_DEFERRALS: deferral,
        }
        target = retry_queue(self._service, deferral_delay_ms(self._settings, deferral))
        return OutgoingMessage("", target, delivery.body, _copy(delivery, headers), mandatory=True)

    def dead_letter_copy(self, delivery: Delivery, verdict: Verdict, at: str | None = None,
                         extra: dict[str, object] | None = None) -> OutgoingMessage:
        """``extra``: more headers (a replay's ``pubsubpy-replayed``)."""
        assert verdict.reason is not None
        headers: dict[str, object] = {
            H_REASON: verdict.reason.value,
            H_ERROR: verdict.error or "",
            H_ATTEMPT: verdict.attempt,
            H_ROUTING_KEY: verdict.routing_key,
            H_QUEUE: service_queue(self._service),
            H_DEAD_LETTERED_AT: at or _now(),
        }
        if verdict.blamed:
            headers[H_HANDLERS] = ",".join(verdict.blamed)
        if extra:
            headers.update(extra)
        return OutgoingMessage(dead_letter_exchange(self._service), verdict.routing_key, delivery.body,
                               _copy(delivery, headers), mandatory=True)

    def copies(self, settled: Sequence[tuple[Delivery, Verdict]]) -> list[OutgoingMessage]:
        """Every copy a batch needs, in order: retry copies and dead letters."""
        out: list[OutgoingMessage] = []
        at = _now()  # one timestamp per window: the copies are made together
        for delivery, verdict in settled:
            if verdict.paused:
                out.append(self.requeue_copy(delivery, verdict))
                continue
            if verdict.park:
                out.append(self.park_copy(delivery, verdict))
            if verdict.retry:
                out.append(self.retry_copy(delivery, verdict))
            if verdict.deferred_since is not None:
                out.append(self.deferral_copy(delivery, verdict))
            if verdict.reason is not None:
                out.append(self.dead_letter_copy(delivery, verdict, at))
        return out

    def missing(self, lost: Sequence[str]) -> PublishError:
        return PublishError(
            f"the retry or dead-letter queue of {self._service!r} is missing; {len(lost)} message(s) were left "
            "unacked. Run `pubsubpy declare`.", lost)
