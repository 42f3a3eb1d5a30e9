"""The typed peer, FastStream's RabbitBroker (logging off), doing the same broker work as pubsubpy.

Equal work, row by row (FastStream 0.7.8's source: ``faststream/rabbit/schemas/channel.py``,
``broker/broker.py``):

- publish: FastStream's channel has publisher confirms on by default (``Channel.publisher_confirms``),
  so each ``broker.publish`` waits for its confirm, as each ``publish_model_event`` does; ``persist=True``
  sends it persistent (delivery mode 2), as pubsubpy does. Both publish into a durable topic exchange
  with a durable queue bound (``Booking.*``), so the broker stores every message before confirming it;
  each run checks that its queue holds every message it sent, then empties it (untimed). Into an
  exchange with no queue bound the broker stores nothing, and FastStream measured 2.1-2.8x faster
  (issue 14). FastStream sends ``mandatory=True`` (its default), pubsubpy with
  ``on_unroutable="ignore"`` does not; a message a queue takes costs the broker the same either way.
- drain: both from a durable queue of persistent messages, the same 83-byte body, the same
  validation into ``Booking``, prefetch 1000 for FastStream; FastStream acks each message, pubsubpy
  acks in batches (each library's own way). FastStream's connection is opened before its clock starts
  (pubsubpy's drain reuses the connection its publishing opened).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from bench.broker_rows import stored
from bench.common import (
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

BINDING = "Booking.*"


async def _publish(count: int) -> float:
    from faststream.rabbit import ExchangeType, RabbitBroker, RabbitExchange

    exchange_name, queue = unique("fsx"), unique("fsq")
    connection, ch = channel()  # the durable queue the broker stores every message in, as pubsubpy's
    ch.exchange_declare(exchange_name, "topic", durable=True)
    ch.queue_declare(queue, durable=True)
    ch.queue_bind(queue, exchange_name, BINDING)
    connection.close()
    broker = RabbitBroker(URL, logger=None, log_level=logging.CRITICAL)
    exchange = RabbitExchange(exchange_name, type=ExchangeType.TOPIC, durable=True)
    try:
        await broker.connect()
        await broker.declare_exchange(exchange)
        started = time.perf_counter()
        for _ in range(count):
            await broker.publish(PAYLOAD, exchange=exchange, routing_key=ROUTING_KEY, persist=True)
        elapsed = time.perf_counter() - started
        await broker.stop()
        stored(queue, count)
    finally:
        delete([queue], [exchange_name])
    return count / elapsed


async def _drain(count: int) -> float:
    from faststream.rabbit import Channel, RabbitBroker, RabbitQueue

    queue_name = unique("fsq")
    fill(queue_name, count)
    done = asyncio.Event()
    seen = 0
    broker = RabbitBroker(URL, logger=None, log_level=logging.CRITICAL,
                          default_channel=Channel(prefetch_count=1000))

    @broker.subscriber(RabbitQueue(queue_name, durable=True))
    async def handler(event: Booking) -> None:
        nonlocal seen
        seen += 1
        if seen >= count:
            done.set()

    try:
        await broker.connect()
        started = time.perf_counter()
        await broker.start()
        await asyncio.wait_for(done.wait(), timeout=300)
        elapsed = time.perf_counter() - started
        await broker.stop()
    finally:
        delete(queues=[queue_name])
    return count / elapsed


def publish_rate(count: int) -> float:
    return asyncio.run(_publish(count))


def drain_rate(count: int) -> float:
    return asyncio.run(_drain(count))


def _noop(event: Booking) -> None:
    pass


def rows(single: int, drained: int, rounds: int) -> list[Row]:
    """publish (each confirmed), publish_many vs FastStream's publish loop, drain: pubsubpy vs FastStream.
    Raises ImportError, before any work, when FastStream is not installed."""
    import faststream.rabbit  # noqa: F401

    exchange, service = unique("x"), unique("svc")
    app = PubSub(URL, schemas=[Booking], model_exchange=exchange, service_name=service, on_unroutable="ignore",
                 telemetry=False)
    app.subscribe(BINDING)(_noop)
    app.declare()
    queue = f"{service}.events"

    def ours_publish(count: int, work: Callable[[], object]) -> float:
        measured = rate(count, work)
        stored(queue, count)
        purge(queue)  # the drain row's queue holds only what it fills
        return measured

    def ours_single() -> float:
        return ours_publish(single, lambda: [app.publish_model_event(MODEL, "updated", PAYLOAD)
                                             for _ in range(single)])

    def ours_many() -> float:
        return ours_publish(single * 5, lambda: app.publish_many([(MODEL, "updated", PAYLOAD)] * (single * 5)))

    def ours_drain() -> float:
        fill(queue, drained, exchange)
        return rate(drained, lambda: app.drain(timeout=300))

    equal = "both confirmed, persistent, into a bound durable queue"
    try:
        publish = alternate(Row("vs FastStream: publish, each confirmed", "msg/s", target=">= 2", note=equal),
                            rounds, ours_single, lambda: publish_rate(single))
        batch = alternate(Row("vs FastStream: publish_many vs its publish loop", "msg/s", target=">= 2",
                              note=equal), rounds, ours_many, lambda: publish_rate(single))
        drain = alternate(Row("vs FastStream: drain, typed handler", "msg/s", target=">= 5",
                              note="FastStream prefetch 1000"), rounds, ours_drain, lambda: drain_rate(drained))
    finally:
        delete_app(app)
    return [publish, batch, drain]
