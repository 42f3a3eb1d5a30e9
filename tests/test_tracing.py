"""Tracing across two services on the real broker, checked against the pinned semantic conventions
(v1.44.0, ``pubsubpy/telemetry/_conventions.py``) attribute by attribute."""

from __future__ import annotations

from collections.abc import Iterator

import pika
import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from pubsubpy import MessageInfo, PubSub, Reject
from pubsubpy.telemetry._conventions import SEMCONV_VERSION
from pubsubpy.telemetry._tracing import Tracing
from tests.conftest import Names, wait_for
from tests.contract.events import ALL, BOOKING, BookingCreated, BookingUpdated

RK = "Booking.created"


class Service:
    """One service's PubSub with its own tracer provider and in-memory exporter (as two processes would)."""

    def __init__(self, url: str, exchange: str, service: str | None) -> None:
        self.exporter = InMemorySpanExporter()
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.app = PubSub(url, schemas=ALL, model_exchange=exchange, service_name=service, telemetry=False,
                          middleware=[Tracing(provider)], retry_delay=0.05, max_attempts=3)

    def spans(self, name_prefix: str = "") -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.name.startswith(name_prefix)]


@pytest.fixture
def two_services(rabbit_url: str, names: Names) -> Iterator[tuple[Service, Service]]:
    exchange = names.exchange()
    shop, billing = Service(rabbit_url, exchange, None), Service(rabbit_url, exchange, names.service("billing"))
    yield shop, billing
    shop.app.close()
    billing.app.close()


def _drain_until(service: Service, done: object, what: str) -> None:
    def step() -> bool:
        service.app.drain(timeout=5)
        return bool(done() if callable(done) else done)

    wait_for(step, timeout=30, step=0.05, what=what)


def test_the_handler_span_is_a_child_of_the_publisher_span_in_another_service(
        two_services: tuple[Service, Service]) -> None:
    shop, billing = two_services
    seen: list[MessageInfo] = []

    @billing.app.subscribe("Booking.created")
    def on_created(event: BookingCreated, info: MessageInfo) -> None:
        seen.append(info)

    billing.app.declare()
    message_id = shop.app.publish_model_event(BOOKING, "created", {"id": 1, "guest": "Ada"},
                                              correlation_id="order-7")
    _drain_until(billing, lambda: seen, "the handler to run")

    [publish] = shop.spans("publish")
    assert publish.name == f"publish {shop.app.settings.model_exchange}:{RK}"
    assert publish.kind is SpanKind.PRODUCER
    assert publish.status.status_code is StatusCode.UNSET
    assert dict(publish.attributes or {}) == {
        "messaging.system": "rabbitmq",
        "messaging.operation.name": "publish",
        "messaging.operation.type": "send",
        "messaging.destination.name": f"{shop.app.settings.model_exchange}:{RK}",
        "messaging.rabbitmq.destination.routing_key": RK,
        "messaging.message.id": message_id,
        "messaging.message.conversation_id": "order-7",
    }
    assert publish.instrumentation_scope is not None
    assert publish.instrumentation_scope.name == "pubsubpy"
    assert publish.instrumentation_scope.schema_url == f"https://opentelemetry.io/schemas/{SEMCONV_VERSION}"
    assert "traceparent" in seen[0].headers  # the W3C context travelled in the headers

    [process] = billing.spans("process")
    queue = f"{billing.app.settings.service_name}.events"
    assert process.name == f"process {billing.app.settings.model_exchange}:{RK}:{queue}"
    assert process.kind is SpanKind.CONSUMER
    assert process.context is not None and publish.context is not None
    assert process.context.trace_id == publish.context.trace_id
    assert process.parent is not None and process.parent.span_id == publish.context.span_id
    assert process.parent.is_remote
    attributes = dict(process.attributes or {})
    tag = attributes.pop("messaging.rabbitmq.message.delivery_tag")
    assert isinstance(tag, int) and tag >= 1
    assert attributes == {
        "messaging.system": "rabbitmq",
        "messaging.operation.name": "process",
        "messaging.operation.type": "process",
        "messaging.destination.name": f"{billing.app.settings.model_exchange}:{RK}:{queue}",
        "messaging.rabbitmq.destination.routing_key": RK,
        "messaging.message.id": message_id,
        "messaging.message.conversation_id": "order-7",
        "pubsubpy.handler": on_created.__module__ + "." + on_created.__qualname__,
        "pubsubpy.attempt": 1,
        "pubsubpy.outcome": "handled",
    }
    assert process.status.status_code is StatusCode.UNSET


def test_a_retried_message_stays_in_its_trace_and_each_attempt_says_what_became_of_it(
        two_services: tuple[Service, Service]) -> None:
    shop, billing = two_services
    attempts: list[int] = []

    @billing.app.subscribe("Booking.created")
    def flaky(event: BookingCreated, info: MessageInfo) -> None:
        attempts.append(info.attempt)
        if info.attempt == 1:
            raise RuntimeError("payment service down")

    @billing.app.subscribe("Booking.updated")
    def refuse(event: BookingUpdated) -> None:
        raise Reject("cancelled bookings are not billed")

    billing.app.declare()
    shop.app.publish_model_event(BOOKING, "created", {"id": 2, "guest": "Grace"})
    shop.app.publish_model_event(BOOKING, "updated", {"id": 2, "status": "cancelled"})
    _drain_until(billing, lambda: attempts == [1, 2] and len(billing.spans("process")) == 3,
                 "the retry's second attempt")

    publish = {s.attributes["messaging.rabbitmq.destination.routing_key"]: s  # type: ignore[index]
               for s in shop.spans("publish")}
    created = [s for s in billing.spans("process") if s.attributes["pubsubpy.handler"].endswith("flaky")]  # type: ignore[index,union-attr]
    first, second = sorted(created, key=lambda s: s.attributes["pubsubpy.attempt"])  # type: ignore[index]
    origin = publish[RK].context
    assert origin is not None
    for span in (first, second):
        assert span.context is not None and span.context.trace_id == origin.trace_id
        assert span.parent is not None and span.parent.span_id == origin.span_id
    assert first.attributes["pubsubpy.outcome"] == "retried"  # type: ignore[index]
    assert first.attributes["error.type"] == "RuntimeError"  # type: ignore[index]
    assert first.status.status_code is StatusCode.ERROR
    assert [e.name for e in first.events] == ["exception"]
    assert first.events[0].attributes["exception.message"] == "payment service down"  # type: ignore[index]
    assert second.attributes["pubsubpy.attempt"] == 2  # type: ignore[index]
    assert second.attributes["pubsubpy.outcome"] == "handled"  # type: ignore[index]
    assert "error.type" not in (second.attributes or {})

    [rejected] = [s for s in billing.spans("process") if s.attributes["pubsubpy.handler"].endswith("refuse")]  # type: ignore[index,union-attr]
    assert rejected.attributes["pubsubpy.outcome"] == "dead_lettered"  # type: ignore[index]
    assert rejected.attributes["pubsubpy.reason"] == "rejected"  # type: ignore[index]
    assert rejected.attributes["error.type"] == "Reject"  # type: ignore[index]
    updated = publish["Booking.updated"].context
    assert rejected.parent is not None and updated is not None and rejected.parent.span_id == updated.span_id


def test_a_batch_has_a_create_span_per_message_linked_from_one_publish_span(
        two_services: tuple[Service, Service]) -> None:
    shop, billing = two_services
    handled: list[str] = []

    @billing.app.subscribe("Booking.*")
    def on_any(event: BookingCreated | BookingUpdated, info: MessageInfo) -> None:
        handled.append(info.message_id or "")

    billing.app.declare()
    ids = shop.app.publish_many([(BOOKING, "created", {"id": 3, "guest": "Lin"}),
                                 (BOOKING, "updated", {"id": 3, "status": "paid"})])
    _drain_until(billing, lambda: len(handled) == 2, "both handled")

    creates = {s.attributes["messaging.message.id"]: s for s in shop.spans("create")}  # type: ignore[index]
    assert set(creates) == set(ids)
    for span in creates.values():
        assert span.kind is SpanKind.PRODUCER
        assert span.attributes["messaging.operation.type"] == "create"  # type: ignore[index]
        assert span.attributes["messaging.operation.name"] == "create"  # type: ignore[index]
    [batch] = shop.spans("publish")
    exchange = shop.app.settings.model_exchange
    assert batch.name == f"publish {exchange}"
    assert batch.kind is SpanKind.CLIENT
    assert dict(batch.attributes or {}) == {
        "messaging.system": "rabbitmq", "messaging.operation.name": "publish", "messaging.operation.type": "send",
        "messaging.destination.name": exchange, "messaging.batch.message_count": 2}
    assert {link.context.span_id for link in batch.links} == \
        {s.context.span_id for s in creates.values() if s.context is not None}
    for process in billing.spans("process"):
        origin = creates[process.attributes["messaging.message.id"]].context  # type: ignore[index]
        assert origin is not None and process.parent is not None and process.parent.span_id == origin.span_id


def test_a_foreign_message_with_a_garbage_trace_context_is_dead_lettered_in_a_span_of_its_own(
        two_services: tuple[Service, Service], rabbit_url: str) -> None:
    _, billing = two_services

    @billing.app.subscribe("Booking.created")
    def on_created(event: BookingCreated) -> None: ...

    billing.app.declare()
    connection = pika.BlockingConnection(pika.URLParameters(rabbit_url))
    try:
        channel = connection.channel()
        for traceparent in (b"00-zzzz-not-a-context-01", "00-" + "0" * 32 + "-" + "0" * 16 + "-01", 12345):
            channel.basic_publish(billing.app.settings.model_exchange, RK, b'{"id": "not json',
                                  pika.BasicProperties(content_type="application/json", message_id="foreign",
                                                       headers={"traceparent": traceparent, "baggage": b"\xff\xfe"}))
    finally:
        connection.close()
    result = billing.app.drain(timeout=10)
    assert result.dead_lettered == 3 and result.reasons == {"decode_error": 3}

    spans = billing.spans("process")
    assert len(spans) == 3
    for span in spans:
        assert span.parent is None  # no valid context arrived: a root span, never an error
        assert span.kind is SpanKind.CONSUMER
        assert span.attributes["pubsubpy.outcome"] == "dead_lettered"  # type: ignore[index]
        assert span.attributes["pubsubpy.reason"] == "decode_error"  # type: ignore[index]
        assert span.attributes["error.type"] == "decode_error"  # type: ignore[index]
        assert span.status.status_code is StatusCode.ERROR


def test_a_traceparent_the_caller_set_is_kept_and_linked(two_services: tuple[Service, Service]) -> None:
    shop, billing = two_services
    seen: list[MessageInfo] = []

    @billing.app.subscribe("Booking.created")
    def on_created(event: BookingCreated, info: MessageInfo) -> None:
        seen.append(info)

    billing.app.declare()
    custom = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    shop.app.publish_model_event(BOOKING, "created", {"id": 5, "guest": "Kim"}, headers={"traceparent": custom})
    _drain_until(billing, lambda: seen, "the handler")
    assert seen[0].headers["traceparent"] == custom
    [publish] = shop.spans("publish")
    assert publish.kind is SpanKind.CLIENT
    assert [format(link.context.span_id, "016x") for link in publish.links] == ["b7ad6b7169203331"]
    [process] = billing.spans("process")
    assert process.parent is not None and format(process.parent.span_id, "016x") == "b7ad6b7169203331"
    assert process.context is not None and format(process.context.trace_id, "032x") == custom[3:35]
