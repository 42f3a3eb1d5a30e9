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
import threading
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, TypeVar

from typing_extensions import Unpack

from pubsubpy._version import __version__ as __version__
from pubsubpy.app import PubSub
from pubsubpy.deadletters import DeadLetter
from pubsubpy.deadline import Deadline
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
from pubsubpy.publisher import EventSpec, UnroutableWarning
from pubsubpy.router import UnmatchedPatternWarning
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

F = TypeVar("F", bound=Callable[..., Any])

_default = PubSub.unconfigured()


def get_default() -> PubSub:
    """The ``PubSub`` the module-level functions use.

    Created unconfigured at import (it collects ``@pubsubpy.subscribe`` registrations made before
    ``init()``); ``init()`` configures it. Use it to reach what the module functions do not expose, e.g.
    ``pubsubpy.get_default().settings.display_url``.
    """
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
    _default.configure(amqp_url, schemas=schemas, transport=transport, inbox=inbox, publishes=publishes,
                       middleware=middleware, **options)
    return _default


# Each function below is the default instance's method of the same name, with the same signature
# (tests/test_facade.py compares them).

def subscribe(pattern: str, *, max_attempts: int | None = None, idempotent: bool = False) -> Callable[[F], F]:
    """Register the decorated function as a handler for routing keys matching ``pattern``.

    Works before ``init()``, and does no I/O. The annotation of the handler's first parameter says which
    events it accepts: a ``ModelEvent`` subclass, a union of them, ``ModelEvent`` (all), or ``dict``
    (schema-less events). An optional second parameter (required, or annotated ``MessageInfo``) receives
    the message's metadata. A handler that raises ``Reject`` dead-letters the message at once; any other
    exception is a failed attempt, retried while attempts are left. ``async def`` handlers need
    ``pubsubpy.aio.AsyncPubSub`` or ``pubsubpy worker``.

    ```python
    @pubsubpy.subscribe("Booking.*")
    def on_booking(event: BookingUpdated, info: MessageInfo) -> None: ...
    ```

    Args:
        pattern: a RabbitMQ topic pattern: words separated by ``.``, ``*`` for exactly one word, ``#`` for
            zero or more (``"Booking.*"``, ``"*.deleted"``, ``"#"``).
        max_attempts: runs of this handler per message before the message is dead-lettered as
            ``handler_error``. ``None``: the ``max_attempts`` setting.
        idempotent: run the handler once per message id, recorded by the inbox in the same transaction as
            the handler's effects (needs an inbox: the Django app, or ``PubSub(inbox=...)``).

    Returns:
        A decorator that registers the function and returns it unchanged.

    Raises:
        InvalidTopic: ``pattern`` is malformed: a partial wildcard (``Book*``), an empty word (``a..b``).
        ConfigurationError: ``max_attempts`` is not a positive int, or the function does not take
            ``(event)`` or ``(event, info)``. An annotation that does not accept a schema the pattern
            matches is reported when consuming starts, listing every conflict.
    """
    return _default.subscribe(pattern, max_attempts=max_attempts, idempotent=idempotent)


def publish_model_event(model: str, event: str, obj: Any, *, version: int | None = None,
                        headers: Mapping[str, str | int | bool] | None = None,
                        correlation_id: str | None = None) -> str:
    """Validate one event against its schema and publish it, confirmed by the broker.

    Nothing is sent unless the payload validates. The routing key is ``<last segment of model>.<event>``
    (``Booking.updated``); the message is persistent and carries a fresh message id.

    Args:
        model: the full path of the model the event is about (``"shop.models.Booking"``).
        event: what happened to it, one word (``"updated"``).
        obj: the payload: a mapping, an instance of the schema, or any object whose attributes fill the
            schema (a Django model instance).
        version: send this registered version of the event instead of the newest (an instance of a
            version names its own).
        headers: your own headers: names not starting with ``pubsubpy-`` or ``x-``; values text,
            integers or booleans. Handlers read them in ``MessageInfo.headers``.
        correlation_id: the AMQP ``correlation_id`` property (``MessageInfo.correlation_id``).

    Returns:
        The message id, once the broker has confirmed the message. With Django's ``OUTBOX`` on, once the
        row is written in the current transaction (a relay publishes it after the commit).

    Raises:
        UnknownEventType: no schema is registered for ``(model, event)`` (or that ``version``), unless
            ``require_schemas=False``.
        PayloadValidationError: the payload does not satisfy the schema (unknown fields, wrong types,
            NaN/Infinity, nested deeper than ``max_json_depth``), or a header is refused.
        MessageTooLarge: the encoded body is over ``max_message_size``.
        InvalidTopic: ``event`` is not one word.
        UnroutableMessage: no queue is bound for the routing key and ``on_unroutable="raise"``.
        PublishNacked: the broker refused the message until the publish deadline.
        ConfirmTimeout: no confirm within ``confirm_timeout``: the message may or may not be stored.
        BrokerUnavailable: the broker could not be reached within the connection attempts.
        PermissionDenied: the broker user may not publish to the exchange.
    """
    return _default.publish_model_event(model, event, obj, version=version, headers=headers,
                                        correlation_id=correlation_id)


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

    return await AsyncPubSub.of(_default).publish_model_event(model, event, obj, version=version, headers=headers,
                                                                correlation_id=correlation_id)


def publish_many(events: Iterable[EventSpec]) -> list[str]:
    """Validate every event first, then publish them all, each confirmed, in one round of confirms.

    ```python
    pubsubpy.publish_many([("shop.models.Booking", "updated", booking) for booking in bookings])
    ```

    Args:
        events: ``(model, event, obj)`` tuples, optionally with a fourth item, a dict of per-message options
            (``version``, ``headers``, ``correlation_id``: see ``publish_model_event``).

    Returns:
        The message ids, in order.

    Raises:
        PayloadValidationError: a payload is invalid (also ``UnknownEventType``, ``MessageTooLarge``):
            raised before anything is sent.
        PublishError: the broker did not take some messages (``PublishNacked``, ``UnroutableMessage``,
            ``ConfirmTimeout``); its ``message_ids`` name them, every other message was confirmed.
        BrokerUnavailable: the broker could not be reached.
    """
    return _default.publish_many(events)


def declare(*, prune: bool | Collection[str] = False, deadline: Deadline | None = None) -> Topology:
    """Create this service's exchange, queues and bindings now, at deploy time; see ``PubSub.declare``.

    Additive: bindings of other versions of the service, and ones made by hand, stay.

    Args:
        prune: ``True`` also removes the bindings pubsubpy made that this version no longer subscribes; a
            collection of patterns removes just those of them that are stale.
        deadline: a ``Deadline`` bounding the whole call.

    Returns:
        The ``Topology`` declared: exchange, queues and bindings.

    Raises:
        ConfigurationError: ``service_name`` is not set, or a queue exists with other arguments.
        BrokerUnavailable: the broker could not be reached.
        PermissionDenied: the broker user lacks a permission (the error names which).
    """
    return _default.declare(prune=prune, deadline=deadline)


def stale_bindings(*, timeout: float | None = None) -> list[str]:
    """The patterns pubsubpy bound for this service that this version no longer subscribes.

    What ``declare(prune=True)`` would remove; bindings made by hand are never listed.

    Args:
        timeout: seconds bounding the call. ``None``: the transport's bound.

    Returns:
        The stale patterns, sorted.
    """
    return _default.stale_bindings(timeout=timeout)


def drain(
    *,
    max_messages: int | None = None,
    timeout: float = 60.0,
    concurrency: int = 1,
    on_message: Callable[[DrainResult], None] | None = None,
) -> DrainResult:
    """Consume what is outstanding in this service's queue, then return what happened.

    Runs the matching handlers of each message and settles it: acked when handled, a retry copy when a
    handler failed with attempts left, a dead letter otherwise (every copy confirmed before the original
    is acked). Stops when the queue is empty (asked of the broker), after ``max_messages``, or at
    ``timeout``.

    Args:
        max_messages: stop after this many messages. ``None``: until the queue is empty.
        timeout: seconds for the whole call, connecting and declaring included; a handler still running
            then gets ``shutdown_timeout`` to finish.
        concurrency: handlers running at once, on threads (for I/O-bound handlers); 1 runs them in queue
            order.
        on_message: called with the running ``DrainResult`` after each settled message (progress).

    Returns:
        A ``DrainResult``: counts of handled, retried, deferred and dead-lettered messages, and the reasons.

    Raises:
        ConfigurationError: ``service_name`` is not set, there are no subscriptions, an ``async def``
            handler (use ``AsyncPubSub``), ``idempotent=True`` without an inbox, or handler annotations that
            do not accept the schemas their patterns match.
        BrokerUnavailable: the broker could not be reached within the timeout.
        OperationTimeout: the broker did not answer in time.
    """
    return _default.drain(max_messages=max_messages, timeout=timeout, concurrency=concurrency,
                          on_message=on_message)


def run(concurrency: int = 1, stop: threading.Event | None = None) -> DrainResult:
    """Run a worker on the default instance until ``stop`` is set or SIGTERM/SIGINT arrives.

    See ``PubSub.run``: never gives up on the broker, stops gracefully (running handlers finish and are
    acked, unstarted messages go back).

    Args:
        concurrency: handlers running at once, on threads. Unless ``prefetch`` was set, the worker
            prefetches ``4 * concurrency`` messages.
        stop: set it to stop the worker. Signal handlers are installed only in the main thread.

    Returns:
        A ``DrainResult`` of what the worker did; ``stopped_by`` says why it stopped.

    Raises:
        ConfigurationError: as ``drain()``, or ``concurrency`` below 1.
    """
    return _default.run(concurrency=concurrency, stop=stop)


def list_dead_letters(
    *, limit: int | None = None, reason: str | None = None, topic: str | None = None,
    handler: str | None = None, timeout: float | None = None,
) -> list[DeadLetter]:
    """Read this service's dead-letter queue without changing it.

    Every letter is given back, in the same order; the call returns once they are ready in the queue
    again, so a count or a listing straight after sees them.

    Args:
        limit: stop once this many letters matched. ``None``: read the queue to the end.
        reason: only letters with this reason (``"handler_error"``, ``"rejected"``...).
        topic: only letters whose routing key matches this topic pattern.
        handler: only letters that name this handler (``module.function``).
        timeout: seconds bounding the whole call, connecting included.

    Returns:
        The matching ``DeadLetter`` records, in queue order.

    Raises:
        OperationTimeout: ``timeout`` ran out.
        BrokerUnavailable: the broker could not be reached, or the connection was lost mid-walk (nothing
            was changed; run it again).
    """
    return _default.list_dead_letters(limit=limit, reason=reason, topic=topic, handler=handler, timeout=timeout)


def replay_dead_letters(
    message_ids: Collection[str] | None = None, *, reason: str | None = None, topic: str | None = None,
    handler: str | None = None, progress: Callable[[DeadLetter], None] | None = None,
    timeout: float | None = None,
) -> list[str]:
    """Send dead letters back to this service's queue for another try.

    Each chosen letter is republished (original body, routing key and properties) aimed at the handlers that
    failed, with attempts reset, confirmed, and only then removed from the dead-letter queue: a connection
    lost midway loses nothing (at worst one duplicate; run it again to finish).

    Args:
        message_ids: the letters to replay. ``None`` with no filter: all of them.
        reason: only letters with this reason.
        topic: only letters whose routing key matches this topic pattern.
        handler: only letters that name this handler.
        progress: called with each letter as it is replayed.
        timeout: seconds bounding the whole call.

    Returns:
        The message ids replayed.

    Raises:
        BrokerUnavailable: the connection was lost mid-walk (what was replayed stays replayed).
        OperationTimeout: ``timeout`` ran out.
    """
    return _default.replay_dead_letters(message_ids, reason=reason, topic=topic, handler=handler,
                                        progress=progress, timeout=timeout)


def purge_dead_letters(
    message_ids: Collection[str] | None = None, *, reason: str | None = None, topic: str | None = None,
    handler: str | None = None, progress: Callable[[DeadLetter], None] | None = None,
    timeout: float | None = None,
) -> list[str]:
    """Remove dead letters for good.

    Args:
        message_ids: the letters to remove. ``None`` with no filter: all of them.
        reason: only letters with this reason.
        topic: only letters whose routing key matches this topic pattern.
        handler: only letters that name this handler.
        progress: called with each letter as it is removed.
        timeout: seconds bounding the whole call.

    Returns:
        The message ids removed.

    Raises:
        BrokerUnavailable: the connection was lost mid-walk (what was removed stays removed).
        OperationTimeout: ``timeout`` ran out.
    """
    return _default.purge_dead_letters(message_ids, reason=reason, topic=topic, handler=handler,
                                       progress=progress, timeout=timeout)


def dead_letter_count(*, timeout: float | None = None) -> int:
    """How many dead letters wait in this service's dead-letter queue.

    Args:
        timeout: seconds bounding the call.

    Returns:
        The queue's depth.
    """
    return _default.dead_letter_count(timeout=timeout)


def close() -> None:
    """Close the default instance's broker connections. It reconnects if used again."""
    _default.close()
