"""Rows measured on RabbitMQ: pubsubpy against raw pika doing the same work."""

from __future__ import annotations

import time

import pika
import pika.channel
import pika.frame
import pika.spec

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
    purge,
    rate,
    unique,
)
from pubsubpy import PubSub

PERSISTENT = pika.BasicProperties(content_type="application/json", delivery_mode=2)


def stored(queue: str, expected: int, url: str = URL) -> None:
    """Raise unless ``queue`` holds ``expected`` messages: the publishes being compared were all stored."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        held = connection.channel().queue_declare(queue, passive=True).method.message_count
    finally:
        connection.close()
    if held != expected:
        raise RuntimeError(f"queue {queue!r} holds {held} messages, expected {expected}: the publish row would "
                           "not compare equal broker work")


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


def raw_confirmed_batch(exchange: str, count: int) -> float:
    """The baseline batch: raw pika's asynchronous adapter (``SelectConnection``) in confirm mode sends
    ``count`` persistent messages, then waits for every confirm (``basic.ack``, single or multiple).
    Timed from the first publish to the last confirm, the channel already open (as ``publish_many``'s is)."""
    acked = bytearray(count + 1)  # by delivery tag (1..count): confirmed
    lowest = 1  # the lowest unconfirmed tag
    clock: dict[str, float] = {}
    failure: list[str] = []

    def on_open(connection: pika.SelectConnection) -> None:
        connection.channel(on_open_callback=on_channel)

    def on_channel(ch: pika.channel.Channel) -> None:
        ch.confirm_delivery(ack_nack_callback=on_confirm, callback=lambda _frame: send(ch))

    def send(ch: pika.channel.Channel) -> None:
        clock["start"] = time.perf_counter()
        for _ in range(count):
            ch.basic_publish(exchange, ROUTING_KEY, BODY, PERSISTENT)

    def on_confirm(frame: pika.frame.Method) -> None:  # type: ignore[type-arg]
        nonlocal lowest
        method = frame.method
        if isinstance(method, pika.spec.Basic.Nack):
            failure.append(f"the broker nacked message {method.delivery_tag}")
            connection.close()
            return
        if method.multiple:
            acked[lowest:method.delivery_tag + 1] = b"\x01" * (method.delivery_tag + 1 - lowest)
        else:
            acked[method.delivery_tag] = 1
        while lowest <= count and acked[lowest]:
            lowest += 1
        if lowest > count:
            clock["end"] = time.perf_counter()
            connection.close()

    def on_open_error(_connection: object, error: BaseException) -> None:
        failure.append(f"could not connect: {error}")
        connection.ioloop.stop()

    connection = pika.SelectConnection(pika.URLParameters(URL), on_open_callback=on_open,
                                       on_open_error_callback=on_open_error,
                                       on_close_callback=lambda _connection, _reason: connection.ioloop.stop())
    timeout = connection.ioloop.call_later(300, connection.close)  # every wait bounded
    connection.ioloop.start()
    connection.ioloop.remove_timeout(timeout)
    if failure or "end" not in clock:
        raise RuntimeError(f"raw confirmed batch: {failure or 'not every message was confirmed within 300s'}")
    return count / (clock["end"] - clock["start"])


def batch_publish(count: int, rounds: int) -> Row:
    """``publish_many`` against raw pika's pipelined confirmed publish: the same bound durable queue,
    persistent messages, every one confirmed; the queue is purged after every run (untimed)."""
    exchange, service = unique("x"), unique("svc")
    app = _app(service, exchange)
    queue = f"{service}.events"
    events = [(MODEL, "updated", PAYLOAD)] * count

    def emptied(measured: float) -> float:
        stored(queue, count)
        purge(queue)
        return measured

    def ours() -> float:
        return emptied(rate(count, lambda: app.publish_many(events)))

    def baseline() -> float:
        return emptied(raw_confirmed_batch(exchange, count))

    row = alternate(Row("batch publish (publish_many vs raw pika, all confirmed)", "msg/s", target=">= 0.5",
                        note="baseline: SelectConnection, publish all, then wait for every confirm"),
                    rounds, ours, baseline)
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
