"""The contract suite runs every test once per backend: the memory broker and the real RabbitMQ, each
through the sync API (``PubSub``) and through the async one (``AsyncPubSub``)."""

from __future__ import annotations

import asyncio
import inspect
import os
import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import pika
import pytest

from pubsubpy import PubSub
from pubsubpy.aio import AsyncPubSub
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


class DrivenAsync:
    """A ``PubSub``-shaped driver of an ``AsyncPubSub``: every coroutine method is run to its end on an
    event loop of its own (on a thread), so the same contract tests exercise the async API."""

    def __init__(self, app: AsyncPubSub, loop: asyncio.AbstractEventLoop) -> None:
        self.aio = app
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.aio, "aclose" if name == "close" else name)
        if not inspect.iscoroutinefunction(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            return asyncio.run_coroutine_threadsafe(attribute(*args, **kwargs), self._loop).result(timeout=600)

        return call


class AsyncAPI:
    """A backend whose apps are ``AsyncPubSub`` objects (driven through ``DrivenAsync``)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.name = f"{inner.name}-async"
        self.names = inner.names
        self.apps: list[PubSub] = inner.apps  # the PubSub under each AsyncPubSub, for the teardown
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="contract-async-loop", daemon=True)
        self._thread.start()

    def app(self, **options: Any) -> Any:
        sync = self.inner.app(**options)
        return DrivenAsync(AsyncPubSub.of(sync), self.loop)

    def __getattr__(self, name: str) -> Any:  # what else a backend offers (its broker, ...)
        return getattr(self.inner, name)

    def foreign_publish(self, exchange: str, routing_key: str, body: bytes, **properties: Any) -> None:
        self.inner.foreign_publish(exchange, routing_key, body, **properties)

    def bind_by_hand(self, exchange: str, queue: str, pattern: str) -> None:
        self.inner.bind_by_hand(exchange, queue, pattern)

    def stop(self) -> None:
        for app in self.apps:
            view = app.async_view
            if isinstance(view, AsyncPubSub):
                asyncio.run_coroutine_threadsafe(view.aclose(), self.loop).result(timeout=60)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=10)


BACKENDS = ["memory", "rabbitmq", "memory-async", "rabbitmq-async"]
# PUBSUBPY_CONTRACT_BACKENDS=rabbitmq,rabbitmq-async: only those (the test command's run on another broker
# version, where the memory backend would only repeat itself)
ONLY = [name for name in os.environ.get("PUBSUBPY_CONTRACT_BACKENDS", "").split(",") if name]
if unknown := set(ONLY) - set(BACKENDS):
    raise ValueError(f"PUBSUBPY_CONTRACT_BACKENDS names {sorted(unknown)}; the backends are {BACKENDS}")


@pytest.fixture(params=ONLY or BACKENDS)
def backend(request: pytest.FixtureRequest, names: Names) -> Iterator[Backend]:
    """Every contract test runs on both transports, through the sync API and through ``AsyncPubSub``."""
    factories: dict[str, Callable[[Names], Backend]] = {"memory": MemoryBackend, "rabbitmq": RabbitBackend}
    transport, _, api = request.param.partition("-")
    chosen: Any = factories[transport](names)
    if api == "async":
        chosen = AsyncAPI(chosen)
    yield chosen
    if api == "async":
        chosen.stop()
    for app in chosen.apps:
        if app.configured and app.settings.service_name:
            delete_topology(app)
        app.close()
