"""Schema versions on every backend: the newest is sent unless asked, upcasters carry old payloads up to
what a handler wants, a newer version is read with the newest one registered, and what cannot be read
is dead-lettered with the versions named."""

from __future__ import annotations

import pytest

import pubsubpy
from pubsubpy import ConfigurationError, MessageInfo, ModelEvent, UnknownEventType
from pubsubpy.testing import memory_pubsub
from tests.contract.conftest import Backend

INVOICE = "billing.models.Invoice"


class IssuedV1(ModelEvent, model=INVOICE, event="issued", register=False):
    id: int
    amount: int  # whole euros


class IssuedV2(ModelEvent, model=INVOICE, event="issued", version=2, register=False):
    id: int
    amount_cents: int
    currency: str = "EUR"


class IssuedV3(ModelEvent, model=INVOICE, event="issued", version=3, register=False):
    id: int
    amount_cents: int
    currency: str
    note: str = ""


@pubsubpy.upcaster(IssuedV1, IssuedV2)
def cents(old: IssuedV1) -> IssuedV2:
    return IssuedV2(id=old.id, amount_cents=old.amount * 100)


def _pair(backend: Backend, producer_schemas: list[type[ModelEvent]], consumer_schemas: list[type[ModelEvent]],
          label: str = "svc", **options: object) -> tuple[pubsubpy.PubSub, pubsubpy.PubSub]:
    """A producer and a consumer service on an exchange of their own."""
    exchange, service = backend.names.exchange(label), backend.names.service(label)  # type: ignore[attr-defined]
    producer = backend.app(schemas=producer_schemas, model_exchange=exchange,
                           service_name=backend.names.service("producer"))  # type: ignore[attr-defined]
    consumer = backend.app(schemas=consumer_schemas, model_exchange=exchange, service_name=service, **options)
    return producer, consumer


def test_a_v1_producer_and_a_v2_consumer_the_handler_gets_the_upcast_model(backend: Backend) -> None:
    producer, consumer = _pair(backend, [IssuedV1], [IssuedV1, IssuedV2])
    got: list[tuple[IssuedV2, int]] = []

    @consumer.subscribe("Invoice.issued")
    def on_issued(event: IssuedV2, info: MessageInfo) -> None:
        got.append((event, info.schema_version))

    consumer.declare()
    producer.publish_model_event(INVOICE, "issued", {"id": 1, "amount": 12})
    result = consumer.drain(timeout=10)
    assert result.handled == 1, result
    assert got == [(IssuedV2(id=1, amount_cents=1200, currency="EUR"), 1)]


def test_a_v2_producer_and_a_v1_consumer_reads_it_as_v1(backend: Backend) -> None:
    producer, consumer = _pair(backend, [IssuedV1, IssuedV2], [IssuedV1])
    got: list[tuple[IssuedV1, int]] = []

    @consumer.subscribe("Invoice.issued")
    def on_issued(event: IssuedV1, info: MessageInfo) -> None:
        got.append((event, info.schema_version))

    consumer.declare()
    # v2 kept the v1 field here (what `full` compatibility requires of a new version)
    producer.publish_model_event(INVOICE, "issued", IssuedV2(id=2, amount_cents=500))
    producer.publish_model_event(INVOICE, "issued", {"id": 3, "amount": 7}, version=1)
    result = consumer.drain(timeout=10)
    assert result.handled == 1 and result.reasons == {"validation_error": 1}, result
    assert got == [(IssuedV1(id=3, amount=7), 1)]
    letter = consumer.list_dead_letters(timeout=10)[0]
    assert "version 2 arrived, read as version 1" in (letter.error or "") and "amount" in (letter.error or "")


def test_the_newest_version_is_sent_unless_asked(backend: Backend) -> None:
    producer, consumer = _pair(backend, [IssuedV1, IssuedV2], [IssuedV1, IssuedV2])
    versions: list[int] = []

    @consumer.subscribe("Invoice.issued")
    def on_issued(event: IssuedV1 | IssuedV2, info: MessageInfo) -> None:
        versions.append(info.schema_version)
        assert isinstance(event, IssuedV2 if info.schema_version == 2 else IssuedV1)

    consumer.declare()
    producer.publish_model_event(INVOICE, "issued", {"id": 1, "amount_cents": 1})
    producer.publish_model_event(INVOICE, "issued", {"id": 2, "amount": 1}, version=1)
    producer.publish_model_event(INVOICE, "issued", IssuedV1(id=3, amount=1))  # an instance names its version
    with pytest.raises(UnknownEventType, match="version 7 is not registered"):
        producer.publish_model_event(INVOICE, "issued", {"id": 4}, version=7)
    assert consumer.drain(timeout=10).handled == 3
    assert versions == [2, 1, 1]


def test_versions_no_upcaster_reaches_are_unknown_events_naming_the_versions(backend: Backend) -> None:
    producer, consumer = _pair(backend, [IssuedV1], [IssuedV2], unknown_key_window=0)

    @consumer.subscribe("Invoice.issued")
    def on_issued(event: IssuedV2) -> None: ...

    consumer.declare()
    producer.publish_model_event(INVOICE, "issued", {"id": 1, "amount": 1})  # v1: not registered by the consumer
    result = consumer.drain(timeout=10)
    assert result.reasons == {"unknown_event": 1}, result
    assert "version 1 of Invoice.issued is not registered here (registered: 2)" in (
        consumer.list_dead_letters(timeout=10)[0].error or "")

    producer3, consumer3 = _pair(backend, [IssuedV1], [IssuedV1, IssuedV2, IssuedV3], label="v3")

    @consumer3.subscribe("Invoice.issued")
    def wants_v3(event: IssuedV3) -> None: ...

    consumer3.declare()
    producer3.publish_model_event(INVOICE, "issued", {"id": 1, "amount": 1})
    result = consumer3.drain(timeout=10)
    assert result.reasons == {"unknown_event": 1}, result
    error = consumer3.list_dead_letters(timeout=10)[0].error or ""
    assert "wants billing.models.Invoice.issued v3; version 1 arrived" in error and "no upcaster" in error


class Broken1(ModelEvent, model="x.models.Thing", event="made", register=False):
    id: int


class Broken2(ModelEvent, model="x.models.Thing", event="made", version=2, register=False):
    id: int
    size: int


@pubsubpy.upcaster(Broken1, Broken2)
def boom(old: Broken1) -> Broken2:
    raise RuntimeError("cannot size it")


def test_an_upcaster_that_fails_is_the_handler_run_failing() -> None:
    app = memory_pubsub(schemas=[Broken1, Broken2], max_attempts=1)

    @app.subscribe("Thing.made")
    def on_thing(event: Broken2) -> None: ...

    app.publish_model_event("x.models.Thing", "made", {"id": 1}, version=1)
    result = app.drain(timeout=5)
    assert result.reasons == {"handler_error": 1}
    assert "cannot size it" in (app.list_dead_letters()[0].error or "")


def test_upcasters_go_one_version_up_within_one_event() -> None:
    with pytest.raises(ConfigurationError, match="N to N\\+1"):
        pubsubpy.upcaster(IssuedV1, IssuedV3)
    with pytest.raises(ConfigurationError, match="different events"):
        pubsubpy.upcaster(IssuedV1, type("Other", (ModelEvent,), {}, model="a.B", event="c", version=2,
                                         register=False))


def test_a_replay_carries_old_events_in_the_log_up_through_the_upcasters(backend: Backend) -> None:
    """Events published as v1 months ago and kept in the event log reach today's v2 handler upcast."""
    exchange = backend.names.exchange("log")  # type: ignore[attr-defined]
    producer = backend.app(schemas=[IssuedV1], model_exchange=exchange, service_name=None, event_log="7D")
    producer.publish_model_event(INVOICE, "issued", {"id": 1, "amount": 12})
    consumer = backend.app(schemas=[IssuedV1, IssuedV2], model_exchange=exchange)
    got: list[tuple[IssuedV2, int]] = []

    @consumer.subscribe("Invoice.issued")
    def on_issued(event: IssuedV2, info: MessageInfo) -> None:
        got.append((event, info.schema_version))

    assert consumer.replay(since="1h").handled == 1
    assert got == [(IssuedV2(id=1, amount_cents=1200, currency="EUR"), 1)]
