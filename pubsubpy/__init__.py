"""pubsubpy: typed model events over RabbitMQ.

::

    import pubsubpy
    from pubsubpy import ModelEvent

    class BookingUpdated(ModelEvent, model="shop.models.Booking", event="updated"):
        id: int
        status: str

    pubsubpy.init(amqp_url="amqp://guest:guest@127.0.0.1:5672/%2F", service_name="billing")

    @pubsubpy.subscribe("Booking.*")
    def on_booking(event: BookingUpdated) -> None: ...

    pubsubpy.publish_model_event("shop.models.Booking", "updated", {"id": 1, "status": "paid"})
    pubsubpy.drain()

The functions here act on one default ``PubSub`` instance; ``init()`` configures
it once and never connects.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, TypeVar

from typing_extensions import Unpack

from pubsubpy.app import PubSub
from pubsubpy.deadletters import DeadLetter
from pubsubpy.deadline import Deadline
from pubsubpy.dispatch import MessageInfo
from pubsubpy.errors import (
    BrokerUnavailable,
    ConfigurationError,
    ConfirmTimeout,
    ConsumerCancelled,
    HandlerCancelled,
    InvalidTopic,
    MessageTooLarge,
    OperationTimeout,
    PayloadValidationError,
    PermissionDenied,
    PublishError,
    PublishNacked,
    PubSubError,
    Reject,
    TransportError,
    UnknownEventType,
    UnroutableMessage,
)
from pubsubpy.inbox import Inbox
from pubsubpy.middleware import HandlerContext, HandlerResult, MessageContext, Middleware, PublishContext
from pubsubpy.outcomes import DrainResult, Reason
from pubsubpy.publisher import EventSpec
from pubsubpy.schemas import ModelEvent
from pubsubpy.schemas.upcasting import upcaster
from pubsubpy.settings import SettingsOptions
from pubsubpy.transports.base import Topology, Transport

__all__ = [
    "BrokerUnavailable",
    "ConfigurationError",
    "ConfirmTimeout",
    "ConsumerCancelled",
    "DeadLetter",
    "DrainResult",
    "HandlerCancelled",
    "HandlerContext",
    "HandlerResult",
    "Inbox",
    "InvalidTopic",
    "MessageContext",
    "MessageInfo",
    "MessageTooLarge",
    "Middleware",
    "ModelEvent",
    "OperationTimeout",
    "PayloadValidationError",
    "PermissionDenied",
    "PubSub",
    "PubSubError",
    "PublishContext",
    "PublishError",
    "PublishNacked",
    "Reason",
    "Reject",
    "TransportError",
    "UnknownEventType",
    "UnroutableMessage",
    "apublish_model_event",
    "close",
    "dead_letter_count",
    "declare",
    "drain",
    "get_default",
    "init",
    "list_dead_letters",
    "publish_many",
    "publish_model_event",
    "purge_dead_letters",
    "replay_dead_letters",
    "run",
    "stale_bindings",
    "subscribe",
    "upcaster",
]

__version__ = "0.1.0"

logging.getLogger("pubsubpy").addHandler(logging.NullHandler())

F = TypeVar("F", bound=Callable[..., Any])

_default = PubSub.unconfigured()


def get_default() -> PubSub:
    """The instance the module-level functions use."""
    return _default


def init(
    amqp_url: str | None = None,
    *,
    schemas: Iterable[type[ModelEvent]] | None = None,
    transport: Transport | None = None,
    inbox: Inbox | None = None,
    publishes: Iterable[type[ModelEvent]] | None = None,
    middleware: Iterable[Middleware] | None = None,
    **options: Unpack[SettingsOptions],
) -> PubSub:
    """Configure the default instance (once per process). Never connects.

    ``amqp_url``: given here, else ``$PUBSUBPY_URL``, else ``memory://``. A URL naming a user but no
    password takes the password from the file ``$PUBSUBPY_PASSWORD_FILE``.

    ``options`` are the fields of ``pubsubpy.settings.Settings`` (``model_exchange``,
    ``service_name``, ``max_attempts``, timeouts...), typed in ``SettingsOptions``.
    """
    _default.configure(amqp_url, schemas=schemas, transport=transport, inbox=inbox, publishes=publishes,
                       middleware=middleware, **options)
    return _default


# Each function below is the default instance's method of the same name, with the same signature
# (tests/test_facade.py compares them).

def subscribe(pattern: str, *, max_attempts: int | None = None, idempotent: bool = False) -> Callable[[F], F]:
    """Register a handler for routing keys matching ``pattern``; works before ``init()``."""
    return _default.subscribe(pattern, max_attempts=max_attempts, idempotent=idempotent)


def publish_model_event(model: str, event: str, obj: Any, *, version: int | None = None,
                        headers: Mapping[str, str | int | bool] | None = None,
                        correlation_id: str | None = None) -> str:
    """Validate and publish one event, confirmed; returns its message id."""
    return _default.publish_model_event(model, event, obj, version=version, headers=headers,
                                        correlation_id=correlation_id)


async def apublish_model_event(model: str, event: str, obj: Any, *, version: int | None = None,
                               headers: Mapping[str, str | int | bool] | None = None,
                               correlation_id: str | None = None) -> str:
    """``publish_model_event`` for async code (FastAPI, Django async views): the same, without blocking
    the event loop. With Django's outbox on, the row is written through ``sync_to_async``: Django has no
    async transactions, so inside an async view the row gets a transaction of its own."""
    from pubsubpy.aio import AsyncPubSub

    return await AsyncPubSub.of(_default).publish_model_event(model, event, obj, version=version, headers=headers,
                                                                correlation_id=correlation_id)


def publish_many(events: Iterable[EventSpec]) -> list[str]:
    """Validate all, then publish all, every one confirmed; returns the message ids."""
    return _default.publish_many(events)


def declare(*, prune: bool | Collection[str] = False, deadline: Deadline | None = None) -> Topology:
    """Create this service's exchange, queues and bindings now (additive; ``prune`` on purpose)."""
    return _default.declare(prune=prune, deadline=deadline)


def stale_bindings(*, timeout: float | None = None) -> list[str]:
    """Bindings pubsubpy made that this version no longer subscribes."""
    return _default.stale_bindings(timeout=timeout)


def drain(
    *,
    max_messages: int | None = None,
    timeout: float = 60.0,
    concurrency: int = 1,
    on_message: Callable[[DrainResult], None] | None = None,
) -> DrainResult:
    """Consume everything outstanding for this service; returns what happened."""
    return _default.drain(max_messages=max_messages, timeout=timeout, concurrency=concurrency,
                          on_message=on_message)


def run(concurrency: int = 1, stop: threading.Event | None = None) -> DrainResult:
    """Consume until ``stop`` is set or SIGTERM/SIGINT arrives; see ``PubSub.run``."""
    return _default.run(concurrency=concurrency, stop=stop)


def list_dead_letters(
    *, limit: int | None = None, reason: str | None = None, topic: str | None = None,
    handler: str | None = None, timeout: float | None = None,
) -> list[DeadLetter]:
    """Read the dead-letter queue without changing it."""
    return _default.list_dead_letters(limit=limit, reason=reason, topic=topic, handler=handler, timeout=timeout)


def replay_dead_letters(
    message_ids: Collection[str] | None = None, *, reason: str | None = None, topic: str | None = None,
    handler: str | None = None, progress: Callable[[DeadLetter], None] | None = None,
    timeout: float | None = None,
) -> list[str]:
    """Send dead letters back for another try; returns the ids replayed."""
    return _default.replay_dead_letters(message_ids, reason=reason, topic=topic, handler=handler,
                                        progress=progress, timeout=timeout)


def purge_dead_letters(
    message_ids: Collection[str] | None = None, *, reason: str | None = None, topic: str | None = None,
    handler: str | None = None, progress: Callable[[DeadLetter], None] | None = None,
    timeout: float | None = None,
) -> list[str]:
    """Delete dead letters; returns the ids removed."""
    return _default.purge_dead_letters(message_ids, reason=reason, topic=topic, handler=handler,
                                       progress=progress, timeout=timeout)


def dead_letter_count(*, timeout: float | None = None) -> int:
    """How many dead letters wait in this service's dead-letter queue."""
    return _default.dead_letter_count(timeout=timeout)


def close() -> None:
    """Close the default instance's broker connections (it reconnects if used again)."""
    _default.close()
