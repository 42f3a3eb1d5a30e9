"""time_limit= on memory://: an ordered key waits for its abandoned run; an async def handler is cancelled."""

from __future__ import annotations

import asyncio
import threading
import time

from pubsubpy import MessageInfo
from pubsubpy.aio import AsyncPubSub
from pubsubpy.testing import memory_pubsub
from pubsubpy.transports.memory import MemoryBroker, MemoryTransport
from tests.contract.events import ALL, BOOKING, BookingCreated
from tests.contract.test_ordering import ORDER, SCHEMAS, OrderUpdated


def test_an_ordered_key_stays_held_until_its_abandoned_run_returns() -> None:
    app = memory_pubsub(schemas=SCHEMAS, retry_delay=0.01, max_attempts=2)
    release = threading.Event()
    events: list[tuple[str, str, float]] = []

    @app.subscribe("Order.updated", ordered=True, time_limit=0.2)
    def on_order(event: OrderUpdated, info: MessageInfo) -> None:
        if event.status == "paid" and info.attempt == 1:
            release.wait(10)  # stuck past the limit; it ends later, on its abandoned thread
            events.append(("abandoned run returned", event.status, time.monotonic()))
            return
        events.append(("applied", event.status, time.monotonic()))

    app.declare()
    for version, status in enumerate(["paid", "cancelled"], start=1):
        app.publish_model_event(ORDER, "updated", {"id": 1, "status": status, "version": version})
    threading.Timer(1.0, release.set).start()  # the stuck run returns a second in
    started = time.monotonic()
    result = app.drain(timeout=20)
    assert result.handled == 2 and result.dead_lettered == 0, result
    assert [(what, status) for what, status, _ in events] == [
        ("abandoned run returned", "paid"), ("applied", "paid"), ("applied", "cancelled")], \
        "the retry of paid (and cancelled after it) waited for the abandoned run"
    assert events[1][2] - started >= 1.0


def test_an_async_handler_past_its_time_limit_is_cancelled_and_dead_lettered() -> None:
    cancelled = threading.Event()
    app = AsyncPubSub("memory://", transport=MemoryTransport(MemoryBroker()), schemas=ALL,  # type: ignore[arg-type]
                      service_name="t", max_attempts=1)

    @app.subscribe("Booking.created", time_limit=0.2)
    async def on_booking(event: BookingCreated) -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async def main() -> tuple[int, str]:
        await app.declare()
        await app.publish_model_event(BOOKING, "created", {"id": 1, "guest": "g"})
        result = await app.drain(timeout=10)
        letters = await app.list_dead_letters()
        return result.dead_lettered, letters[0].reason

    started = time.monotonic()
    assert asyncio.run(main()) == (1, "time_limit")
    assert cancelled.is_set() and time.monotonic() - started < 5
