"""Declarers racing on the real broker: 4 processes at the same moment, each with its own subscriptions,
20 rounds (a fresh service each round, so every round races on an empty ledger too). Each round must end
with the union of their bindings on the broker and in the ledger, and no declare may fail or hang."""

from __future__ import annotations

import multiprocessing
import multiprocessing.synchronize
import uuid
from typing import Any

import pika
import pytest

from pubsubpy import PubSub
from pubsubpy.envelope import Properties
from pubsubpy.testing import delete_topology
from pubsubpy.transports.base import OutgoingMessage
from pubsubpy.transports.rabbitmq import _declaring as declaring
from tests.conftest import RABBIT_URL, Names

DECLARERS = 4
ROUNDS = 20
# Overlapping sets: every pattern is one exact key, so a mandatory publish tells whether it is bound.
PATTERNS = [[f"K{i}.a", f"K{i}.b", "Shared.x"] + ([f"K{(i + 1) % DECLARERS}.a"] if i % 2 else [])
            for i in range(DECLARERS)]


def _app(exchange: str, service: str, patterns: list[str]) -> PubSub:
    app = PubSub(RABBIT_URL, model_exchange=exchange, service_name=service, require_schemas=False,
                 connect_timeout=10, confirm_timeout=20)
    for pattern in patterns:
        app.subscribe(pattern)(lambda event: None)
    return app


def _declarer(index: int, exchange: str, services: list[str], start: multiprocessing.synchronize.Barrier,
              done: multiprocessing.synchronize.Barrier, errors: multiprocessing.Queue[str]) -> None:
    for service in services:
        start.wait(timeout=120)
        try:
            app = _app(exchange, service, PATTERNS[index])
            app.declare()
            app.close()
        except Exception as exc:
            errors.put(f"declarer {index}, {service}: {type(exc).__name__}: {exc}")
        done.wait(timeout=120)


def test_four_concurrent_declarers_end_with_the_union(names: Names, rabbit_url: str) -> None:
    exchange = names.exchange()
    services = [names.service(f"race{n}") for n in range(ROUNDS)]
    context = multiprocessing.get_context("spawn")
    start, done = context.Barrier(DECLARERS + 1), context.Barrier(DECLARERS + 1)
    errors: multiprocessing.Queue[str] = context.Queue()
    workers = [context.Process(target=_declarer, args=(i, exchange, services, start, done, errors))
               for i in range(DECLARERS)]
    for worker in workers:
        worker.start()
    union = frozenset(p for patterns in PATTERNS for p in patterns)
    checker = _app(exchange, services[0], sorted(union))
    failures: list[str] = []
    try:
        for service in services:
            start.wait(timeout=120)
            done.wait(timeout=120)  # every declarer of this round returned (or failed)
            app = _app(exchange, service, sorted(union))
            recorded = app.transport.recorded_bindings(app.topology(), deadline=None)
            if recorded != union:
                failures.append(f"{service}: ledger {sorted(recorded)} != {sorted(union)}")
            for key in sorted(union):
                probe = OutgoingMessage(exchange, key, b"{}", Properties(message_id=uuid.uuid4().hex), mandatory=True)
                if checker.transport.publish([probe]):
                    failures.append(f"{service}: {key} is not bound")
            app.transport.delete(app.topology())
            app.close()
    finally:
        for worker in workers:
            worker.join(timeout=60)
            if worker.is_alive():
                worker.kill()
        checker.close()
    reported = []
    while not errors.empty():
        reported.append(errors.get())
    assert not reported, reported
    assert not failures, failures[:10]
    assert all(worker.exitcode == 0 for worker in workers)


def test_a_queue_gone_between_its_declare_and_its_binding_is_declared_again(
        names: Names, rabbit_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """RabbitMQ 4.x can answer a binding with 404 "no queue" for a queue declared a moment ago, when its name
    was deleted just before (a worker declaring its deleted queue again). Here the queue really goes between
    the two, once: the declare is made again, and ends with the queue there and bound."""
    app = _app(names.exchange(), names.service(), ["K0.a"])
    queue = f"{app.settings.service_name}.events"
    declare_queue, deleted = declaring._declare_queue, []

    def declare_then_lose(declarer: Any, name: str, arguments: dict[str, Any]) -> set[str]:
        kept = declare_queue(declarer, name, arguments)
        if name == queue and not deleted:
            deleted.append(name)
            other = pika.BlockingConnection(pika.URLParameters(rabbit_url))
            try:
                other.channel().queue_delete(name)
            finally:
                other.close()
        return kept

    monkeypatch.setattr(declaring, "_declare_queue", declare_then_lose)
    app.declare()
    assert deleted == [queue]
    assert app.transport.queue_info(queue) is not None
    mandatory = OutgoingMessage(app.settings.model_exchange, "K0.a", b"{}",
                                Properties(message_id=uuid.uuid4().hex), mandatory=True)
    assert app.transport.publish([mandatory]) == [], "the queue is bound again"
    delete_topology(app)
    app.close()
