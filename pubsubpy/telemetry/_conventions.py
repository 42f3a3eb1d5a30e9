"""The OpenTelemetry semantic conventions pubsubpy follows: messaging spans and metrics, RabbitMQ
flavour, as of **semantic conventions v1.44.0** (messaging: status "development").

Spans (``_tracing.py``):

==============  ========  ===================================  ==============================
operation       kind      name                                 when
==============  ========  ===================================  ==============================
send            PRODUCER  ``publish {exchange}:{routing key}``  ``publish_model_event``: its
                                                               context is the message's
                                                               creation context
create          PRODUCER  ``create {exchange}:{routing key}``   each message of ``publish_many``
                                                               and each one written to the outbox
send            CLIENT    ``publish {exchange}``                ``publish_many`` and a relay batch:
                                                               one link per message's creation
                                                               context
process         CONSUMER  ``process {exchange}:{routing key}:   each handler run; its parent is
                          {queue}``                            the message's creation context
==============  ========  ===================================  ==============================

Attributes: ``messaging.system`` (``rabbitmq``), ``messaging.operation.name``
(``publish``, ``create``, ``process``), ``messaging.operation.type`` (``send``,
``create``, ``process``), ``messaging.destination.name`` (as in the span name),
``messaging.rabbitmq.destination.routing_key``, ``messaging.message.id``,
``messaging.message.conversation_id`` (the correlation id, when set),
``messaging.rabbitmq.message.delivery_tag`` (process), ``messaging.batch.message_count``
(batches), ``error.type`` (the exception's class, or ``unroutable``, on failure);
pubsubpy's own: ``pubsubpy.handler``, ``pubsubpy.attempt``, ``pubsubpy.outcome``
(``handled``, ``retried``, ``dead_lettered``, ``deferred``), ``pubsubpy.reason`` (a
dead letter's reason). The destination is the event's exchange and routing key,
also for a retry or a replay (which reach the queue through the default exchange).
"""

from __future__ import annotations

__all__ = ["SCHEMA_URL", "SEMCONV_VERSION"]

SEMCONV_VERSION = "1.44.0"
SCHEMA_URL = f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"

MESSAGING_SYSTEM = "messaging.system"
OPERATION_NAME = "messaging.operation.name"
OPERATION_TYPE = "messaging.operation.type"
DESTINATION_NAME = "messaging.destination.name"
ROUTING_KEY = "messaging.rabbitmq.destination.routing_key"
DELIVERY_TAG = "messaging.rabbitmq.message.delivery_tag"
MESSAGE_ID = "messaging.message.id"
CONVERSATION_ID = "messaging.message.conversation_id"
BATCH_COUNT = "messaging.batch.message_count"
ERROR_TYPE = "error.type"

HANDLER = "pubsubpy.handler"
ATTEMPT = "pubsubpy.attempt"
OUTCOME = "pubsubpy.outcome"
REASON = "pubsubpy.reason"
QUEUE = "pubsubpy.queue"

# Metric names (messaging metrics, v1.44.0) and pubsubpy's own where the conventions have none.
SENT_MESSAGES = "messaging.client.sent.messages"
CONSUMED_MESSAGES = "messaging.client.consumed.messages"
OPERATION_DURATION = "messaging.client.operation.duration"
PROCESS_DURATION = "messaging.process.duration"
END_TO_END_DURATION = "pubsubpy.message.end_to_end.duration"
QUEUE_DEPTH = "pubsubpy.queue.messages"
PAUSED = "pubsubpy.consumer.paused"      # subscriptions whose dependency is down, pausing the consumer
PAUSES = "pubsubpy.consumer.pauses"      # times the consumer paused (breaker trips)

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
"""The conventions' advice for messaging durations (seconds)."""


def publish_destination(exchange: str, routing_key: str) -> str:
    """``{exchange}:{routing key}``, or whichever is not empty, or ``amq.default``."""
    if exchange and routing_key:
        return f"{exchange}:{routing_key}"
    return exchange or routing_key or "amq.default"


def process_destination(exchange: str, routing_key: str, queue: str) -> str:
    """``{exchange}:{routing key}:{queue}``, leaving out empty parts and a queue named like the key."""
    parts = [exchange, routing_key] + ([queue] if queue != routing_key else [])
    return ":".join(part for part in parts if part)
