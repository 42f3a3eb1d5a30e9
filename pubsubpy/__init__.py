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

import logging

from pubsubpy._facade import (
    apublish_model_event,
    close,
    dead_letter_count,
    declare,
    drain,
    get_default,
    init,
    list_dead_letters,
    publish_many,
    publish_model_event,
    purge_dead_letters,
    replay,
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
    LogGap,
    MessageTooLarge,
    OperationTimeout,
    PayloadValidationError,
    PermissionDenied,
    PublishError,
    PublishNacked,
    PubSubError,
    Reject,
    ReplayError,
    ReplayStopped,
    TimeLimitExceeded,
    TransportError,
    UnknownEventType,
    UnroutableMessage,
)
from pubsubpy.inbox import Inbox, OrderedInbox, ReplayInbox
from pubsubpy.messages import DrainResult, MessageInfo, Reason, ReplayResult
from pubsubpy.middleware import HandlerContext, HandlerResult, MessageContext, Middleware, PublishContext
from pubsubpy.publisher import UnroutableWarning
from pubsubpy.router import UnmatchedPatternWarning
from pubsubpy.schemas import ModelEvent
from pubsubpy.schemas._upcasting import upcaster

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
    "LogGap",
    "MessageContext",
    "MessageInfo",
    "MessageTooLarge",
    "Middleware",
    "ModelEvent",
    "OperationTimeout",
    "OrderedInbox",
    "PayloadValidationError",
    "PermissionDenied",
    "PubSub",
    "PubSubError",
    "PublishContext",
    "PublishError",
    "PublishNacked",
    "Reason",
    "Reject",
    "ReplayError",
    "ReplayInbox",
    "ReplayResult",
    "ReplayStopped",
    "TimeLimitExceeded",
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
    "replay",
    "replay_dead_letters",
    "run",
    "stale_bindings",
    "subscribe",
    "upcaster",
]

logging.getLogger("pubsubpy").addHandler(logging.NullHandler())
