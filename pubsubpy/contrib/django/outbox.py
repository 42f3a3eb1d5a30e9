"""The transactional outbox: with ``PUBSUBPY["OUTBOX"] = True``, publishing writes a row, not a message.

``publish_model_event`` (and the model events of ``MODEL_EVENTS``) validate and
encode the event as usual, then insert it into ``pubsubpy_outbox`` on the
``OUTBOX_DATABASE`` (default ``"default"``): inside the caller's transaction
when there is one (a rollback leaves nothing), in its own otherwise. The row
holds the message exactly as it will be sent (message id, exchange, routing
key, properties, body). Saving never touches the broker; ``relay.py`` sends the
rows after the commit, in order per aggregate.

The aggregate of a model event is ``<model path>:<primary key>``; of an explicit
``publish_model_event``, ``<model>:<id>`` when the payload has an ``id``, else
the message itself (no ordering constraint).
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import json
from collections.abc import Callable, Iterator
from typing import Any

from django.db import transaction

from pubsubpy.contrib.django.models import OutboxMessage
from pubsubpy.envelope import Properties
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
    """``PubSub``'s outbox writer under Django: one ``bulk_create`` per publish call. ``after_commit``
    (``OUTBOX_SEND_ON_COMMIT``) is called once the transaction that wrote rows commits."""

    def __init__(self, database: str = "default", after_commit: Callable[[], None] | None = None) -> None:
        self.database = database
        self.after_commit = after_commit

    def write(self, messages: list[OutgoingMessage]) -> list[str]:
        OutboxMessage.objects.using(self.database).bulk_create([to_row(m) for m in messages])
        if self.after_commit is not None:
            transaction.on_commit(self.after_commit, using=self.database)
        return [m.properties.message_id or "" for m in messages]
