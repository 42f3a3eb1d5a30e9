"""The typed peer, FastStream's RabbitBroker, doing the same publish and drain work (logging off)."""

from __future__ import annotations

import asyncio
import logging
import time

from bench.common import PAYLOAD, ROUTING_KEY, URL, Booking, fill, unique


async def _publish(count: int) -> float:
    from faststream.rabbit import ExchangeType, RabbitBroker, RabbitExchange

    exchange_name = unique("fsx")
    broker = RabbitBroker(URL, logger=None, log_level=logging.CRITICAL)
    exchange = RabbitExchange(exchange_name, type=ExchangeType.TOPIC, durable=True)
    await broker.connect()
    await broker.declare_exchange(exchange)
    started = time.perf_counter()
    for _ in range(count):
        await broker.publish(PAYLOAD, exchange=exchange, routing_key=ROUTING_KEY, persist=True)
    elapsed = time.perf_counter() - started
    await broker.stop()
    from bench.common import delete

    delete(exchanges=[exchange_name])
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

    started = time.perf_counter()
    await broker.start()
    await asyncio.wait_for(done.wait(), timeout=300)
    elapsed = time.perf_counter() - started
    await broker.stop()
    from bench.common import delete

    delete(queues=[queue_name])
    return count / elapsed


def publish_rate(count: int) -> float:
    return asyncio.run(_publish(count))


def drain_rate(count: int) -> float:
    return asyncio.run(_drain(count))
