"""The event log (``event_log``) and ``replay()`` on every backend: the stream's own semantics, and a replay
of messages from foreign publishers, malformed ones included."""

from __future__ import annotations

import json
import time

import pytest

from pubsubpy import MessageInfo
from pubsubpy.envelope import H_PUBLISHED_AT, H_REPLAYED
from pubsubpy.errors import TransportError
from pubsubpy.topology import event_log_name
from tests.contract.conftest import Backend
from tests.contract.events import ALL, BookingCreated, BookingUpdated

GOOD = b'{"id": 1, "guest": "Ada"}'


def test_a_replay_runs_foreign_events_and_dead_letters_the_malformed_marked_as_replayed(backend: Backend) -> None:
    publisher = backend.app(schemas=ALL, event_log="7D", service_name=None)
    publisher.publish_model_event("shop.models.Booking", "created", {"id": 0, "guest": "Grace"})
    exchange = publisher.settings.model_exchange
    now_ms = int(time.time() * 1000)
    backend.foreign_publish(exchange, "Booking.created", GOOD, content_type="application/json", message_id="f-1",
                            headers={H_PUBLISHED_AT: now_ms})
    backend.foreign_publish(exchange, "Booking.created", b"{not json", content_type="application/json",
                            message_id="f-2", timestamp=int(time.time()))  # no published-at: its timestamp
    backend.foreign_publish(exchange, "Booking.updated", b'{"id": "x"}', content_type="application/json",
                            message_id="f-3")  # no time at all: inside every window
    backend.foreign_publish(exchange, "Booking.created", GOOD, content_type="application/json", message_id="f-1")
    app = backend.app(schemas=ALL, model_exchange=exchange, max_attempts=1)
    ran: list[tuple[int, str | None]] = []

    @app.subscribe("Booking.*")
    def on_booking(event: BookingCreated | BookingUpdated, info: MessageInfo) -> None:
        ran.append((event.id, info.message_id))

    result = app.replay(since="10m")
    assert ran[0][0] == 0 and ran[1] == (1, "f-1") and len(ran) == 2, ran
    assert (result.handled, result.repeated, result.reasons) == (2, 1, {"decode_error": 1, "validation_error": 1})
    letters = app.list_dead_letters()
    assert sorted(letter.message_id for letter in letters) == ["f-2", "f-3"]
    assert {letter.headers.get(H_REPLAYED) for letter in letters} == {result.replay_id}
    assert app.transport.queue_depth(app.topology().queue.name) == 0  # nothing entered the live queue


def test_the_stream_reads_from_an_offset_refuses_a_nack_and_drops_array_headers(backend: Backend) -> None:
    publisher = backend.app(schemas=ALL, event_log="7D", service_name=None)
    publisher.publish_model_event("shop.models.Booking", "created", {"id": 0, "guest": "Grace"})
    exchange = publisher.settings.model_exchange
    backend.foreign_publish(exchange, "Booking.created", GOOD, message_id="f-1",
                            headers={"kept": "yes", "listed": [1, 2], "nested": {"a": 1}})
    transport = publisher.transport
    stream = event_log_name(exchange)
    consumer = transport.consume(stream, 10, recover=False, offset="first")
    try:
        first = consumer.get(10)
        second = consumer.get(10)
        assert first is not None and second is not None
        offsets = [first.properties.headers["x-stream-offset"], second.properties.headers["x-stream-offset"]]
        assert offsets[1] > offsets[0] >= 0
        assert second.properties.headers.get("kept") in ("yes", b"yes")
        assert "listed" not in second.properties.headers and "nested" not in second.properties.headers
        consumer.ack(first.tag)
    finally:
        consumer.close()
    later = transport.consume(stream, 10, recover=False, offset=offsets[1])
    try:
        again = later.get(10)
        assert again is not None and again.properties.message_id == "f-1"
        with pytest.raises(TransportError, match="not supported by stream queues"):
            later.nack(again.tag, requeue=True)
        later.ack(again.tag)  # the consumer goes on
    finally:
        later.close()


def test_a_publish_declares_the_log_and_a_second_retention_is_kept_with_a_warning(
        backend: Backend, caplog: pytest.LogCaptureFixture) -> None:
    first = backend.app(schemas=ALL, event_log="7D", service_name=None)
    first.publish_model_event("shop.models.Booking", "created", {"id": 0, "guest": "Grace"})
    exchange = first.settings.model_exchange
    second = backend.app(schemas=ALL, event_log="1D", service_name=None, model_exchange=exchange)
    second.publish_model_event("shop.models.Booking", "created", {"id": 1, "guest": "Ada"})
    assert any("another retention" in record.getMessage() for record in caplog.records)
    info = first.transport.queue_info(event_log_name(exchange))
    assert info is not None
    app = backend.app(schemas=ALL, model_exchange=exchange)
    ids: list[int] = []

    @app.subscribe("Booking.created")
    def on_created(event: BookingCreated) -> None:
        ids.append(event.id)

    assert app.replay(since="10m").handled == 2 and ids == [0, 1]
    assert json.loads(GOOD)["id"] == 1
