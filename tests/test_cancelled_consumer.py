"""A consumer the broker cancels (its queue deleted; on RabbitMQ 4.3 also a quorum consumer timeout) is
consumed again: the worker says so, is not ready meanwhile, declares its topology again and goes on."""

from __future__ import annotations

import logging
import threading
from collections import Counter

import pika
import pytest

from pubsubpy import MessageInfo, PubSub
from pubsubpy.errors import UnroutableMessage
from tests.conftest import Names, wait_for
from tests.contract.events import ALL, BOOKING, BookingCreated


def _delete_queue(url: str, queue: str) -> None:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        connection.channel().queue_delete(queue)
    finally:
        connection.close()


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
def test_a_worker_whose_queue_is_deleted_declares_it_again_and_consumes(
        rabbit_url: str, names: Names, queue_type: str, caplog: pytest.LogCaptureFixture) -> None:
    exchange, service = names.exchange(), names.service()
    options = {"schemas": ALL, "model_exchange": exchange, "service_name": service, "queue_type": queue_type}
    worker_app = PubSub(rabbit_url, **options)  # type: ignore[arg-type]
    publisher = PubSub(rabbit_url, on_unroutable="raise", **options)  # type: ignore[arg-type]
    handled: Counter[int] = Counter()

    @worker_app.subscribe("Booking.created")
    def record(event: BookingCreated, info: MessageInfo) -> None:
        handled[event.id] += 1

    stop = threading.Event()
    results = []
    worker = threading.Thread(target=lambda: results.append(worker_app.run(stop=stop)))
    caplog.set_level(logging.WARNING, logger="pubsubpy")
    worker.start()
    try:
        wait_for(lambda: worker_app.health.ready()[0], timeout=30, what="the worker to be ready")
        publisher.publish_many([(BOOKING, "created", {"id": i, "guest": "g"}) for i in range(5)])
        wait_for(lambda: len(handled) == 5, timeout=30, what="the first five events")

        _delete_queue(rabbit_url, f"{service}.events")
        unroutable: list[int] = []
        not_ready_seen = False
        event_id = 100
        # publish while the worker notices and recovers; each event is either refused as unroutable to its
        # publisher or handled, never silently lost
        for _ in range(2000):
            ready, _why = worker_app.health.ready()
            not_ready_seen = not_ready_seen or not ready
            if not_ready_seen and ready:
                break
            try:
                publisher.publish_model_event(BOOKING, "created", {"id": event_id, "guest": "g"})
            except UnroutableMessage:
                unroutable.append(event_id)
            event_id += 1
            threading.Event().wait(0.005)
        assert not_ready_seen, "/healthz never reported the cancelled consumer"
        wait_for(lambda: worker_app.health.ready()[0], timeout=30, what="the worker to be ready again")
        after = list(range(1000, 1010))
        publisher.publish_many([(BOOKING, "created", {"id": i, "guest": "g"}) for i in after])
        wait_for(lambda: all(i in handled for i in after), timeout=30, what="the events published afterwards")
        routed = [i for i in range(100, event_id) if i not in unroutable]
        wait_for(lambda: all(i in handled for i in routed), timeout=30, what="every routed event")
        assert unroutable, "no publish met the deleted queue"
        assert not any(i in handled for i in unroutable)
        assert all(count == 1 for count in handled.values()), handled
        assert worker.is_alive(), "the worker gave up"
    finally:
        stop.set()
        worker.join(30)
    assert results and results[0].stopped_by == "stopped"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("cancelled" in m and f"{service}.events" in m for m in warnings), warnings
    worker_app.close()
    publisher.close()


def test_a_drain_whose_queue_is_deleted_returns_what_it_did(rabbit_url: str, names: Names) -> None:
    """A drain goes on after its queue is deleted under it (declared again), and returns once empty."""
    app = PubSub(rabbit_url, schemas=ALL, model_exchange=names.exchange(), service_name=names.service(),
                 prefetch=1)
    deleted = threading.Event()
    seen: list[int] = []

    @app.subscribe("Booking.created")
    def record(event: BookingCreated) -> None:
        seen.append(event.id)
        if not deleted.is_set():
            deleted.set()
            _delete_queue(rabbit_url, f"{app.settings.service_name}.events")

    app.declare()
    app.publish_many([(BOOKING, "created", {"id": i, "guest": "g"}) for i in range(3)])
    result = app.drain(timeout=20)
    assert seen[0] == 0 and result.stopped_by == "empty"
    app.publish_model_event(BOOKING, "created", {"id": 9, "guest": "g"})  # the queue is there again, bound
    assert app.drain(timeout=20).handled == 1 and seen[-1] == 9
    app.close()
