"""The Celery drain task in Celery's own test worker, RabbitMQ as Celery's broker."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator

import pytest

celery = pytest.importorskip("celery")

from celery.contrib.testing.worker import start_worker  # noqa: E402

import pubsubpy  # noqa: E402
from pubsubpy.testing import reset  # noqa: E402
from tests.conftest import Names  # noqa: E402
from tests.contract.events import ALL, BOOKING, BookingCreated  # noqa: E402


@pytest.fixture
def default_app(rabbit_url: str, names: Names) -> Iterator[Counter[int]]:
    reset(subscriptions=True)
    pubsubpy.init(rabbit_url, schemas=ALL, model_exchange=names.exchange(), service_name=names.service())
    handled: Counter[int] = Counter()
    lock = threading.Lock()

    @pubsubpy.subscribe("Booking.created")
    def on_created(event: BookingCreated) -> None:
        with lock:
            handled[event.id] += 1

    pubsubpy.declare()
    yield handled
    reset(subscriptions=True)


def _celery(rabbit_url: str, names: Names) -> celery.Celery:
    app = celery.Celery(f"test-{names.tag}", broker=rabbit_url, backend="rpc://")
    app.conf.task_default_queue = f"t-{names.tag}-celery"
    app.conf.broker_heartbeat = 0  # otherwise the test worker's heartbeat timer stalls its shutdown
    names.queues.append(app.conf.task_default_queue)
    import pubsubpy.contrib.celery  # noqa: F401  (registers the shared task "pubsubpy.drain")

    return app


def test_drain_task_handles_events_in_a_real_worker(rabbit_url: str, names: Names,
                                                    default_app: Counter[int]) -> None:
    app = _celery(rabbit_url, names)
    pubsubpy.publish_many([(BOOKING, "created", {"id": i, "guest": "celery"}) for i in range(25)])
    with start_worker(app, pool="solo", perform_ping_check=False):
        result = app.send_task("pubsubpy.drain", kwargs={"timeout": 20}).get(timeout=60)
    assert result["handled"] == 25 and result["dead_lettered"] == 0
    assert sorted(default_app) == list(range(25))


def test_overlapping_drains_handle_each_message_once(rabbit_url: str, names: Names,
                                                     default_app: Counter[int]) -> None:
    app = _celery(rabbit_url, names)
    pubsubpy.publish_many([(BOOKING, "created", {"id": i, "guest": "celery"}) for i in range(400)])
    with start_worker(app, pool="threads", concurrency=3, perform_ping_check=False):
        pending = [app.send_task("pubsubpy.drain", kwargs={"timeout": 20, "max_messages": 150}) for _ in range(3)]
        results = [p.get(timeout=60) for p in pending]
        leftover = app.send_task("pubsubpy.drain", kwargs={"timeout": 20}).get(timeout=60)
    assert sum(1 for r in results if r["handled"]) >= 2, f"the drains did not overlap: {results}"
    assert all(r["handled"] <= 150 for r in results), "max_messages holds with competing consumers"
    assert sum(r["handled"] for r in results) + leftover["handled"] == 400
    assert sorted(default_app) == list(range(400)) and set(default_app.values()) == {1}, "each message once"
