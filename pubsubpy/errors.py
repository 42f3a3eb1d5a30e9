"""The exception tree. Every error pubsubpy raises is a ``PubSubError``.

```text
PubSubError
├── ConfigurationError          bad settings, conflicting schemas or subscriptions,
│   │                           a queue that exists with other arguments
│   └── PermissionDenied        the broker user lacks a permission (RabbitMQ 403)
├── InvalidTopic (ValueError)   a malformed pattern or routing key
├── UnknownEventType (LookupError)
│                               no schema registered for (model, event)
├── PayloadValidationError (ValueError)
│                               a payload its schema rejects (publishing)
├── MessageTooLarge (ValueError)
│                               a body over max_message_size (publishing)
├── TransportError              the broker could not do what was asked
│   ├── BrokerUnavailable       cannot connect, or the connection was lost
│   │   └── ConsumerCancelled   the broker cancelled a consumer (its queue deleted...)
│   ├── OperationTimeout        a bounded wait ran out (connect, blocked broker...)
│   └── PublishError            the broker did not take a message
│       ├── PublishNacked       the broker refused it (nack)
│       ├── UnroutableMessage   no queue is bound for its routing key
│       └── ConfirmTimeout      no confirm in time: the outcome is unknown
├── HandlerCancelled            an async def handler's run was cancelled (retried)
├── TimeLimitExceeded           a handler ran past its time_limit (retried, then time_limit)
├── ReplayError                 a replay of the event log could not go on
│   ├── LogGap                  the log no longer holds the start of the window (retention)
│   └── ReplayStopped           a handler's dependency is down, or the log stopped delivering
└── Reject                      raised by a handler: dead-letter this message now
```

pika's exceptions never escape: the RabbitMQ transport translates them at its
edge, keeping the original as ``__cause__``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence


class PubSubError(Exception):
    """Base class of every pubsubpy error: ``except pubsubpy.PubSubError`` catches them all."""


class ConfigurationError(PubSubError):
    """Settings, schemas, subscriptions or broker topology do not fit together: fix the code, the settings
    or the broker's set-up; retrying will not help.

    Raised, for example, for a bad setting (naming the field and the value), two schemas claiming one
    routing key, a handler whose annotation does not accept what its pattern matches, ``init()`` called
    twice, a queue that exists with other arguments, or a pika whose internals changed. The command line
    exits with code 2.
    """


class PermissionDenied(ConfigurationError):
    """The broker refused an operation for lack of permission (RabbitMQ 403 ACCESS_REFUSED).

    The message names the permission the refused operation needed, the resource, and the
    ``rabbitmqctl set_permissions`` command that grants it.

    Attributes:
        permissions: what the operation needed on ``resource``, of ``configure``, ``write`` and ``read``;
            all three when it could not be told.
        resource: what was refused, e.g. ``"exchange 'models'"``.
        vhost: the virtual host.
        user: the broker user.
    """

    def __init__(self, message: str, permissions: Sequence[str] = (), resource: str | None = None,
                 vhost: str | None = None, user: str | None = None) -> None:
        super().__init__(message)
        self.permissions: tuple[str, ...] = tuple(permissions)
        self.resource = resource
        self.vhost = vhost
        self.user = user


class InvalidTopic(PubSubError, ValueError):
    """A topic pattern or routing key that RabbitMQ would not treat as intended: a partial wildcard
    (``Book*``), an empty word (``a..b``), a wildcard in a routing key, an event name that is not one word, or
    more than 255 bytes. Raised at decoration or publish time."""


class UnknownEventType(PubSubError, LookupError):
    """No schema is registered for the (model, event) being published, or not the version asked for.
    Define ``class X(ModelEvent, model=..., event=...)``, or ``init(require_schemas=False)`` for
    schema-less events."""


class PayloadValidationError(PubSubError, ValueError):
    """The payload does not satisfy its registered schema (unknown fields, wrong types, NaN/Infinity,
    nesting deeper than ``max_json_depth``), or a header or correlation id is refused. Raised before
    anything is sent; the message carries pydantic's explanation."""


class MessageTooLarge(PubSubError, ValueError):
    """The encoded body is larger than ``max_message_size``; raised before anything is sent."""


class TransportError(PubSubError):
    """The broker could not do what was asked (unreachable, too slow, or it refused a message). Often
    worth retrying later; the command line exits with code 1 (3 for ``BrokerUnavailable``)."""


class BrokerUnavailable(TransportError):
    """The broker cannot be reached, or the connection was lost and not regained within the connection
    attempts; also a TLS handshake that fails (the message says why) and refused credentials."""


class ConsumerCancelled(BrokerUnavailable):
    """The broker cancelled a consumer (``basic.cancel``): its queue was deleted, the node holding it
    was lost, or (RabbitMQ 4.3, quorum queues) a delivery outlived ``consumer_timeout``. A worker and
    a drain declare their topology again and consume on; a dead-letter walk raises it."""


class OperationTimeout(TransportError):
    """A bounded wait ran out before the broker answered: a call's ``timeout``, or a connection blocked by
    the broker's resource alarm for longer than ``blocked_connection_timeout``."""


class PublishError(TransportError):
    """The broker did not accept one or more messages.

    ``message_ids`` names the messages whose fate is this error; in a batch,
    every other message was confirmed.

    Attributes:
        message_ids: the ids of the messages this error is about.
    """

    def __init__(self, message: str, message_ids: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message_ids: tuple[str, ...] = tuple(message_ids)


class PublishNacked(PublishError):
    """The broker answered with a negative acknowledgement, until the publish deadline (a nacked publish
    is sent again on a new connection first: a quorum queue nacks while it has no leader).

    Attributes:
        unroutable: of the messages it confirmed in the same batch, the mandatory ones no queue took.
    """

    def __init__(self, message: str, message_ids: Sequence[str] = (), unroutable: Sequence[str] = ()) -> None:
        super().__init__(message, message_ids)
        self.unroutable: tuple[str, ...] = tuple(unroutable)


class UnroutableMessage(PublishError):
    """No queue is bound for the routing key, and ``on_unroutable="raise"`` (by default it is logged).
    Declare the consuming services' queues before publishing (``pubsubpy declare``)."""


class ConfirmTimeout(PublishError):
    """No publisher confirm arrived within ``confirm_timeout``: the outcome is unknown, the message may or
    may not be stored. Publishing it again may make a duplicate (same payload, new message id)."""


class Reject(PubSubError):
    """Raise from a handler to dead-letter the message at once, without retries (reason ``rejected``).

    ```python
    @pubsubpy.subscribe("Booking.paid")
    def invoice(event: BookingPaid) -> None:
        if event.amount == 0:
            raise pubsubpy.Reject("free bookings are not invoiced")
    ```

    The message (``str(exc)``) becomes the dead letter's ``error``.
    """


class HandlerCancelled(PubSubError):
    """The event loop cancelled an ``async def`` handler's run (it was shutting down, or the handler
    awaited something cancelled): a failed run, retried like any other."""


class TimeLimitExceeded(PubSubError):
    """A handler ran past its subscription's ``time_limit``: a failed run (retried while attempts are left,
    else dead-lettered as ``time_limit``). A synchronous handler's thread is abandoned, not killed (Python
    cannot kill a thread): it runs on, and an effect it commits late races the message's retry unless the
    handler is ``idempotent=True``. An ``async def`` handler is cancelled."""


class ReplayError(PubSubError):
    """A replay of the event log (``replay()``, ``pubsubpy replay``, ``worker --backfill``) could not go on;
    what it ran before is kept (an idempotent subscription skips it when the replay runs again)."""


class LogGap(ReplayError):
    """Retention has dropped the start of the replay's window: the log's oldest event is newer than ``since``.
    ``since`` and ``oldest`` say by how much; ``allow_gap=True`` (``--allow-gap``) replays what is left."""

    def __init__(self, message: str, since: dt.datetime, oldest: dt.datetime) -> None:
        super().__init__(message)
        self.since = since
        self.oldest = oldest


class ReplayStopped(ReplayError):
    """The replay stopped before its end: a handler's dependency is down (one of its ``pause_on``
    exceptions), the replay was stopped, or the log stopped delivering. ``resume_from`` is the publish time of
    the first event not settled, for ``since`` of the next run."""

    def __init__(self, message: str, resume_from: dt.datetime | None) -> None:
        super().__init__(message)
        self.resume_from = resume_from
