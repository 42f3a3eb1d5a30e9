"""The bindings ledger: which bindings pubsubpy made, because AMQP cannot list a queue's bindings.

Queue ``<service queue>.ledger`` holds one persistent message per binding
pubsubpy made, JSON ``{"exchange": ..., "pattern": ...}``. Only pruning reads
it to decide anything; bindings made by hand are never in it, so never pruned.

Why it is race-free without the management plugin:

- Declaring only appends: it records the bindings it made that it did not see
  recorded. Two declarers never overwrite each other, so the ledger always
  holds the union of what they bound.
- Reading takes every message with ``basic.get`` and hands them all back
  (``nack``, requeue) when done. A concurrent reader may miss the records the
  other is holding and append a duplicate: harmless, and the next reader that
  holds both copies drops one (acks it), so duplicates do not pile up.
- Pruning unbinds first, then acks the records of what it unbound. A crash in
  between leaves a record of a binding that is gone, which the next prune
  unbinds again (a no-op).
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator
from typing import Any

import pika
import pika.adapters.blocking_connection

from pubsubpy.envelope import Properties
from pubsubpy.transports.base import OutgoingMessage
from pubsubpy.transports.rabbitmq._publishing import ConfirmChannel

__all__ = ["HeldRecords", "append_records", "held_records"]

BlockingChannel = pika.adapters.blocking_connection.BlockingChannel

_READ_LIMIT = 100_000  # records read at most: a ledger is a few per pattern, this only bounds garbage


def _parse(body: bytes) -> tuple[str, str] | None:
    try:
        record: Any = json.loads(body)
    except ValueError:
        return None
    if not isinstance(record, dict):
        return None
    exchange, pattern = record.get("exchange"), record.get("pattern")
    if isinstance(exchange, str) and isinstance(pattern, str):
        return exchange, pattern
    return None


class HeldRecords:
    """The ledger's records while this channel holds them (unacked)."""

    def __init__(self, channel: BlockingChannel) -> None:
        self._channel = channel
        self._tags: dict[tuple[str, str], int] = {}

    def patterns(self, exchange: str) -> set[str]:
        return {pattern for ex, pattern in self._tags if ex == exchange}

    def records(self) -> set[tuple[str, str]]:
        """Every (exchange, pattern) held."""
        return set(self._tags)

    def _take(self, tag: int, body: bytes) -> None:
        key = _parse(body)
        if key is None or key in self._tags:
            self._channel.basic_ack(tag)  # garbage or a duplicate (another copy is held): drop it
        else:
            self._tags[key] = tag

    def forget(self, exchange: str, pattern: str) -> None:
        """Remove the record of a binding (after unbinding it)."""
        tag = self._tags.pop((exchange, pattern), None)
        if tag is not None:
            self._channel.basic_ack(tag)


@contextlib.contextmanager
def held_records(channel: BlockingChannel, ledger: str) -> Iterator[HeldRecords]:
    """Take every record of ``ledger``; on leaving, hand back all that were not forgotten."""
    held = HeldRecords(channel)
    try:
        for _ in range(_READ_LIMIT):
            method, _props, body = channel.basic_get(ledger, auto_ack=False)
            if method is None:
                break
            held._take(method.delivery_tag, body or b"")
        yield held
    finally:
        if channel.is_open:
            channel.basic_nack(0, multiple=True, requeue=True)


def append_records(confirm: ConfirmChannel, ledger: str, exchange: str, patterns: Iterable[str]) -> None:
    """Record that pubsubpy bound ``patterns`` on ``exchange`` (confirmed by the broker)."""
    messages = [OutgoingMessage("", ledger, json.dumps({"exchange": exchange, "pattern": pattern}).encode(),
                                Properties(message_id=f"binding:{exchange}:{pattern}"))
                for pattern in sorted(patterns)]
    if messages:
        confirm.publish(messages)
