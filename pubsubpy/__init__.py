"""pubsubpy: typed model events over RabbitMQ.

```python
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
```

The functions here act on one default ``PubSub`` instance; ``init()`` configures
it once and never connects.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import Any

from typing_extensions import Unpack

from pubsubpy._facade import (
    close,
    dead_letter_count,
    declare,
    drain,
    get_default,
    list_dead_letters,
    publish_many,
    publish_model_event,
    purge_dead_letters,
    replay_dead_letters,
    run,
    stale_bindings,
    subscribe,
)
from pubsubpy._version import __version__ as __version__
from pubsubpy.app import PubSub
from pubsubpy.deadletters import DeadLetter
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
from pubsubpy.messages import DrainResult, MessageInfo, Reason
from pubsubpy.middleware import HandlerContext, HandlerResult, MessageContext, Middleware, PublishContext
from pubsubpy.publisher import UnroutableWarning
from pubsubpy.router import UnmatchedPatternWarning
from pubsubpy.schemas import ModelEvent
from pubsubpy.schemas.upcasting import upcaster
from pubsubpy.settings import SettingsOptions
from pubsubpy.transports.base import Transport

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
    "UnmatchedPatternWarning",
    "UnroutableMessage",
    "UnroutableWarning",
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

logging.getLogger("pubsubpy").addHandler(logging.NullHandler())


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
    """Configure the default instance, once per process. Never connects: the first publish, drain or
    declare does.

    Args:
        amqp_url: the broker: ``amqp://user:password@host:5672/vhost``, ``amqps://...`` (TLS), several
            comma-separated URLs (failover, tried in order), or ``memory://`` / ``memory://NAME`` (the
            in-process broker). ``None``: ``$PUBSUBPY_URL``, else ``memory://``. A URL naming a user but no
            password takes the password from the file ``$PUBSUBPY_PASSWORD_FILE``.
        schemas: the event schemas this instance knows. ``None``: every ``ModelEvent`` subclass defined with
            ``register=True`` (the default).
        transport: a transport to use instead of the one the URL names (tests).
        inbox: what runs ``@subscribe(..., idempotent=True)`` handlers once per message id (an ``Inbox``;
            the Django app installs one).
        publishes: the schemas this service publishes, for the AsyncAPI document, the event catalogue and
            ``pubsubpy topology``.
        middleware: ``Middleware`` instances, the first the outermost.
        **options: the fields of ``pubsubpy.settings.Settings`` (``service_name``, ``model_exchange``,
            ``max_attempts``, timeouts...), typed in ``SettingsOptions``. See the Settings reference.

    Returns:
        The default ``PubSub``, configured.

    Raises:
        ConfigurationError: an unknown option or a bad value (naming the field and the value), a TLS or
            password file that cannot be read, or ``init()`` called a second time (call it once per process;
            ``pubsubpy.testing.reset()`` between tests).
    """
    default = get_default()
    default.configure(amqp_url, schemas=schemas, transport=transport, inbox=inbox, publishes=publishes,
                      middleware=middleware, **options)
    return default


async def apublish_model_event(model: str, event: str, obj: Any, *, version: int | None = None,
                               headers: Mapping[str, str | int | bool] | None = None,
                               correlation_id: str | None = None) -> str:
    """``publish_model_event`` for async code (FastAPI, Django async views), on the default instance.

    The same arguments, validation, return value and errors as ``publish_model_event``, without blocking
    the event loop: the payload is validated in the caller's coroutine, then concurrent publishes go out
    together as confirmed batches. With Django's outbox on, the row is written through ``sync_to_async``:
    Django has no async transactions, so inside an async view the row gets a transaction of its own.

    Returns:
        The message id, once the broker confirmed the message (with the outbox: once the row is written).
    """
    from pubsubpy.aio import AsyncPubSub

    return await AsyncPubSub.of(get_default()).publish_model_event(
        model, event, obj, version=version, headers=headers, correlation_id=correlation_id)
