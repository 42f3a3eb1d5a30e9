"""The transactional outbox: with ``PUBSUBPY["OUTBOX"] = True``, publishing writes a row, not a message.

``publish_model_event`` (and the model events of ``MODEL_EVENTS``) validate and
encode the event as usual, then insert it into ``pubsubpy_outbox`` on the
``OUTBOX_DATABASE`` (default ``"default"``): inside the caller's transaction
when there is one (a rollback leaves nothing), in its own otherwise. The row
holds the message exactly as it will be sent (message id, exchange, routing
key, properties, body). Saving never touches the broker; ``relay.py`` sends the
rows after the commit, in order per aggregate.

A row's aggregate is the message's ordering key (``pubsubpy-key``,
``<model path>:<key value>``: a model event's primary key, a schema's ``key=``
field, ``publish_model_event(..., key=)``) when it has one; without one, the
key of an enclosing ``aggregate()`` block, else ``<model>:<id>`` when the
payload has an ``id``, else the message itself (no ordering constraint).

A message with an ordering key and no ``pubsubpy-sequence`` yet is stamped with
the next sequence of its aggregate, from a counter row in
``pubsubpy_outbox_sequence`` incremented in the writer's transaction. The
increment locks that row until the transaction ends, so two transactions
writing events of one aggregate are serialised there and the sequences grow in
commit order (a rollback gives its numbers back). Transactions that write
events of several aggregates should lock them in one order, as with any row
locks, or the database may abort one as a deadlock.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import json
from collections.abc import Callable, Iterator
from typing import Any

from django.db import IntegrityError, transaction
from django.db.models import F

from pubsubpy.contrib.django.models import OutboxMessage, OutboxSequence
from pubsubpy.envelope import H_SEQUENCE, Properties, key_from
from pubsubpy.transports.base import OutgoingMessage

__all__ = ["DjangoOutbox", "aggregate", "from_row", "to_row"]

_aggregate: contextvars.ContextVar[str | None] = contextvars.ContextVar("pubsubpy_outbox_aggregate", default=None)


@contextlib.contextmanager
def aggregate(key: str) -> Iterator[None]:
    """Events written inside the block belong to aggregate ``key`` (model events set it)."""
    token = _aggregate.set(key)
    try:
        yield
    finally:
        _aggregate.reset(token)


def _aggregate_of(message: OutgoingMessage) -> str:
    key = key_from(message.properties.headers)
    if key is not None:
        return key
    hinted = _aggregate.get()
    if hinted is not None:
        return hinted[:255]
    model = (message.properties.type or "").rsplit(".", 1)[0]
    try:
        payload: Any = json.loads(message.body)
    except ValueError:
        payload = None
    if isinstance(payload, dict) and isinstance(payload.get("id"), (int, str)) and model:
        return f"{model}:{payload['id']}"[:255]
    return f"message:{message.properties.message_id}"


def to_row(message: OutgoingMessage) -> OutboxMessage:
    properties = dataclasses.asdict(message.properties)
    properties.pop("decode_error", None)
    properties["mandatory"] = message.mandatory
    return OutboxMessage(message_id=message.properties.message_id or "", exchange=message.exchange,
                         routing_key=message.routing_key, body=message.body, properties=properties,
                         aggregate=_aggregate_of(message))


def from_row(exchange: str, routing_key: str, body: bytes | memoryview, stored: dict[str, Any]) -> OutgoingMessage:
    """The message an outbox row holds (its columns, as ``values_list`` returns them)."""
    properties = dict(stored)
    mandatory = bool(properties.pop("mandatory", False))
    return OutgoingMessage(exchange, routing_key, bytes(body), Properties(**properties), mandatory)


class DjangoOutbox:
    """``PubSub``'s outbox writer under Django: one ``bulk_create`` per publish call, after stamping
    sequences. ``after_commit`` (``OUTBOX_SEND_ON_COMMIT``) is called once the transaction that wrote
    rows commits."""

    def __init__(self, database: str = "default", after_commit: Callable[[], None] | None = None) -> None:
        self.database = database
        self.after_commit = after_commit

    def write(self, messages: list[OutgoingMessage]) -> list[str]:
        with transaction.atomic(using=self.database):  # the counters' locks last until the caller's commit
            rows = [to_row(self._stamped(m)) for m in messages]
            OutboxMessage.objects.using(self.database).bulk_create(rows)
            if self.after_commit is not None:
                transaction.on_commit(self.after_commit, using=self.database)
        return [m.properties.message_id or "" for m in messages]

    def _stamped(self, message: OutgoingMessage) -> OutgoingMessage:
        """``message`` with its aggregate's next ``pubsubpy-sequence`` (a copy; the caller's is left as it
        was), or as it is when it has no ordering key or a sequence already."""
        headers = message.properties.headers
        key = key_from(headers)
        if key is None or H_SEQUENCE in headers:
            return message
        properties = dataclasses.replace(message.properties, headers={**headers, H_SEQUENCE: self._next(key)})
        return dataclasses.replace(message, properties=properties)

    def _next(self, aggregate: str) -> int:
        """Increment the aggregate's counter (its row stays locked until the transaction ends); the new value."""
        counters = OutboxSequence.objects.using(self.database).filter(aggregate=aggregate)
        if not counters.update(last=F("last") + 1):
            try:
                with transaction.atomic(using=self.database):  # a savepoint: a concurrent insert's error stays in it
                    counters.create(aggregate=aggregate, last=1)
                return 1
            except IntegrityError:  # another transaction created it first (and has committed): count on
                counters.update(last=F("last") + 1)
        last: int = counters.values_list("last", flat=True).get()
        return last
