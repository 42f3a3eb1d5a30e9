"""The routing table checked against the memory broker and a real RabbitMQ topic exchange (the oracle)."""

from __future__ import annotations

import pika

from pubsubpy.envelope import Properties
from pubsubpy.transports.base import OutgoingMessage
from pubsubpy.transports.memory import MemoryBroker
from tests.conftest import Names
from tests.test_topics import ROUTING_TABLE


def _memory_routes(patterns: list[str], keys: list[str]) -> set[tuple[str, str]]:
    broker = MemoryBroker()
    broker.declare_exchange("x", "topic")
    for i, pattern in enumerate(patterns):
        broker.declare_queue(f"q{i}", {})
        broker.bind("x", f"q{i}", pattern)
    for key in keys:
        broker.publish(OutgoingMessage("x", key, key.encode(), Properties()))
    routes = set()
    for i, pattern in enumerate(patterns):
        while (message := broker.take(f"q{i}")) is not None:
            routes.add((pattern, message.body.decode()))
    return routes


def _rabbit_routes(url: str, names: Names, patterns: list[str], keys: list[str]) -> set[tuple[str, str]]:
    exchange = names.exchange("oracle")
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.exchange_declare(exchange, "topic", auto_delete=False)
        queues = []
        for i, pattern in enumerate(patterns):
            queue = f"{exchange}.q{i}"
            names.queues.append(queue)
            channel.queue_declare(queue)
            channel.queue_bind(queue, exchange, pattern)
            queues.append(queue)
        channel.confirm_delivery()
        for key in keys:
            channel.basic_publish(exchange, key, key.encode())
        routes = set()
        for pattern, queue in zip(patterns, queues, strict=True):
            while True:
                method, _props, body = channel.basic_get(queue, auto_ack=True)
                if method is None:
                    break
                routes.add((pattern, body.decode()))
        return routes
    finally:
        connection.close()


def test_memory_broker_routes_the_table_like_the_trie() -> None:
    patterns = sorted({p for p, _, _ in ROUTING_TABLE})
    keys = sorted({k for _, k, _ in ROUTING_TABLE})
    expected = {(p, k) for p, k, ok in ROUTING_TABLE if ok}
    got = _memory_routes(patterns, keys)
    assert {(p, k) for p, k, _ in ROUTING_TABLE} & got == expected


def test_real_rabbitmq_agrees_with_the_table_and_the_memory_broker(rabbit_url: str, names: Names) -> None:
    patterns = sorted({p for p, _, _ in ROUTING_TABLE})
    keys = sorted({k for _, k, _ in ROUTING_TABLE})
    rabbit = _rabbit_routes(rabbit_url, names, patterns, keys)
    table = {(p, k): ok for p, k, ok in ROUTING_TABLE}
    for (pattern, key), ok in table.items():
        assert ((pattern, key) in rabbit) is ok, f"RabbitMQ disagrees with the table on {pattern!r} vs {key!r}"
    assert rabbit == _memory_routes(patterns, keys), "memory broker and RabbitMQ route every pair alike"
