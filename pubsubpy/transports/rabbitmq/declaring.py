"""Declaring a service's topology on RabbitMQ, including removing stale bindings.

AMQP cannot list a queue's bindings, so the patterns this library bound are
recorded in a one-message ledger queue, ``<service>.bindings`` (``x-max-length``
1: each new record replaces the last). Declaring reads the ledger, binds the
current patterns, unbinds the ones recorded before but no longer subscribed,
and writes the new record. Bindings someone made by hand are never touched.
"""

from __future__ import annotations

import json
from typing import Any

import pika
import pika.adapters.blocking_connection

from pubsubpy.envelope import Properties
from pubsubpy.transports.base import OutgoingMessage, QueueSpec, Topology
from pubsubpy.transports.rabbitmq.publishing import ConfirmChannel

__all__ = ["declare_topology", "ledger_queue"]

BlockingChannel = pika.adapters.blocking_connection.BlockingChannel


def ledger_queue(service_queue: str) -> str:
    return f"{service_queue}.bindings"  # topology_queues() in transports/base.py lists it too


def _declare_queue(channel: BlockingChannel, spec: QueueSpec) -> None:
    channel.queue_declare(spec.name, durable=True, arguments=dict(spec.arguments) or None)


def _read_ledger(channel: BlockingChannel, name: str) -> set[str]:
    method, _props, body = channel.basic_get(name, auto_ack=False)
    if method is None or body is None:
        return set()
    channel.basic_nack(method.delivery_tag, requeue=True)
    try:
        recorded: Any = json.loads(body)
    except ValueError:
        return set()
    return {p for p in recorded if isinstance(p, str)} if isinstance(recorded, list) else set()


def declare_topology(channel: BlockingChannel, confirm: ConfirmChannel, topology: Topology) -> None:
    channel.exchange_declare(topology.exchange, exchange_type="topic", durable=True)
    channel.exchange_declare(topology.dead_letter_exchange, exchange_type="fanout", durable=True)
    _declare_queue(channel, topology.dead_letter_queue)
    channel.queue_bind(topology.dead_letter_queue.name, topology.dead_letter_exchange, routing_key="")
    _declare_queue(channel, topology.queue)
    for spec in topology.retry_queues:
        _declare_queue(channel, spec)
    ledger_args: dict[str, Any] = {"x-max-length": 1}
    if topology.queue.arguments.get("x-queue-type") == "quorum":
        ledger_args["x-queue-type"] = "quorum"
    ledger = ledger_queue(topology.queue.name)
    channel.queue_declare(ledger, durable=True, arguments=ledger_args)
    previous = _read_ledger(channel, ledger)
    for pattern in sorted(topology.bindings):
        channel.queue_bind(topology.queue.name, topology.exchange, routing_key=pattern)
    for pattern in sorted(previous - topology.bindings):
        channel.queue_unbind(topology.queue.name, topology.exchange, routing_key=pattern)
    if previous != topology.bindings:
        record = json.dumps(sorted(topology.bindings)).encode()
        confirm.publish([OutgoingMessage("", ledger, record, Properties(message_id="bindings"))])
