"""Declaring the event log (``event_log``): the stream ``<exchange>.log``, bound from the model exchange with ``#``.

A stream's arguments never change after it is created, and every publisher
declares it: a publisher asking for another retention than the stream has
gets a 406 from RabbitMQ. That is not an error here. The stream keeps the
retention it was created with, a WARNING names both and the ``rabbitmqctl``
policy that sets it in place (a policy wins over the arguments; measured on
3.10), and the publish goes on.
"""

from __future__ import annotations

import logging

import pika
import pika.adapters.blocking_connection

from pubsubpy.topology import QueueSpec, event_log_policy
from pubsubpy.transports.rabbitmq._declaring import QueueDeclarer

__all__ = ["declare_event_log"]

log = logging.getLogger("pubsubpy.rabbitmq")

BlockingChannel = pika.adapters.blocking_connection.BlockingChannel


def declare_event_log(channel: BlockingChannel, exchange: str, stream: QueueSpec, vhost: str) -> None:
    channel.exchange_declare(exchange, exchange_type="topic", durable=True)
    declarer = QueueDeclarer(channel.connection)
    try:
        refused = declarer.declare(stream.name, dict(stream.arguments))
    finally:
        declarer.close()
    if refused is not None:
        age = str(stream.arguments.get("x-max-age"))
        log.warning("the event log %r exists with another retention than this publisher's event_log=%r (%s); it "
                    "keeps its own. To change it in place for every publisher:\n  %s", stream.name, age,
                    refused.reply_text, event_log_policy(exchange, age, stream.arguments.get("x-max-length-bytes"),
                                                         vhost))
    channel.queue_bind(stream.name, exchange, routing_key="#")
