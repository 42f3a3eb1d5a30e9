"""The contract suite runs every test once per backend: the memory broker and the real RabbitMQ."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any, Protocol

import pika
import pytest

from pubsubpy import PubSub
from pubsubpy.envelope import Properties
from pubsubpy.testing import delete_topology
from pubsubpy.transports.base import OutgoingMessage
from pubsubpy.transports.memory import MemoryBroker, MemoryTransport
from tests.conftest import RABBIT_URL, Names, require_rabbit


class Backend(Protocol):
    name: str

    def app(self, **options: Any) -> PubSub: ...

    def foreign_publish(self, exchange: str, routing_key: str, body: bytes, **properties: Any) -> None: ...

    def bind_by_hand(self, exchange: str, queue: str, pattern: str) -> None: ...


class MemoryBackend:
    name = "memory"

    def __init__(self, names: Names) -> None:
        self.broker = MemoryBroker()
        self.names = names
        self.apps: list[PubSub] = []

    def app(self, **options: Any) -> PubSub:
        options.setdefault("model_exchange", self.names.exchange())
        options.setdefault("service_name", self.names.service())
        app = PubSub("memory://", transport=MemoryTransport(self.broker), **options)
        self.apps.append(app)
        return app

    def foreign_publish(self, exchange: str, routing_key: str, body: bytes, **properties: Any) -> None:
        headers = properties.pop("headers", None) or {}
        props = Properties(**{"content_type": None, "delivery_mode": None, **properties}, headers=headers)
        self.broker.publish(OutgoingMessage(exchange, routing_key, body, props))

    def bind_by_hand(self, exchange: str, queue: str, pattern: str) -> None:
        self.broker.bind(exchange, queue, pattern)


class RabbitBackend:
    """Real RabbitMQ. Foreign messages go through plain pika, not through pubsubpy."""

    name = "rabbitmq"

    def __init__(self, names: Names) -> None:
        require_rabbit()
        self.names = names
        self.apps: list[PubSub] = []

    def app(self, **options: Any) -> PubSub:
        options.setdefault("model_exchange", self.names.exchange())
        options.setdefault("service_name", self.names.service())
        app = PubSub(RABBIT_URL, **options)
        self.apps.append(app)
        return app

    def foreign_publish(self, exchange: str, routing_key: str, body: bytes, **properties: Any) -> None:
        connection = pika.BlockingConnection(pika.URLParameters(RABBIT_URL))
        try:
            channel = connection.channel()
            channel.confirm_delivery()
            channel.basic_publish(exchange, routing_key, body, pika.BasicProperties(**properties))
        finally:
            connection.close()

    def bind_by_hand(self, exchange: str, queue: str, pattern: str) -> None:
        connection = pika.BlockingConnection(pika.URLParameters(RABBIT_URL))
        try:
            connection.channel().queue_bind(queue, exchange, routing_key=pattern)
        finally:
            connection.close()


@pytest.fixture(params=["memory", "rabbitmq"])
def backend(request: pytest.FixtureRequest, names: Names) -> Iterator[Backend]:
    factories: dict[str, Callable[[Names], Backend]] = {"memory": MemoryBackend, "rabbitmq": RabbitBackend}
    chosen = factories[request.param](names)
    yield chosen
    for app in chosen.apps:  # type: ignore[attr-defined]
        if app.configured and app.settings.service_name:
            delete_topology(app)
        app.close()
