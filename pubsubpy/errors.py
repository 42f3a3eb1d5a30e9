"""The exception tree. Every error pubsubpy raises is a ``PubSubError``.

::

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
    │                               a body over ``max_message_size`` (publishing)
    ├── TransportError              the broker could not do what was asked
    │   ├── BrokerUnavailable       cannot connect, or the connection was lost
    │   │   └── ConsumerCancelled   the broker cancelled a consumer (its queue deleted...)
    │   ├── OperationTimeout        a bounded wait ran out (connect, blocked broker...)
    │   └── PublishError            the broker did not take a message
    │       ├── PublishNacked       the broker refused it (nack)
    │       ├── UnroutableMessage   no queue is bound for its routing key
    │       └── ConfirmTimeout      no confirm in time: the outcome is unknown
    ├── HandlerCancelled            an ``async def`` handler's run was cancelled (retried)
    └── Reject                      raised by a handler: dead-letter this message now

pika's exceptions never escape: the RabbitMQ transport translates them at its
edge, keeping the original as ``__cause__``.
"""

from __future__ import annotations

from collections.abc import Sequence


class PubSubError(Exception):
    """Base class of every pubsubpy error."""


class ConfigurationError(PubSubError):
    """Settings, schemas, subscriptions or broker topology do not fit together."""


class PermissionDenied(ConfigurationError):
    """The broker refused an operation for lack of permission (RabbitMQ 403 ACCESS_REFUSED).

    ``permissions``: what the operation needed on ``resource`` (``"exchange 'models'"``), of
    ``configure``, ``write`` and ``read``; all three when it could not be told.
    """

    def __init__(self, message: str, permissions: Sequence[str] = (), resource: str | None = None,
                 vhost: str | None = None, user: str | None = None) -> None:
        super().__init__(message)
        self.permissions: tuple[str, ...] = tuple(permissions)
        self.resource = resource
        self.vhost = vhost
        self.user = user


class InvalidTopic(PubSubError, ValueError):
    """A topic pattern or routing key that RabbitMQ would not treat as intended."""


class UnknownEventType(PubSubError, LookupError):
    """No schema is registered for the (model, event) being published."""


class PayloadValidationError(PubSubError, ValueError):
    """The payload does not satisfy its registered schema."""


class MessageTooLarge(PubSubError, ValueError):
    """The encoded body is larger than ``max_message_size``."""


class TransportError(PubSubError):
    """The broker could not do what was asked."""


class BrokerUnavailable(TransportError):
    """The broker cannot be reached, or the connection was lost and not regained."""


class ConsumerCancelled(BrokerUnavailable):
    """The broker cancelled a consumer (``basic.cancel``): its queue was deleted, the node holding it
    was lost, or (RabbitMQ 4.3, quorum queues) a delivery outlived ``consumer_timeout``. A worker and
    a drain declare their topology again and consume on; a dead-letter walk raises it."""


class OperationTimeout(TransportError):
    """A bounded wait ran out before the broker answered."""


class PublishError(TransportError):
    """The broker did not accept one or more messages.

    ``message_ids`` names the messages whose fate is this error; in a batch,
    every other message was confirmed.
    """

    def __init__(self, message: str, message_ids: Sequence[str] = ()) -> None:
        super().__init__(message)
        self.message_ids: tuple[str, ...] = tuple(message_ids)


class PublishNacked(PublishError):
    """The broker answered with a negative acknowledgement. ``unroutable``: of the messages it
    confirmed in the same batch, the mandatory ones no queue took."""

    def __init__(self, message: str, message_ids: Sequence[str] = (), unroutable: Sequence[str] = ()) -> None:
        super().__init__(message, message_ids)
        self.unroutable: tuple[str, ...] = tuple(unroutable)


class UnroutableMessage(PublishError):
    """No queue is bound for the routing key (``on_unroutable="raise"``)."""


class ConfirmTimeout(PublishError):
    """No publisher confirm arrived in time: the message may or may not be stored."""


class Reject(PubSubError):
    """Raise from a handler to dead-letter the message at once (reason ``rejected``)."""


class HandlerCancelled(PubSubError):
    """The event loop cancelled an ``async def`` handler's run (it was shutting down, or the handler
    awaited something cancelled): a failed run, retried like any other."""
