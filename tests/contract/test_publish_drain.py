"""Publish, route, drain: the happy path and the delivery guarantees, on every backend."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from pubsubpy import ConfigurationError, MessageInfo, ModelEvent, PayloadValidationError, UnknownEventType
from tests.contract.conftest import Backend
from tests.contract.events import ALL, BOOKING, ROOM, BookingCreated, BookingUpdated, RoomCleaned


def test_typed_handler_receives_validated_instances_and_info(backend: Backend) -> None:
    app = backend.app(schemas=ALL)
    got: list[tuple[ModelEvent, MessageInfo]] = []

    @app.subscribe("Booking.*")
    def on_booking(event: BookingCreated | BookingUpdated, info: MessageInfo) -> None:
        got.append((event, info))

    app.declare()
    sent = app.publish_model_event(BOOKING, "created", {"id": 1, "guest": "Ada"})
    app.publish_model_event(BOOKING, "updated", BookingUpdated(id=1, status="paid"))
    app.publish_model_event(ROOM, "cleaned", {"number": 7})  # nobody here subscribes to Room.*
    result = app.drain(timeout=10)

    assert result.handled == 2 and result.dead_lettered == 0 and result.retried == 0
    assert [type(e) for e, _ in got] == [BookingCreated, BookingUpdated]
    event, info = got[0]
    assert event == BookingCreated(id=1, guest="Ada")
    assert info.message_id == sent
    assert info.routing_key == "Booking.created"
    assert info.attempt == 1 and info.redelivered is False
    assert info.event_type == f"{BOOKING}.created"
    assert info.headers["pubsubpy-schema-version"] == 1
    assert info.timestamp is not None


def test_each_service_gets_its_own_copy_and_workers_of_one_service_compete(backend: Backend) -> None:
    exchange = backend.names.exchange()  # type: ignore[attr-defined]
    billing_a = backend.app(schemas=ALL, model_exchange=exchange, service_name=backend.names.service("billing"))  # type: ignore[attr-defined]
    billing_b = backend.app(schemas=ALL, model_exchange=exchange, service_name=billing_a.settings.service_name)
    mail = backend.app(schemas=ALL, model_exchange=exchange, service_name=backend.names.service("mail"))  # type: ignore[attr-defined]
    seen: dict[str, list[int]] = {"billing": [], "mail": []}
    def recorder(key: str) -> Callable[[BookingCreated], None]:
        def handler(event: BookingCreated) -> None:
            seen[key].append(event.id)
        return handler

    for app, key in ((billing_a, "billing"), (billing_b, "billing"), (mail, "mail")):
        app.subscribe("Booking.created")(recorder(key))
        app.declare()

    billing_a.publish_many([(BOOKING, "created", {"id": i, "guest": "g"}) for i in range(20)])
    first = billing_a.drain(max_messages=7, timeout=10)
    second = billing_b.drain(timeout=10)
    mail.drain(timeout=10)

    assert first.handled == 7 and first.stopped_by == "max_messages"
    assert second.handled == 13
    assert sorted(seen["billing"]) == list(range(20)), "every message handled once across competing workers"
    assert sorted(seen["mail"]) == list(range(20))


def test_topology_declared_before_first_drain_keeps_earlier_events(backend: Backend) -> None:
    app = backend.app(schemas=ALL)

    @app.subscribe("Room.#")
    def on_room(event: RoomCleaned) -> None:
        got.append(event.number)

    got: list[int] = []
    app.declare()  # deploy time
    publisher = backend.app(schemas=ALL, model_exchange=app.settings.model_exchange, service_name="publisher-only")
    publisher.publish_model_event(ROOM, "cleaned", {"number": 3})
    assert app.drain(timeout=10).handled == 1
    assert got == [3]


def test_stale_bindings_are_removed_on_declare(backend: Backend) -> None:
    service = backend.names.service()  # type: ignore[attr-defined]
    exchange = backend.names.exchange()  # type: ignore[attr-defined]
    old = backend.app(schemas=ALL, model_exchange=exchange, service_name=service)

    @old.subscribe("Room.*")
    def on_room(event: RoomCleaned) -> None: ...

    @old.subscribe("Booking.*")
    def on_booking(event: BookingCreated | BookingUpdated) -> None: ...

    old.declare()
    new = backend.app(schemas=ALL, model_exchange=exchange, service_name=service)
    got: list[int] = []

    @new.subscribe("Booking.*")
    def on_booking_new(event: BookingCreated | BookingUpdated) -> None:
        got.append(event.id)

    new.declare()  # Room.* is no longer subscribed: its binding must go
    new.publish_model_event(ROOM, "cleaned", {"number": 1})
    new.publish_model_event(BOOKING, "created", {"id": 5, "guest": "x"})
    result = new.drain(timeout=10)
    assert result.handled == 1 and result.dead_lettered == 0, result
    assert got == [5]


def test_publishing_validates_before_sending(backend: Backend) -> None:
    app = backend.app(schemas=ALL)

    @app.subscribe("#")
    def anything(event: ModelEvent) -> None: ...

    app.declare()
    with pytest.raises(PayloadValidationError, match="id"):
        app.publish_model_event(BOOKING, "created", {"id": "not a number", "guest": "x"})
    with pytest.raises(PayloadValidationError, match="extra"):
        app.publish_model_event(BOOKING, "created", {"id": 1, "guest": "x", "typo": 1})
    with pytest.raises(UnknownEventType, match="Booking"):
        app.publish_model_event(BOOKING, "exploded", {"id": 1})
    with pytest.raises(PayloadValidationError):
        app.publish_model_event(BOOKING, "updated", BookingCreated(id=1, guest="wrong class"))
    result = app.drain(timeout=10)
    assert result.messages == 0, "nothing invalid may reach the broker"


def test_schema_less_events_need_require_schemas_false_and_a_dict_handler(backend: Backend) -> None:
    app = backend.app(schemas=[], require_schemas=False)
    got: list[dict[str, object]] = []

    @app.subscribe("Invoice.*")
    def on_invoice(event: dict[str, object]) -> None:
        got.append(event)

    app.declare()
    app.publish_model_event("billing.models.Invoice", "sent", {"number": "A-1", "total": 12.5})
    assert app.drain(timeout=10).handled == 1
    assert got == [{"number": "A-1", "total": 12.5}]


def test_annotation_that_cannot_accept_a_matching_schema_fails_at_drain(backend: Backend) -> None:
    app = backend.app(schemas=ALL)

    @app.subscribe("Booking.*")
    def only_created(event: BookingCreated) -> None: ...

    with pytest.raises(ConfigurationError) as excinfo:
        app.drain(timeout=5)
    assert "only_created" in str(excinfo.value) and "Booking.updated" in str(excinfo.value)


def test_drain_respects_max_messages_and_leaves_the_rest(backend: Backend) -> None:
    app = backend.app(schemas=ALL)
    got: list[int] = []

    @app.subscribe("Booking.created")
    def on_created(event: BookingCreated) -> None:
        got.append(event.id)

    app.declare()
    app.publish_many([(BOOKING, "created", {"id": i, "guest": "g"}) for i in range(50)])
    first = app.drain(max_messages=10, timeout=10)
    assert first.handled == 10 and first.stopped_by == "max_messages"
    rest = app.drain(timeout=10)
    assert rest.handled == 40 and rest.stopped_by == "empty"
    assert got == list(range(50)), "FIFO, nothing lost, nothing twice"


def test_an_empty_drain_returns_promptly(backend: Backend) -> None:
    app = backend.app(schemas=ALL)

    @app.subscribe("Booking.*")
    def on_booking(event: BookingCreated | BookingUpdated) -> None: ...

    result = app.drain(timeout=30)
    assert result.messages == 0 and result.stopped_by == "empty"
    assert result.seconds < 5, "an empty queue must end the drain, not the timeout"


def test_unacked_messages_come_back_in_order_when_a_consumer_goes_away(backend: Backend) -> None:
    app = backend.app(schemas=ALL)

    @app.subscribe("Booking.created")
    def on_created(event: BookingCreated) -> None: ...

    app.declare()
    ids = app.publish_many([(BOOKING, "created", {"id": i, "guest": "g"}) for i in range(5)])
    queue = f"{app.settings.service_name}.events"
    consumer = app.transport.consume(queue, 10)
    first = [consumer.next(5) for _ in range(3)]
    assert [d.properties.message_id for d in first if d] == ids[:3]
    assert first[0] is not None
    consumer.ack(first[0].tag)
    consumer.close()  # the worker died holding unacked messages (two taken, two more in its prefetch window)

    again = app.transport.consume(queue, 10)
    seen = []
    while (delivery := again.next(5)) is not None:
        seen.append((delivery.properties.message_id, delivery.redelivered))
        again.ack(delivery.tag)
    again.close()
    assert seen == [(ids[1], True), (ids[2], True), (ids[3], True), (ids[4], True)]


def test_a_limited_drain_takes_no_more_than_it_handles(backend: Backend) -> None:
    app = backend.app(schemas=ALL)
    flags: list[bool] = []

    @app.subscribe("Booking.created")
    def on_created(event: BookingCreated, info: MessageInfo) -> None:
        flags.append(info.redelivered)

    app.declare()
    app.publish_many([(BOOKING, "created", {"id": i, "guest": "g"}) for i in range(20)])
    assert app.drain(max_messages=5, timeout=10).handled == 5
    assert app.drain(timeout=10).handled == 15
    assert flags == [False] * 20, "nothing was pushed to the limited drain beyond its limit and requeued"
