"""RabbitMQ-only behaviour: interop with plain pika, broker errors, quorum queues, threads and forks."""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import multiprocessing
import shlex
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pika
import pytest

from pubsubpy import BrokerUnavailable, ConfigurationError, MessageInfo, PublishNacked, PubSub
from pubsubpy.envelope import Properties
from pubsubpy.topology import (
    AT_LEAST_ONCE_DEAD_LETTERING,
    LAZY,
    at_least_once_policy,
    lazy_policy,
    no_delivery_limit_policy,
)
from pubsubpy.transports.base import OutgoingMessage, QueueSpec
from pubsubpy.transports.rabbitmq._publishing import ConfirmChannel
from tests.conftest import Names, broker_version, connection_pids, refusing_queue, wait_for
from tests.contract.events import ALL, BOOKING, BookingCreated, BookingUpdated


def _app(url: str, names: Names, **options: object) -> PubSub:
    options.setdefault("model_exchange", names.exchange())
    options.setdefault("service_name", names.service())
    return PubSub(url, schemas=ALL, **options)  # type: ignore[arg-type]


def test_plain_pika_consumer_reads_the_documented_wire_format(rabbit_url: str, names: Names) -> None:
    app = _app(rabbit_url, names, service_name=names.service("billing"))
    queue = f"{names.tag}-foreign"
    names.queues.append(queue)
    connection = pika.BlockingConnection(pika.URLParameters(rabbit_url))
    try:
        channel = connection.channel()
        app.transport.declare_exchange(app.settings.model_exchange)
        channel.queue_declare(queue)
        channel.queue_bind(queue, app.settings.model_exchange, "Booking.*")
        sent = app.publish_model_event(BOOKING, "updated", {"id": 7, "status": "paid"})
        method, props, body = channel.basic_get(queue, auto_ack=True)
    finally:
        connection.close()
    assert method is not None and method.routing_key == "Booking.updated"
    assert json.loads(body) == {"id": 7, "status": "paid"}
    assert props.content_type == "application/json"
    assert props.message_id == sent and len(sent) == 32
    assert props.type == "shop.models.Booking.updated"
    assert props.app_id == app.settings.service_name
    assert props.delivery_mode == 2
    assert isinstance(props.timestamp, int) and props.timestamp > 1_700_000_000
    published_ms = props.headers.pop("pubsubpy-published-at")  # the AMQP timestamp has whole seconds
    assert isinstance(published_ms, int) and props.timestamp * 1000 <= published_ms < (props.timestamp + 1) * 1000
    assert props.headers == {"pubsubpy-schema-version": 1}
    app.close()


def test_plain_pika_publisher_in_the_documented_format_is_handled(rabbit_url: str, names: Names) -> None:
    app = _app(rabbit_url, names)
    got: list[tuple[BookingCreated, MessageInfo]] = []

    @app.subscribe("Booking.created")
    def on_created(event: BookingCreated, info: MessageInfo) -> None:
        got.append((event, info))

    app.declare()
    connection = pika.BlockingConnection(pika.URLParameters(rabbit_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(
            app.settings.model_exchange, "Booking.created", b'{"id": 3, "guest": "Go service"}',
            pika.BasicProperties(content_type="application/json", message_id="go-123", delivery_mode=2,
                                 type="shop.models.Booking.created", app_id="go-shop", timestamp=1_750_000_000))
    finally:
        connection.close()
    assert app.drain(timeout=10).handled == 1
    event, info = got[0]
    assert event == BookingCreated(id=3, guest="Go service")
    assert (info.message_id, info.app_id, info.attempt) == ("go-123", "go-shop", 1)
    app.close()


def test_existing_queue_with_other_arguments_is_a_configuration_error(rabbit_url: str, names: Names) -> None:
    service = names.service()
    exchange = names.exchange()
    classic = _app(rabbit_url, names, service_name=service, model_exchange=exchange)

    @classic.subscribe("Booking.*")
    def on_booking(event: BookingCreated | BookingUpdated) -> None: ...

    classic.declare()
    quorum = _app(rabbit_url, names, service_name=service, model_exchange=exchange, queue_type="quorum")
    quorum.subscribe("Booking.*")(on_booking)
    with pytest.raises(ConfigurationError) as excinfo:
        quorum.declare()
    assert "x-queue-type" in str(excinfo.value) and "never deletes" in str(excinfo.value)
    assert classic.dead_letter_count() == 0, "the existing queues are untouched"
    classic.close()
    quorum.close()


@pytest.mark.parametrize("existing", ["classic", "quorum"])
def test_a_changed_queue_type_is_named_whatever_the_other_arguments(
        rabbit_url: str, names: Names, existing: str) -> None:
    """The parking queues carry an argument of their type (classic: lazy; quorum queues that dead-letter:
    at-least-once) that the broker may compare first: the error still names the queue type."""
    wanted = "quorum" if existing == "classic" else "classic"
    before = _app(rabbit_url, names, queue_type=existing, retry_delay=0.05, max_attempts=2)
    before.declare()
    after = _app(rabbit_url, names, queue_type=wanted, retry_delay=0.05, max_attempts=2,
                 service_name=before.settings.service_name, model_exchange=before.settings.model_exchange)
    with pytest.raises(ConfigurationError, match="x-queue-type"):
        after.declare()
    before.close()
    after.close()


def test_quorum_queues_work_end_to_end_with_a_delivery_limit(rabbit_url: str, names: Names) -> None:
    app = _app(rabbit_url, names, queue_type="quorum", delivery_limit=3, retry_delay=0, max_attempts=2)
    got: list[int] = []

    @app.subscribe("Booking.*")
    def on_booking(event: BookingCreated | BookingUpdated) -> None:
        got.append(event.id)
        if event.id == 2:
            raise RuntimeError("poison")

    app.declare()
    app.publish_many([(BOOKING, "created", {"id": i, "guest": "g"}) for i in range(5)])
    result = app.drain(timeout=20)
    assert result.handled == 4 and result.dead_lettered == 1
    assert got.count(2) == 2
    [letter] = app.list_dead_letters()
    assert letter.reason == "handler_error"

    # Broker-side backstop: a message whose consumer dies holding it, again and again, is dead-lettered by
    # the broker itself. (A worker killed mid-message: its connection drops with the message unacked. A
    # basic.nack would not do on RabbitMQ 4.3, which no longer counts it towards the limit.)
    app.publish_model_event(BOOKING, "created", {"id": 99, "guest": "crash"})
    queue = f"{app.settings.service_name}.events"
    returns = Counter[str]()

    def crash_once() -> bool:
        connection = pika.BlockingConnection(pika.URLParameters(rabbit_url))
        try:
            method, properties, _body = connection.channel().basic_get(queue)
            if method is not None:
                returns[properties.message_id or ""] += 1
        finally:
            connection.close()  # dies holding it
        return app.dead_letter_count() == 2

    wait_for(crash_once, timeout=30, what="the broker to dead-letter the poison message")
    assert list(returns.values()) == [4], "delivered delivery_limit + 1 times, then dead-lettered by the broker"
    letters = {letter.reason for letter in app.list_dead_letters()}
    assert letters == {"handler_error", "delivery_limit"}
    app.close()


def _queue_column(column: str, names: list[str]) -> dict[str, str]:
    out = subprocess.run(["rabbitmqctl", "-q", "list_queues", "--no-table-headers", "name", column],
                         check=True, capture_output=True, text=True, timeout=60).stdout
    rows = (line.split("\t", 1) for line in out.splitlines() if "\t" in line)
    return {name: value for name, value in rows if name in names}


def test_a_drain_on_a_quorum_queue_takes_everything_outstanding(rabbit_url: str, names: Names) -> None:
    """A quorum queue's declare-ok can say 0 ready while its deliveries are still on their way: a drain
    of 1,000 messages returned with none handled in 2 of 5 tries before the consumer waited for them."""
    app = _app(rabbit_url, names, queue_type="quorum", telemetry=False)
    got: list[int] = []

    @app.subscribe("Booking.created")
    def on_created(event: BookingCreated) -> None:
        got.append(event.id)

    app.declare()
    queue = f"{app.settings.service_name}.events"
    for _round in range(5):
        got.clear()
        app.publish_many([(BOOKING, "created", {"id": i, "guest": "g"}) for i in range(1000)])
        result = app.drain(timeout=60)
        assert (result.handled, app.transport.queue_depth(queue)) == (1000, 0), f"round {_round}"
    app.close()


def test_quorum_queues_dead_letter_at_least_once(rabbit_url: str, names: Names) -> None:
    app = _app(rabbit_url, names, queue_type="quorum", retry_delay=0.05, max_attempts=3)

    @app.subscribe("Booking.*")
    def on_booking(event: BookingCreated | BookingUpdated) -> None: ...

    topology = app.declare()
    dead_lettering = [topology.queue.name, *(spec.name for spec in topology.retry_queues)]
    arguments = _queue_column("arguments", [*dead_lettering, topology.dead_letter_queue.name])
    for name in dead_lettering:
        assert '{"x-dead-letter-strategy","at-least-once"}' in arguments[name], arguments[name]
        assert '{"x-overflow","reject-publish"}' in arguments[name], arguments[name]
    assert "x-dead-letter-strategy" not in arguments[topology.dead_letter_queue.name], "it dead-letters nowhere"
    assert not any("x-queue-mode" in value for value in arguments.values()), "quorum queues refuse a mode"
    app.close()


def _declare_as_before(url: str, specs: list[QueueSpec], added_later: dict[str, Any]) -> None:
    """Declare ``specs`` as an earlier pubsubpy did: without the arguments ``added_later``."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        for spec in specs:
            arguments = {k: v for k, v in spec.arguments.items() if k not in added_later}
            channel.queue_declare(spec.name, durable=True, arguments=arguments or None)
    finally:
        connection.close()


@contextlib.contextmanager
def _policy_applied(policy: str, name: str, wanted: list[str], spared: list[str], what: str) -> Iterator[None]:
    """Run ``policy`` (a logged ``rabbitmqctl set_policy`` command) and wait until it applies to the queues
    ``wanted``; check that it spares ``spared``. Cleared afterwards."""
    subprocess.run(shlex.split(policy), check=True, capture_output=True, timeout=60)
    try:
        wait_for(lambda: set(_queue_column("policy", wanted).values()) == {name}, timeout=20,
                 what=f"the policy to apply to {what}")
        assert name not in _queue_column("policy", spared).values(), f"only {what}"
        yield
    finally:
        subprocess.run(["rabbitmqctl", "clear_policy", "-p", "/", name], capture_output=True, timeout=60)


def _drain_until_dead_lettered(app: PubSub) -> tuple[int, int]:
    """Drain (retry copies come back from their TTL queues) until a message is dead-lettered; the
    number of retries and dead letters on the way."""
    totals = [0, 0]

    def dead_lettered() -> bool:
        result = app.drain(timeout=5)
        totals[0] += result.retried
        totals[1] += result.dead_lettered
        return totals[1] > 0

    wait_for(dead_lettered, timeout=20, what="the message to be retried and then dead-lettered")
    return totals[0], totals[1]


def test_classic_dead_letter_and_retry_queues_are_lazy(rabbit_url: str, names: Names) -> None:
    """They park messages nobody consumes for a while: on RabbitMQ before 3.12 a lazy queue keeps them
    on disk only (a drain dead-letters about a third faster into one; bench/worker_rows.py)."""
    app = _app(rabbit_url, names, retry_delay=0.05, max_attempts=3, unknown_key_window=0, retry_jitter=False)

    @app.subscribe("Booking.*")
    def on_booking(event: BookingCreated | BookingUpdated) -> None:
        raise RuntimeError("the handler failed")

    topology = app.declare()
    parking = [topology.dead_letter_queue.name, *(spec.name for spec in topology.retry_queues)]
    arguments = _queue_column("arguments", [*parking, topology.queue.name])
    assert len(parking) == 3 and set(arguments) == {*parking, topology.queue.name}, arguments
    for name in parking:
        if broker_version() >= (3, 12):  # every classic queue is lazy there: the mode would only be noise
            assert "x-queue-mode" not in arguments[name], arguments[name]
        else:
            assert '{"x-queue-mode","lazy"}' in arguments[name], arguments[name]
    assert "x-queue-mode" not in arguments[topology.queue.name], "the service queue's messages are on their way"
    sent = app.publish_model_event(BOOKING, "created", {"id": 1, "guest": "g"})
    assert _drain_until_dead_lettered(app) == (2, 1)
    assert [letter.message_id for letter in app.list_dead_letters()] == [sent]
    app.close()


def test_classic_queues_from_before_lazy_keep_working_and_a_policy_makes_them_lazy(
        rabbit_url: str, names: Names, caplog: pytest.LogCaptureFixture) -> None:
    app = _app(rabbit_url, names, retry_delay=0.05, max_attempts=2, unknown_key_window=0)
    attempts: list[int] = []

    @app.subscribe("Booking.created")
    def on_created(event: BookingCreated) -> None:
        attempts.append(event.id)
        raise RuntimeError("the handler failed")

    topology = app.topology()
    old = [topology.dead_letter_queue, *topology.retry_queues]
    modern = broker_version() >= (3, 12)  # pubsubpy declares no mode there; the queues of before have one
    _declare_as_before(rabbit_url, old, {} if modern else LAZY)
    service = app.settings.service_name or ""
    with caplog.at_level(logging.INFO, logger="pubsubpy.rabbitmq"):
        app.declare()  # was a 406 PRECONDITION_FAILED (inequivalent arg 'x-queue-mode')
    policy = lazy_policy(service)
    logged = [r for r in caplog.records if policy in r.getMessage() and r.levelno == logging.INFO]
    assert len(logged) == (0 if modern else 1), caplog.text
    app.publish_model_event(BOOKING, "created", {"id": 1, "guest": "g"})
    assert _drain_until_dead_lettered(app) == (1, 1) and attempts == [1, 1]
    assert len(app.list_dead_letters()) == 1
    if modern:
        app.close()
        return

    with _policy_applied(policy, f"pubsubpy-{service}-lazy", [spec.name for spec in old],
                         [topology.queue.name, topology.queue.name + ".ledger"],
                         "the queues that park messages (the dead-letter queue and every retry queue)"):
        assert len(app.list_dead_letters()) == 1, "the dead letter stayed through the change of mode"
    app.close()


def test_quorum_queues_from_before_at_least_once_keep_working_and_a_policy_upgrades_them(
        rabbit_url: str, names: Names, caplog: pytest.LogCaptureFixture) -> None:
    app = _app(rabbit_url, names, queue_type="quorum", retry_delay=0.05, max_attempts=3)
    got: list[int] = []

    @app.subscribe("Booking.created")
    def on_created(event: BookingCreated) -> None:
        got.append(event.id)

    topology = app.topology()
    old = [topology.queue, *topology.retry_queues]
    _declare_as_before(rabbit_url, old, AT_LEAST_ONCE_DEAD_LETTERING)  # pubsubpy 0.x: at-most-once
    service = app.settings.service_name or ""
    with caplog.at_level(logging.WARNING, logger="pubsubpy.rabbitmq"):
        app.declare()  # was a 406 PRECONDITION_FAILED (inequivalent arg 'x-dead-letter-strategy')
    policy = at_least_once_policy(service)
    assert any(policy in record.getMessage() for record in caplog.records), caplog.text
    app.publish_model_event(BOOKING, "created", {"id": 1, "guest": "g"})
    assert app.drain(timeout=10).handled == 1 and got == [1]

    with _policy_applied(policy, f"pubsubpy-{service}-at-least-once", [spec.name for spec in old],
                         [topology.dead_letter_queue.name, topology.queue.name + ".ledger"],
                         "the queues that dead-letter (the service queue and every retry queue)"):
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="pubsubpy.rabbitmq"):
            app.declare()
        assert policy in caplog.text, "the arguments still differ: the warning stays (the policy is the fix)"
    app.close()


def test_a_quorum_dead_letter_queue_from_before_keeps_working_and_a_policy_lifts_its_limit(
        rabbit_url: str, names: Names, caplog: pytest.LogCaptureFixture) -> None:
    """RabbitMQ 4.0+: a quorum dead-letter queue an earlier pubsubpy declared has the default delivery
    limit of 20, and a listing counts as a delivery. It keeps working (no 406 for the new argument), the
    log gives the policy, and with the policy its letters survive any number of listings."""
    if broker_version() < (4, 0):
        pytest.skip("RabbitMQ before 4.0 has no default delivery limit (and refuses -1 in a policy)")
    app = _app(rabbit_url, names, queue_type="quorum", max_attempts=1)

    @app.subscribe("Booking.created")
    def fail(event: BookingCreated) -> None:
        raise RuntimeError("the handler failed")

    topology = app.topology()
    _declare_as_before(rabbit_url, [topology.dead_letter_queue], {})  # no x-delivery-limit
    service = app.settings.service_name or ""
    with caplog.at_level(logging.WARNING, logger="pubsubpy.rabbitmq"):
        app.declare()  # was a 406 PRECONDITION_FAILED (inequivalent arg 'x-delivery-limit')
    policy = no_delivery_limit_policy(service)
    assert any(policy in record.getMessage() for record in caplog.records), caplog.text
    app.publish_many([(BOOKING, "created", {"id": i, "guest": "g"}) for i in range(3)])
    assert app.drain(timeout=20).dead_lettered == 3
    with _policy_applied(policy, f"pubsubpy-{service}-no-delivery-limit", [topology.dead_letter_queue.name],
                         [topology.queue.name], "the dead-letter queue"):
        for _ in range(25):
            assert len(app.list_dead_letters()) == 3
    app.close()


def test_a_nacked_publish_is_sent_again_on_a_new_connection_until_its_deadline(
        rabbit_url: str, names: Names) -> None:
    """A queue that refuses (full, reject-publish) nacks every try: the publish raises PublishNacked at its
    deadline (connect_timeout + confirm_timeout), naming the message; once there is room it goes through."""
    app = _app(rabbit_url, names, connect_timeout=1, confirm_timeout=1)
    queue = refusing_queue(rabbit_url, names, app.settings.model_exchange, 1)
    connection = pika.BlockingConnection(pika.URLParameters(rabbit_url))
    try:
        channel = connection.channel()
        app.publish_model_event(BOOKING, "created", {"id": 1, "guest": "g"})
        started = time.monotonic()
        with pytest.raises(PublishNacked) as excinfo:
            app.publish_model_event(BOOKING, "created", {"id": 2, "guest": "g"})
        took = time.monotonic() - started
        assert 1.0 < took < 10, f"retried until the 2 s deadline, then raised (took {took:.1f}s)"
        assert len(excinfo.value.message_ids) == 1
        channel.queue_purge(queue)
        app.publish_model_event(BOOKING, "created", {"id": 3, "guest": "g"})
        _method, _props, body = channel.basic_get(queue, auto_ack=True)
        assert json.loads(body)["id"] == 3
    finally:
        connection.close()
    app.close()


def _recording_app(url: str, names: Names) -> tuple[PubSub, list[int]]:
    """A declared app whose handler records the ids of Booking.created events."""
    app = _app(url, names)
    got: list[int] = []

    @app.subscribe("Booking.created")
    def on_created(event: BookingCreated) -> None:
        got.append(event.id)

    app.declare()
    return app, got


def test_publishing_from_many_threads_at_once(rabbit_url: str, names: Names) -> None:
    app, got = _recording_app(rabbit_url, names)
    errors: list[BaseException] = []

    def worker(offset: int) -> None:
        try:
            for i in range(50):
                app.publish_model_event(BOOKING, "created", {"id": offset + i, "guest": "t"})
        except BaseException as exc:  # collected and asserted below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n * 1000,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert app.drain(timeout=20).handled == 400
    assert sorted(got) == sorted(n * 1000 + i for n in range(8) for i in range(50))
    app.close()


def test_the_publishing_connections_of_ended_threads_are_closed(rabbit_url: str, names: Names) -> None:
    """Each thread publishes on its own connection; once the thread has ended, the next thread's new one closes
    it (not the garbage collector, which may not run for a long time: a pika connection sits in reference
    cycles)."""
    app, _ = _recording_app(rabbit_url, names)  # declared: this thread has its connection
    service = app.settings.service_name
    assert service is not None

    all_published = threading.Barrier(5, timeout=60)

    def publish_once(offset: int) -> None:
        app.publish_model_event(BOOKING, "created", {"id": offset, "guest": "thread"})

    def publish_and_wait(offset: int) -> None:
        publish_once(offset)
        all_published.wait()  # none ends before all five have their connection

    gc.disable()
    try:
        threads = [threading.Thread(target=publish_and_wait, args=(n,)) for n in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        assert len(connection_pids(service)) == 6, "this thread's and each other thread's connection"
        publish_once(5)  # on this thread's connection
        last = threading.Thread(target=publish_once, args=(6,))  # a new connection, after the five ended
        last.start()
        last.join(timeout=60)
        wait_for(lambda: len(connection_pids(service)) == 2, timeout=30,
                 what="the ended threads' connections closed: this thread's and the last one's left")
    finally:
        gc.enable()
    assert app.drain(timeout=20).handled == 7
    app.close()
    wait_for(lambda: not connection_pids(service), timeout=30, what="close() to close every connection")


def _child_publish(app: PubSub, queue: multiprocessing.Queue) -> None:  # type: ignore[type-arg]
    try:
        queue.put(app.publish_model_event(BOOKING, "created", {"id": 2, "guest": "child"}))
    except BaseException as exc:
        queue.put(repr(exc))


def test_forked_child_publishes_on_its_own_connection(rabbit_url: str, names: Names) -> None:
    app, got = _recording_app(rabbit_url, names)
    app.publish_model_event(BOOKING, "created", {"id": 1, "guest": "parent"})  # parent's connection exists
    results: multiprocessing.Queue = multiprocessing.get_context("fork").Queue()  # type: ignore[type-arg]
    child = multiprocessing.get_context("fork").Process(target=_child_publish, args=(app, results))
    child.start()
    child.join(timeout=60)
    assert child.exitcode == 0
    child_id = results.get(timeout=5)
    assert len(child_id) == 32, child_id
    app.publish_model_event(BOOKING, "created", {"id": 3, "guest": "parent again"})  # parent unharmed
    assert app.drain(timeout=10).handled == 3
    assert sorted(got) == [1, 2, 3]
    app.close()


def test_unreachable_broker_is_a_bounded_clear_error() -> None:
    app = PubSub("amqp://guest:guest@127.0.0.1:1/%2F", schemas=ALL, service_name="x", connect_timeout=1,
                 connection_attempts=2, retry_connect_delay=0.1)
    with pytest.raises(BrokerUnavailable, match=r"127\.0\.0\.1:1"):
        app.publish_model_event(BOOKING, "created", {"id": 1, "guest": "g"})


def test_bad_credentials_are_reported_without_the_password(rabbit_url: str) -> None:
    url = rabbit_url.replace("guest:guest", "guest:wrong-password")
    app = PubSub(url, schemas=ALL, service_name="x", connection_attempts=1)
    with pytest.raises(BrokerUnavailable) as excinfo:
        app.publish_model_event(BOOKING, "created", {"id": 1, "guest": "g"})
    assert "credentials" in str(excinfo.value) and "wrong-password" not in str(excinfo.value)


def test_failover_to_the_second_url(rabbit_url: str, names: Names) -> None:
    app = _app(rabbit_url.replace("127.0.0.1:5672", "127.0.0.1:1") + "," + rabbit_url, names, connect_timeout=1)

    @app.subscribe("Booking.created")
    def on_created(event: BookingCreated) -> None: ...

    app.publish_model_event(BOOKING, "created", {"id": 1, "guest": "g"})
    assert app.drain(timeout=10).handled == 1
    app.close()




def test_a_ledger_of_pubsubpy_0_1_is_taken_over(rabbit_url: str, names: Names) -> None:
    """0.1 kept its bindings in `<queue>.bindings` (one JSON list, x-max-length 1); declaring now records
    those patterns in the new ledger (so they stay prunable) and deletes the old queue."""
    exchange, service = names.exchange(), names.service()
    queue = f"{service}.events"
    connection = pika.BlockingConnection(pika.URLParameters(rabbit_url))
    try:
        channel = connection.channel()
        channel.exchange_declare(exchange, exchange_type="topic", durable=True)
        channel.queue_declare(queue, durable=True, arguments={"x-dead-letter-exchange": f"{service}.dlx"})
        channel.queue_bind(queue, exchange, routing_key="Room.*")
        channel.queue_declare(f"{queue}.bindings", durable=True, arguments={"x-max-length": 1})
        channel.basic_publish("", f"{queue}.bindings", json.dumps(["Room.*"]).encode())
        app = _app(rabbit_url, names, model_exchange=exchange, service_name=service)

        @app.subscribe("Booking.*")
        def on_booking(event: BookingCreated | BookingUpdated) -> None: ...

        app.declare()
        assert app.stale_bindings(timeout=10) == ["Room.*"]
        with pytest.raises(pika.exceptions.ChannelClosedByBroker) as gone:
            connection.channel().queue_declare(f"{queue}.bindings", passive=True)
        assert gone.value.reply_code == 404
        app.declare(prune=True)
        assert app.stale_bindings(timeout=10) == []
        app.close()
    finally:
        connection.close()


def test_a_publish_between_the_halves_of_another_keeps_its_own_answers(rabbit_url: str, names: Names) -> None:
    """The consumer loop sends a chunk's copies, runs the next chunk (whose handlers may publish on the same
    thread's confirm channel), then waits for the copies: each batch gets its own nacks and returns."""
    exchange = names.exchange()
    refusing_queue(rabbit_url, names, exchange, 1)  # stores one message, then nacks
    plain = f"{names.tag}-plain"
    names.queues.append(plain)
    connection = pika.BlockingConnection(pika.URLParameters(rabbit_url))
    try:
        connection.channel().queue_declare(plain)
        confirm = ConfirmChannel(connection, 5.0)

        def message(message_id: str, to: str, key: str) -> OutgoingMessage:
            return OutgoingMessage(to, key, b"{}", Properties(message_id=message_id), mandatory=True)

        copies = confirm.send([message("stored", exchange, "Booking.created"),
                               message("refused", exchange, "Booking.created"),
                               message("unroutable", exchange, "Nobody.listens")])
        assert confirm.publish([message("between", "", plain)]) == []
        with pytest.raises(PublishNacked) as excinfo:
            confirm.wait_for(copies)
        assert list(excinfo.value.message_ids) == ["refused"]
        assert list(excinfo.value.unroutable) == ["unroutable"]
        assert confirm.publish([message("after", "", plain)]) == []
    finally:
        connection.close()
