"""Deliveries read whole off the buffer (transports/rabbitmq/_deliveries.py) are the deliveries pika's
frame-by-frame path makes, and leave anything incomplete or unusual to it; on the real broker, a
mix of whole and split deliveries reaches the handler in queue order, acked once."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pika
import pika.frame
import pika.spec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pubsubpy import PubSub
from pubsubpy.transports.rabbitmq._deliveries import decode_delivery
from tests.conftest import Names
from tests.contract.events import ALL, BookingCreated
from tests.test_encoding import _fields, _short

CHANNEL = 1


def _wire(frame_max: int, consumer_tag: str, tag: int, redelivered: bool, exchange: str, routing_key: str,
          fields: dict[str, Any], body: bytes, channel: int = CHANNEL) -> bytes:
    """The frames RabbitMQ sends for one delivery, as pika marshals them (bodies split at ``frame_max``)."""
    method = pika.spec.Basic.Deliver(consumer_tag, tag, redelivered, exchange, routing_key)
    frames = [pika.frame.Method(channel, method).marshal(),
              pika.frame.Header(channel, len(body), pika.spec.BasicProperties(**fields)).marshal()]
    step = frame_max - 8
    frames += [pika.frame.Body(channel, body[i:i + step]).marshal() for i in range(0, len(body), step)]
    return b"".join(frames)


def _pika_decodes(data: bytes) -> tuple[int, tuple[Any, ...]]:
    """What pika's own path makes of ``data``: bytes used and the delivery's fields."""
    used, method = pika.frame.decode_frame(data)
    assert isinstance(method, pika.frame.Method)
    step, header = pika.frame.decode_frame(data[used:])
    used += step
    assert isinstance(header, pika.frame.Header)
    parts = []
    while sum(map(len, parts)) < header.body_size:
        step, body = pika.frame.decode_frame(data[used:])
        assert isinstance(body, pika.frame.Body)
        parts.append(body.fragment)
        used += step
    m = method.method
    return used, (m.delivery_tag, m.consumer_tag, m.exchange, m.routing_key, m.redelivered,
                  vars(header.properties), b"".join(parts))


_names = _short.filter(lambda s: len(s.encode()) <= 127)
_deliveries = st.tuples(
    st.sampled_from([4096, 131072]), _names, st.integers(1, 2**64 - 1), st.booleans(), _names, _names, _fields,
    st.one_of(st.binary(max_size=300), st.binary(min_size=4000, max_size=20000)),
)


@settings(max_examples=300, deadline=None)
@given(_deliveries, st.binary(max_size=30))
def test_a_whole_delivery_decodes_as_pika_decodes_it(delivery: tuple[Any, ...], after: bytes) -> None:
    data = _wire(*delivery) + after  # whatever follows is left in the buffer
    message = decode_delivery(data, CHANNEL)
    assert message is not None
    used, tag, consumer_tag, exchange, routing_key, redelivered, properties, body = message
    assert (used, (tag, consumer_tag, exchange, routing_key, redelivered, vars(properties), body)) == \
        _pika_decodes(data)


@settings(max_examples=100, deadline=None)
@given(_deliveries, st.data())
def test_a_delivery_still_arriving_is_left_to_pika(delivery: tuple[Any, ...], data: st.DataObject) -> None:
    wire = _wire(*delivery)
    cut = data.draw(st.integers(0, len(wire) - 1))
    assert decode_delivery(wire[:cut], CHANNEL) is None


@pytest.mark.parametrize("case", ["other channel", "not a deliver", "bad frame end", "non-utf8 exchange",
                                  "body frame of another channel", "undecodable properties"])
def test_anything_unusual_is_left_to_pika(case: str) -> None:
    body = b"x" * 5000
    fields: dict[str, Any] = {"content_type": "application/json", "headers": {"a": 1}}
    wire = bytearray(_wire(4096, "ctag", 7, False, "ex", "Booking.created", fields, body))
    if case == "other channel":
        wire = bytearray(_wire(4096, "ctag", 7, False, "ex", "Booking.created", fields, body, channel=2))
    elif case == "not a deliver":
        wire = bytearray(pika.frame.Method(CHANNEL, pika.spec.Basic.CancelOk("ctag")).marshal())
    elif case == "bad frame end":
        wire[wire.index(b"\xce")] = 0
    elif case == "non-utf8 exchange":
        wire = bytearray(_wire(4096, "ctag", 7, False, "ex", "Booking.created", fields, body)
                         .replace(b"\x02ex", b"\x02\xff\xfe", 1))
    elif case == "body frame of another channel":
        last_body = wire.rindex(b"\x03\x00\x01")
        wire[last_body + 2] = 2
    elif case == "undecodable properties":
        wire = bytearray(_wire(4096, "ctag", 7, False, "ex", "Booking.created",
                               {"headers": {"a": 1}}, body).replace(b"\x01aI", b"\x01a\x00", 1))
    assert decode_delivery(bytes(wire), CHANNEL) is None


def test_split_and_whole_deliveries_reach_the_handler_in_queue_order(rabbit_url: str, names: Names) -> None:
    """Bodies of 200 KB cross many reads and are assembled by pika; the small ones between them are read
    whole. Their order in the queue is the order the handler sees, and each is acked once."""
    exchange, service = names.exchange(), names.service()
    app = PubSub(rabbit_url, schemas=ALL, service_name=service, model_exchange=exchange, prefetch=50)
    seen: list[int] = []

    @app.subscribe("Booking.created")
    def on_created(event: BookingCreated) -> None:
        seen.append(event.id)

    app.declare()
    connection = pika.BlockingConnection(pika.URLParameters(rabbit_url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for n in range(300):
            guest = "g" * (200_000 if n % 7 == 0 else 10)
            channel.basic_publish(exchange, "Booking.created", json.dumps({"id": n, "guest": guest}).encode(),
                                  pika.BasicProperties(content_type="application/json", delivery_mode=2,
                                                       message_id=uuid.uuid4().hex))
        result = app.drain(timeout=60)
        assert result.handled == 300, result
        assert result.redelivered == 0 and result.duplicates == 0
        assert seen == list(range(300))
        assert channel.queue_declare(f"{service}.events", passive=True).method.message_count == 0
    finally:
        connection.close()
        app.close()
