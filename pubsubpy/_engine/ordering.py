"""What ``ordered=True`` adds to a message's run: its lane, in-lane retries, the stale guard.

- The lane of a message is its ordering key (``pubsubpy-key``). One with no key
  waits in its model's lane (``serial_lane``): such messages run one at a time,
  which keeps them in order at the cost of parallelism.
- A failed ordered run with attempts left is retried in the lane after the
  retry policy's delay (``ordered_failures``), never through a retry queue that
  later messages of the key would overtake. The message stays unacked while it
  waits, so its retries stop at half of ``consumer_timeout``: past that it is
  dead-lettered and its key goes on.
- With ``idempotent=True`` the inbox's stale guard (``run_guarded``) skips an
  event whose sequence is not newer than the last one applied for its key.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Sequence

from pubsubpy._engine.runs import log_fields
from pubsubpy._engine.verdict import Verdict
from pubsubpy.envelope import H_SEQUENCE, key_from, sequence_from
from pubsubpy.inbox import Applied, Inbox, OrderedInbox
from pubsubpy.messages import Delivery, HandlerResult, Outcome, Reason
from pubsubpy.settings import Settings
from pubsubpy.topology import retry_delay_ms

__all__ = ["STALE_WARNING", "ordered_failures", "run_guarded", "serial_lane"]

log = logging.getLogger("pubsubpy.drain")

STALE_WARNING = 1000  # a stale event this far behind is a WARNING: a publisher restored from a backup?


def serial_lane(routing_key: str) -> str:
    """The lane of a message without an ordering key: one per model (``Booking:``)."""
    return routing_key.split(".", 1)[0] + ":"


def ordered_failures(settings: Settings, ordered: Collection[str], failures: Sequence[HandlerResult], attempt: int,
                     held_since: float, message_id: str | None
                     ) -> tuple[list[HandlerResult], list[HandlerResult], float]:
    """Split ``failures``: (ordered runs to retry in the lane, the rest, the delay before the retry). Past half
    of ``consumer_timeout`` since the message was first held (``held_since``, monotonic), the ordered runs
    are dead-lettered instead."""
    again = [f for f in failures if f.outcome is Outcome.RETRIED and f.handler in ordered]
    if not again:
        return [], list(failures), 0.0
    rest = [f for f in failures if not any(f is run for run in again)]
    now = time.monotonic()
    delay = retry_delay_ms(settings, attempt) / 1000
    if now + delay - held_since <= settings.consumer_timeout / 2:
        return again, rest, delay
    log.warning("ordered handler(s) %s still failing on %s after %.0fs in its lane: dead-lettered, its key goes on "
                "(in-lane retries stop at half of consumer_timeout=%gs)", ", ".join(str(f.handler) for f in again),
                message_id, now - held_since, settings.consumer_timeout)
    dead = [HandlerResult(Outcome.DEAD_LETTERED, Reason.HANDLER_ERROR, f.exception, f.handler) for f in again]
    return [], rest + dead, 0.0


def run_guarded(inbox: Inbox, handler: str, delivery: Delivery, verdict: Verdict, call: Callable[[], object]) -> bool:
    """Run ``call`` through the inbox's stale guard; False when the message cannot be guarded (no key, no
    valid sequence): the caller runs it through ``run_once`` alone."""
    headers = delivery.properties.headers
    key, sequence = key_from(headers), sequence_from(headers)
    message_id = delivery.properties.message_id or ""
    if key is None or sequence is None:
        if key is not None and H_SEQUENCE in headers:
            log.warning("message %s has a %s header outside [0, 2**63) (%r): handler %s runs it without the "
                        "stale guard", message_id, H_SEQUENCE, headers[H_SEQUENCE], handler,
                        extra=log_fields(message_id, verdict.routing_key, handler, verdict.attempt, "unguarded"))
        return False
    if not isinstance(inbox, OrderedInbox):  # PubSub checks this before consuming
        return False
    run = inbox.run_in_order(message_id, handler, key, sequence, call)
    if run.applied is Applied.STALE:
        verdict.stale = True
        last = run.last if run.last is not None else sequence
        level = logging.WARNING if last - sequence > STALE_WARNING else logging.INFO
        log.log(level, "handler %s skipped %s as stale: sequence %d of %s, %d already applied", handler,
                message_id, sequence, key, last,
                extra=log_fields(message_id, verdict.routing_key, handler, verdict.attempt, "stale"))
    elif run.applied is Applied.DUPLICATE:
        log.info("handler %s already handled message %s: duplicate skipped", handler, message_id,
                 extra=log_fields(message_id, verdict.routing_key, handler, verdict.attempt, "duplicate_skipped"))
    return True
