"""asyncio rows: ``AsyncPubSub`` against FastStream, raw aio-pika and sync pubsubpy doing the same broker work.

Run alone: ``python -m bench.aio_rows [--quick] [--rounds N]`` (prints every round, medians and spread).

- publish: ``count`` messages from 50 concurrent tasks, each awaiting its publishes one after another:
  ``AsyncPubSub.publish_model_event`` (coalesced into confirmed batches by one publishing thread),
  FastStream's ``broker.publish`` (its channel confirms by default, ``persist=True``), raw aio-pika
  (``channel(publisher_confirms=True)``, ``exchange.publish`` of the prepared body, persistent); and sync
  ``PubSub.publish_model_event`` from 1 thread. Each into a durable topic exchange with a durable queue
  bound (``Booking.*``), ``mandatory`` on every side (pubsubpy's default ``on_unroutable="warn"``,
  FastStream's and aio-pika's default); after each run the queue must hold every message sent, then it
  is purged (untimed). Connections are open before the clock starts (pubsubpy: a warm-up publish).
- consume: ``count`` persistent messages filled into a durable queue (``fill``, untimed), consumed with a
  typed handler (the payload validated into ``Booking``): ``AsyncPubSub.drain`` with an ``async def``
  handler (default concurrency 1: awaited on the caller's loop), FastStream's subscriber with an
  ``async def`` handler, raw aio-pika (``Booking.model_validate_json`` then ``await message.ack()`` for
  each, or one ``multiple=True`` ack every 500: pubsubpy's own way), and sync ``PubSub.drain`` with a
  ``def`` handler. Prefetch 1000 everywhere (pubsubpy's default). pubsubpy's clock includes opening its
  consumer's connection (each drain opens one); the peers' connections are open before their clock
  starts, their consumer set-up is timed.

Each round runs every side once, in an order rotated round by round; the rows share pubsubpy's figures.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

from bench.common import (
    BODY,
    MODEL,
    PAYLOAD,
    ROUTING_KEY,
    URL,
    Booking,
    Row,
    channel,
    delete,
    delete_app,
    fill,
    purge,
    unique,
)
from pubsubpy import PubSub
from pubsubpy.aio import AsyncPubSub

TASKS = 50
PREFETCH = 1000  # pubsubpy's default prefetch (Settings.prefetch), for every consumer
ACK_EVERY = 500  # the batched-ack variant of the aio-pika consumer
BINDING = "Booking.*"
TIMEOUT = 300.0  # every wait bounded

SHORT = {  # chart labels (bench/run.py's short_label)
    "aio: publish from 50 tasks vs FastStream": "async publish, 50 tasks\nvs FastStream",
    "aio: publish from 50 tasks vs raw aio-pika": "async publish, 50 tasks\nvs raw aio-pika",
    "aio: publish from 50 tasks vs sync": "async publish, 50 tasks\nvs sync, 1 thread",
    "aio: drain, async typed handler vs FastStream": "async drain\nvs FastStream",
    "aio: drain, async typed handler vs raw aio-pika, ack each": "async drain\nvs aio-pika, ack each",
    "aio: drain, async typed handler vs aio-pika, batched": "async drain\nvs aio-pika, batched acks",
    "aio: drain, async typed handler vs sync": "async drain\nvs sync drain",
}


def _stored(queue: str, expected: int) -> None:
    """Raise unless ``queue`` holds ``expected`` messages: the publishes compared were all stored."""
    connection, ch = channel()
    try:
        held = ch.queue_declare(queue, passive=True).method.message_count
    finally:
        connection.close()
    if held != expected:
        raise RuntimeError(f"queue {queue!r} holds {held} messages, expected {expected}: the publish row would not "
                           "compare equal broker work")


def _emptied(queue: str, count: int, measured: float) -> float:
    _stored(queue, count)
    purge(queue)
    return measured


def _peer_topology() -> tuple[str, str]:
    """The peers' durable topic exchange and durable queue bound to it, as ``declare()`` makes pubsubpy's."""
    exchange, queue = unique("aiox"), unique("aioq")
    connection, ch = channel()
    ch.exchange_declare(exchange, "topic", durable=True)
    ch.queue_declare(queue, durable=True)
    ch.queue_bind(queue, exchange, BINDING)
    connection.close()
    return exchange, queue


async def _tasks(count: int, publish_one: Callable[[], Awaitable[object]]) -> float:
    """``count`` publishes from ``TASKS`` concurrent tasks, each awaiting its own in turn; seconds taken."""
    per_task, extra = divmod(count, TASKS)

    async def task(n: int) -> None:
        for _ in range(n):
            await publish_one()

    started = time.perf_counter()
    await asyncio.wait_for(asyncio.gather(*(task(per_task + (i < extra)) for i in range(TASKS))), TIMEOUT)
    return time.perf_counter() - started


# -- publish ----------------------------------------------------------------------------

async def _ours_publish(app: AsyncPubSub, count: int) -> float:
    return count / await _tasks(count, lambda: app.publish_model_event(MODEL, "updated", PAYLOAD))


async def _faststream_publish(exchange_name: str, count: int) -> float:
    from faststream.rabbit import ExchangeType, RabbitBroker, RabbitExchange

    broker = RabbitBroker(URL, logger=None, log_level=logging.CRITICAL)
    exchange = RabbitExchange(exchange_name, type=ExchangeType.TOPIC, durable=True)
    await broker.connect()
    try:
        await broker.declare_exchange(exchange)
        seconds = await _tasks(count, lambda: broker.publish(PAYLOAD, exchange=exchange, routing_key=ROUTING_KEY,
                                                             persist=True))
    finally:
        await broker.stop()
    return count / seconds


async def _aio_pika_publish(exchange_name: str, count: int) -> float:
    import aio_pika

    connection = await aio_pika.connect(URL, timeout=30)
    try:
        ch = await connection.channel(publisher_confirms=True)
        exchange = await ch.get_exchange(exchange_name)

        async def publish_one() -> None:
            message = aio_pika.Message(BODY, content_type="application/json",
                                       delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
            await exchange.publish(message, routing_key=ROUTING_KEY, timeout=30)

        seconds = await _tasks(count, publish_one)
    finally:
        await connection.close()
    return count / seconds


def _sync_publish(app: PubSub, count: int) -> float:
    started = time.perf_counter()
    for _ in range(count):
        app.publish_model_event(MODEL, "updated", PAYLOAD)
    return count / (time.perf_counter() - started)


def publish_rows(count: int, rounds: int) -> list[Row]:
    async_app, async_queue, _ = _async_app()
    async_app.subscribe(BINDING)(_noop)
    sync_app, sync_queue, _ = _sync_app()
    sync_app.subscribe(BINDING)(_noop)
    peer_exchange, peer_queue = _peer_topology()
    try:
        asyncio.run(async_app.declare())
        sync_app.declare()
        asyncio.run(async_app.publish_model_event(MODEL, "updated", PAYLOAD))  # the publishing thread connects
        _emptied(async_queue, 1, 0.0)
        sides: dict[str, Callable[[], float]] = {
            "ours": lambda: _emptied(async_queue, count, asyncio.run(_ours_publish(async_app, count))),
            "faststream": lambda: _emptied(peer_queue, count, asyncio.run(_faststream_publish(peer_exchange, count))),
            "aio-pika": lambda: _emptied(peer_queue, count, asyncio.run(_aio_pika_publish(peer_exchange, count))),
            "sync": lambda: _emptied(sync_queue, count, _sync_publish(sync_app, count)),
        }
        figures = _rounds(sides, rounds)
    finally:
        asyncio.run(async_app.aclose())
        delete_app(async_app.sync)
        delete_app(sync_app)
        delete([peer_queue], [peer_exchange])
    equal = "all confirmed, persistent, mandatory, into a bound durable queue"
    name = f"aio: publish from {TASKS} tasks vs"
    return [
        Row(f"{name} FastStream", "msg/s", list(figures["ours"]), figures["faststream"], target=">= 1",
            note=equal),
        Row(f"{name} raw aio-pika", "msg/s", list(figures["ours"]), figures["aio-pika"],
            note="publisher_confirms=True, prepared body (no validation)"),
        Row(f"{name} sync, 1 thread", "msg/s", list(figures["ours"]), figures["sync"]),
    ]


# -- consume ----------------------------------------------------------------------------

class _Count:
    """Counts handled messages on the loop; notes when the ``target``-th one was handled."""

    def __init__(self, target: int) -> None:
        self.target, self.seen = target, 0
        self.done = asyncio.Event()

    def hit(self) -> bool:
        self.seen += 1
        if self.seen >= self.target:
            self.done.set()
        return self.seen >= self.target


async def _ours_drain(app: AsyncPubSub, count: int) -> float:
    started = time.perf_counter()
    result = await app.drain(timeout=TIMEOUT)
    elapsed = time.perf_counter() - started
    if result.handled != count:
        raise RuntimeError(f"AsyncPubSub.drain handled {result.handled} of {count} messages: {result}")
    return count / elapsed


def _sync_drain(app: PubSub, count: int) -> float:
    started = time.perf_counter()
    result = app.drain(timeout=TIMEOUT)
    elapsed = time.perf_counter() - started
    if result.handled != count:
        raise RuntimeError(f"PubSub.drain handled {result.handled} of {count} messages: {result}")
    return count / elapsed


async def _faststream_drain(queue: str, count: int) -> float:
    from faststream.rabbit import Channel, RabbitBroker, RabbitQueue

    counter = _Count(count)
    broker = RabbitBroker(URL, logger=None, log_level=logging.CRITICAL,
                          default_channel=Channel(prefetch_count=PREFETCH))

    @broker.subscriber(RabbitQueue(queue, durable=True))
    async def handler(event: Booking) -> None:
        counter.hit()

    await broker.connect()
    try:
        started = time.perf_counter()
        await broker.start()
        await asyncio.wait_for(counter.done.wait(), TIMEOUT)
        elapsed = time.perf_counter() - started
    finally:
        await broker.stop()
    return count / elapsed


async def _aio_pika_drain(queue_name: str, count: int, ack_every: int) -> float:
    import aio_pika
    from aio_pika.abc import AbstractIncomingMessage

    counter = _Count(count)
    connection = await aio_pika.connect(URL, timeout=30)
    try:
        ch = await connection.channel()
        await ch.set_qos(prefetch_count=PREFETCH)
        queue = await ch.declare_queue(queue_name, durable=True, passive=True)

        async def on_message(message: AbstractIncomingMessage) -> None:
            Booking.model_validate_json(message.body)
            seen = counter.seen + 1
            if ack_every == 1:
                await message.ack()
            elif seen >= count or seen % ack_every == 0:
                await message.ack(multiple=True)
            counter.hit()  # after the ack is written: the connection closes once the last one is counted

        started = time.perf_counter()
        await queue.consume(on_message)
        await asyncio.wait_for(counter.done.wait(), TIMEOUT)
        elapsed = time.perf_counter() - started
    finally:
        await connection.close()
    return count / elapsed


def consume_rows(count: int, rounds: int) -> list[Row]:
    async_app, async_queue, async_exchange = _async_app()

    @async_app.subscribe(BINDING)
    async def on_booking(event: Booking) -> None:
        pass

    sync_app, sync_queue, sync_exchange = _sync_app()
    sync_app.subscribe(BINDING)(_noop)
    peer_queue = unique("aioq")

    def ours() -> float:
        fill(async_queue, count, async_exchange)
        return asyncio.run(_ours_drain(async_app, count))

    def peer(consume: Callable[[], Coroutine[Any, Any, float]]) -> float:
        fill(peer_queue, count)
        measured = asyncio.run(consume())
        _stored(peer_queue, 0)  # every message acked: the next run's queue holds only what it fills
        return measured

    def faststream() -> float:
        return peer(lambda: _faststream_drain(peer_queue, count))

    def aio_pika_each() -> float:
        return peer(lambda: _aio_pika_drain(peer_queue, count, 1))

    def aio_pika_batched() -> float:
        return peer(lambda: _aio_pika_drain(peer_queue, count, ACK_EVERY))

    def sync() -> float:
        fill(sync_queue, count, sync_exchange)
        return _sync_drain(sync_app, count)

    try:
        asyncio.run(async_app.declare())
        sync_app.declare()
        figures = _rounds({"ours": ours, "faststream": faststream, "aio-pika": aio_pika_each,
                           "aio-pika batched": aio_pika_batched, "sync": sync}, rounds)
    finally:
        asyncio.run(async_app.aclose())
        delete_app(async_app.sync)
        delete_app(sync_app)
        delete([peer_queue])
    name = "aio: drain, async typed handler vs"
    return [
        Row(f"{name} FastStream", "msg/s", list(figures["ours"]), figures["faststream"], target=">= 3",
            note=f"both prefetch {PREFETCH}; FastStream acks each"),
        Row(f"{name} raw aio-pika, ack each", "msg/s", list(figures["ours"]), figures["aio-pika"],
            note=f"prefetch {PREFETCH}, model_validate_json, await ack() each"),
        Row(f"{name} aio-pika, batched acks", "msg/s", list(figures["ours"]), figures["aio-pika batched"],
            note=f"prefetch {PREFETCH}, model_validate_json, ack(multiple=True) every {ACK_EVERY}"),
        Row(f"{name} sync drain, def handler", "msg/s", list(figures["ours"]), figures["sync"]),
    ]


# -- apps, rounds and the group -----------------------------------------------------------

def _names() -> tuple[str, str, str]:
    """A fresh service (its queue) and exchange: (service, queue, exchange)."""
    service = unique("svc")
    return service, f"{service}.events", unique("x")


def _async_app() -> tuple[AsyncPubSub, str, str]:
    """The core (telemetry=False), as in the other rows; (app, its queue, its exchange)."""
    service, queue, exchange = _names()
    return AsyncPubSub(URL, schemas=[Booking], model_exchange=exchange, service_name=service,
                       telemetry=False), queue, exchange


def _sync_app() -> tuple[PubSub, str, str]:
    service, queue, exchange = _names()
    app = PubSub(URL, schemas=[Booking], model_exchange=exchange, service_name=service, telemetry=False)
    return app, queue, exchange


def _noop(event: Booking) -> None:
    pass


def _rounds(sides: dict[str, Callable[[], float]], rounds: int) -> dict[str, list[float]]:
    """Every side once per round, the order rotated each round (no side always first or last)."""
    names = list(sides)
    figures: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            figures[name].append(sides[name]())
    return figures


def all_rows(quick: bool, rounds: int, step: Callable[[str], None] = lambda _label: None) -> list[Row]:
    """Raises ImportError, before any work, when FastStream (and so aio-pika) is not installed."""
    import aio_pika  # noqa: F401
    import faststream.rabbit  # noqa: F401

    step("asyncio: publish from 50 tasks")
    rows = publish_rows(500 if quick else 5000, rounds)
    step("asyncio: drain, async typed handler")
    rows.extend(consume_rows(1000 if quick else 10000, rounds))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    started = time.perf_counter()
    rows = all_rows(args.quick, args.rounds,
                    lambda label: print(f"  ... {label} ({time.perf_counter() - started:.0f}s)", file=sys.stderr,
                                        flush=True))
    for row in rows:
        spread = f"{min(row.ours):,.0f}-{max(row.ours):,.0f} / {min(row.baseline):,.0f}-{max(row.baseline):,.0f}"
        print(f"{row.name:<58} {row.ours_median:>9,.0f} {row.baseline_median:>9,.0f} x{row.ratio:5.2f}  "
              f"{row.target or '-':<6} (min-max {spread}; ratio per round "
              f"{', '.join(f'{o / b:.2f}' for o, b in zip(row.ours, row.baseline, strict=True))})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
