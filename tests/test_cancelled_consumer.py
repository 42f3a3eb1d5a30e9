"""A consumer the broker cancels (its queue deleted; on RabbitMQ 4.3 also a quorum consumer timeout) is
consumed again: the worker says so, is not ready meanwhile, declares its topology again and goes on."""

from __future__ import annotations

import logging
import subprocess
import threading
from collections import Counter
from collections.abc import Iterator

import pika
import pytest

from pubsubpy import MessageInfo, PubSub
from pubsubpy.errors import BrokerUnavailable, UnroutableMessage
from tests.conftest import Names, broker_version, rabbitmqctl, running_worker, wait_for
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


def test_a_queue_deleted_while_the_connection_was_down_is_declared_again(rabbit_url: str, names: Names,
                                                                          caplog: pytest.LogCaptureFixture) -> None:
    """Seen in a run where a forced close of every connection met a deleted queue: the connection died before
    the broker's cancel reached the consumer, and the reconnect's ``basic.consume`` was refused (404), which
    ended the worker with a ConfigurationError. The consumer declares the topology again, as for a cancel."""
    app = PubSub(rabbit_url, schemas=ALL, model_exchange=names.exchange(), service_name=names.service())
    app.subscribe("Booking.created")(lambda event: None)
    app.declare()
    queue = f"{app.settings.service_name}.events"
    redeclared: list[object] = []

    def redeclare(deadline: object) -> None:
        redeclared.append(deadline)
        app.declare()

    consumer = app.transport.consume(queue, 10, redeclare=redeclare)
    try:
        _delete_queue(rabbit_url, queue)
        # The order cannot be forced from outside (the cancel is on the wire before any close): the consumer's
        # connection is declared lost here, before it reads the cancel, as pika's close callback would.
        consumer._lost(BrokerUnavailable("connection lost (test)"))  # type: ignore[attr-defined]
        caplog.set_level(logging.WARNING, logger="pubsubpy")
        assert consumer.get(1.0) is None  # reconnects: 404, declares again, consumes
        assert redeclared, "the topology was not declared again"
        assert consumer.connected
        app.publish_model_event(BOOKING, "created", {"id": 1, "guest": "g"})
        delivery = None
        for _ in range(50):  # up to 10 s
            delivery = delivery or consumer.get(0.2)
            if delivery is not None:
                break
        assert delivery is not None and b'"id":1' in delivery.body.replace(b" ", b"")
        consumer.ack(delivery.tag)
        assert any("is gone" in r.getMessage() and queue in r.getMessage() for r in caplog.records)
    finally:
        consumer.close()
        app.close()


def test_a_reconnect_lost_again_while_setting_up_tries_a_fresh_connection(rabbit_url: str, names: Names) -> None:
    """Seen on the cluster when a queue's leader stopped: the consumer reconnected to another node, and that
    connection died during ``basic.consume``; the drain then failed with "could not reconnect". A consumer
    tries a fresh connection (a bounded number of times, within its deadline) before it gives up."""
    app = PubSub(rabbit_url, schemas=ALL, model_exchange=names.exchange(), service_name=names.service())
    app.subscribe("Booking.created")(lambda event: None)
    app.declare()
    consumer = app.transport.consume(f"{app.settings.service_name}.events", 10)
    real_open = consumer._open  # type: ignore[attr-defined]
    opened: list[int] = []

    def open_lost_once() -> None:  # what the dying connection did, in the first reconnect only
        opened.append(1)
        if len(opened) == 1:
            raise BrokerUnavailable("connection lost during basic.consume (test)")
        real_open()

    consumer._open = open_lost_once  # type: ignore[attr-defined]
    try:
        consumer._lost(BrokerUnavailable("connection lost (test)"))  # type: ignore[attr-defined]
        assert consumer.get(0.5) is None  # reconnected on the second try, nothing to deliver
        assert len(opened) == 2 and consumer.connected
        info = app.transport.queue_info(f"{app.settings.service_name}.events")
        assert info is not None and info.consumers == 1, "the abandoned connection's consumer is gone"
        app.publish_model_event(BOOKING, "created", {"id": 3, "guest": "g"})
        delivery = None
        for _ in range(50):  # up to 10 s
            delivery = consumer.get(0.2)
            if delivery is not None:
                break
        assert delivery is not None
        consumer.ack(delivery.tag)
    finally:
        consumer.close()
        app.close()


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


def test_a_quorum_consumer_timeout_on_rabbitmq_4_3_is_consumed_again(
        rabbit_url: str, names: Names, caplog: pytest.LogCaptureFixture) -> None:
    """RabbitMQ 4.3 tells a quorum consumer whose delivery outlived ``consumer_timeout`` with a
    ``basic.cancel`` and returns its messages; the handler's late ack must not close anything, and the
    message it was handling is not handled again when it comes back."""
    if broker_version() < (4, 3):
        pytest.skip("before 4.3 a consumer timeout closes the channel instead (a lost connection to pubsubpy)")
    app = PubSub(rabbit_url, schemas=ALL, model_exchange=names.exchange(), service_name=names.service(),
                 queue_type="quorum")
    handled: Counter[int] = Counter()

    @app.subscribe("Booking.created")
    def slow_first(event: BookingCreated) -> None:
        if not handled:
            threading.Event().wait(2.5)  # longer than the queue's consumer timeout (1 s)
        handled[event.id] += 1

    app.declare()
    queue = f"{app.settings.service_name}.events"
    policy = f"t-{names.tag}-consumer-timeout"
    rabbitmqctl("set_policy", "--apply-to", "quorum_queues", policy, f"^{queue}$", '{"consumer-timeout": 1000}')
    stop = threading.Event()
    results = []
    worker = threading.Thread(target=lambda: results.append(app.run(stop=stop)))
    caplog.set_level(logging.WARNING, logger="pubsubpy")
    try:
        app.publish_many([(BOOKING, "created", {"id": i, "guest": "g"}) for i in range(3)])
        worker.start()
        wait_for(lambda: len(handled) == 3, timeout=30, what="every event")
        wait_for(lambda: worker_app_idle(app), timeout=10, what="the queue to be empty")
    finally:
        stop.set()
        worker.join(30)
        subprocess.run(["rabbitmqctl", "clear_policy", policy], capture_output=True, timeout=60)
    assert handled == {0: 1, 1: 1, 2: 1}, handled
    assert any("cancelled" in r.getMessage() for r in caplog.records), "the broker did cancel the consumer"
    assert results and results[0].duplicates >= 1, "the timed-out message came back and was recognised"
    app.close()


def worker_app_idle(app: PubSub) -> bool:
    info = app.transport.queue_info(f"{app.settings.service_name}.events")
    return info is not None and info.messages == 0


@pytest.fixture
def short_consumer_timeout(rabbit_url: str) -> Iterator[None]:
    """The broker's consumer_timeout at 1 s, checked every 0.5 s, for channels opened meanwhile (the
    broker-wide defaults, 30 min checked every minute, are restored after)."""
    if broker_version() >= (4, 0):
        pytest.skip("RabbitMQ 4.x does not take these settings at run time (measured on 4.3.6: no timeout in 6 s); "
                    "its quorum consumer timeout is tested above")
    rabbitmqctl("eval", "application:set_env(rabbit, consumer_timeout, 1000).")
    rabbitmqctl("eval", "application:set_env(rabbit, channel_tick_interval, 500).")
    try:
        yield
    finally:
        rabbitmqctl("eval", "application:set_env(rabbit, consumer_timeout, 1800000).")
        rabbitmqctl("eval", "application:set_env(rabbit, channel_tick_interval, 60000).")


def test_a_channel_closed_by_a_consumer_timeout_is_consumed_again(
        rabbit_url: str, names: Names, short_consumer_timeout: None) -> None:
    """A classic queue's consumer timeout closes the channel (406 PRECONDITION_FAILED): the worker is not
    ready meanwhile, consumes again on a new connection, and the message that outlived the timeout is
    handled once (it comes back, and is recognised as settled)."""
    app = PubSub(rabbit_url, schemas=ALL, model_exchange=names.exchange(), service_name=names.service())
    handled: Counter[int] = Counter()

    @app.subscribe("Booking.created")
    def slow_first(event: BookingCreated) -> None:
        if not handled:
            threading.Event().wait(2.5)
        handled[event.id] += 1

    app.declare()
    app.publish_many([(BOOKING, "created", {"id": i, "guest": "g"}) for i in range(3)])
    stop = threading.Event()
    results = []
    worker = threading.Thread(target=lambda: results.append(app.run(stop=stop)))
    worker.start()
    readiness: list[bool] = []
    try:
        wait_for(lambda: bool(readiness.append(app.health.ready()[0])) or len(handled) == 3, timeout=30,
                 what="every event")
        wait_for(lambda: worker_app_idle(app), timeout=10, what="the queue to be empty")
        assert worker.is_alive(), "the worker gave up"
    finally:
        stop.set()
        worker.join(30)
    assert handled == {0: 1, 1: 1, 2: 1}, handled
    assert False in readiness[readiness.index(True):], "/healthz said ready on a closed channel"
    # the prefetched messages were handled too before the lost acks were noticed: all came back, recognised
    assert results and results[0].stopped_by == "stopped" and results[0].duplicates >= 1, results
    app.close()


def test_a_worker_refused_while_declaring_again_waits_for_its_permissions(
        rabbit_url: str, names: Names, caplog: pytest.LogCaptureFixture) -> None:
    """Before: the consumer was cancelled (its queue deleted) while the user had lost its configure
    permission; declaring again was refused (403) and the PermissionDenied ended the worker. A running
    worker takes a permission taken away as a broker it cannot use yet: it backs off, is not ready, and
    consumes again once the permission is back."""
    vhost = f"t-perm-{names.service()}"
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        url = rabbit_url.rsplit("/", 1)[0] + "/" + vhost
        options = {"schemas": ALL, "model_exchange": names.exchange(), "service_name": names.service()}
        app = PubSub(url, retry_connect_delay=0.1, **options)  # type: ignore[arg-type]
        handled: list[int] = []

        @app.subscribe("Booking.created")
        def record(event: BookingCreated) -> None:
            handled.append(event.id)

        caplog.set_level(logging.WARNING, logger="pubsubpy")
        with running_worker(app) as worker:
            wait_for(lambda: app.health.ready()[0], timeout=30, what="the worker consuming")
            rabbitmqctl("set_permissions", "-p", vhost, "guest", "^$", ".*", ".*")  # no configure
            rabbitmqctl("delete_queue", "--vhost", vhost, f"{options['service_name']}.events")
            wait_for(lambda: any("needs configure permission" in r.getMessage() for r in caplog.records),
                     timeout=30, what="the refused declare, logged")
            assert worker.thread.is_alive(), "the worker ended on a permission taken away"
            assert not app.health.ready()[0]
            rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
            wait_for(lambda: app.health.ready()[0], timeout=60, what="the worker consuming again")
            publisher = PubSub(url, **options)  # type: ignore[arg-type]
            publisher.publish_model_event(BOOKING, "created", {"id": 3, "guest": "g"})
            publisher.close()
            wait_for(lambda: handled == [3], timeout=30, what="the message handled")
        assert not worker.thread.is_alive() and len(worker.results) == 1
        app.close()
    finally:
        subprocess.run(["rabbitmqctl", "delete_vhost", vhost], capture_output=True, timeout=60)
