"""Rows measured on RabbitMQ: pubsubpy against raw pika doing the same work."""

from __future__ import annotations

import pika

from bench.common import (
    BODY,
    MODEL,
    PAYLOAD,
    ROUTING_KEY,
    URL,
    Booking,
    Row,
    alternate,
    channel,
    delete,
    delete_app,
    fill,
    rate,
    unique,
)
from pubsubpy import PubSub

PERSISTENT = pika.BasicProperties(content_type="application/json", delivery_mode=2)


def _app(service: str, exchange: str) -> PubSub:
    # telemetry=False: the core, as these rows measured it before middleware existed (telemetry_rows.py
    # measures what instrumentation adds)
    app = PubSub(URL, schemas=[Booking], model_exchange=exchange, service_name=service, on_unroutable="ignore",
                 telemetry=False)

    @app.subscribe("Booking.*")
    def on_booking(event: Booking) -> None:
        pass

    app.declare()
    return app


def single_publish(count: int, rounds: int) -> Row:
    exchange, service = unique("x"), unique("svc")
    app = _app(service, exchange)
    connection, ch = channel()
    ch.confirm_delivery()

    def ours() -> float:
        return rate(count, lambda: [app.publish_model_event(MODEL, "updated", PAYLOAD) for _ in range(count)])

    def baseline() -> float:
        return rate(count, lambda: [ch.basic_publish(exchange, ROUTING_KEY, BODY, PERSISTENT) for _ in range(count)])

    row = alternate(Row("single publish", "msg/s", target=">= 0.9"), rounds, ours, baseline)
    connection.close()
    delete_app(app)
    return row


def batch_publish(count: int, rounds: int) -> Row:
    exchange, service = unique("x"), unique("svc")
    app = _app(service, exchange)
    connection, ch = channel()
    events = [(MODEL, "updated", PAYLOAD)] * count

    def ours() -> float:
        return rate(count, lambda: app.publish_many(events))

    def baseline() -> float:
        def work() -> None:
            for _ in range(count):
                ch.basic_publish(exchange, ROUTING_KEY, BODY, PERSISTENT)
            connection.process_data_events(0)
        return rate(count, work)

    row = alternate(Row("batch publish (publish_many, all confirmed)", "msg/s", target=">= 0.5",
                        note="baseline: no confirms at all"), rounds, ours, baseline)
    connection.close()
    delete_app(app)
    return row


def raw_drain(queue: str, count: int) -> None:
    """The baseline consumer: basic_consume, prefetch 1000, model_validate_json, acks every 500."""
    connection, ch = channel()
    ch.basic_qos(prefetch_count=1000)
    seen = 0

    def on_message(channel_: object, method: pika.spec.Basic.Deliver, _props: object, body: bytes) -> None:
        nonlocal seen
        Booking.model_validate_json(body)
        seen += 1
        if seen % 500 == 0 or seen == count:
            ch.basic_ack(method.delivery_tag, multiple=True)
        if seen == count:
            ch.stop_consuming()

    ch.basic_consume(queue, on_message)
    ch.start_consuming()
    connection.close()


def drain(count: int, rounds: int) -> Row:
    exchange, service = unique("x"), unique("svc")
    app = _app(service, exchange)
    raw_queue = unique("raw")
    ours_queue = f"{service}.events"

    def ours() -> float:
        fill(ours_queue, count, exchange)
        return rate(count, lambda: app.drain(timeout=120))

    def baseline() -> float:
        fill(raw_queue, count)
        return rate(count, lambda: raw_drain(raw_queue, count))

    row = alternate(Row("drain (decode, validate, typed handler, ack)", "msg/s", target=">= 0.8"),
                    rounds, ours, baseline)
    delete_app(app)
    delete([raw_queue])
    return row
