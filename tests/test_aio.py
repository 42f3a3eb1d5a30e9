"""``AsyncPubSub``: async handlers, coalesced confirmed publishing, stop and cancel, on memory:// and RabbitMQ."""

from __future__ import annotations

import asyncio
import contextvars
import functools
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import pubsubpy
from pubsubpy import (
    ConfigurationError,
    MessageInfo,
    PayloadValidationError,
    PublishError,
    PublishNacked,
    PubSub,
)
from pubsubpy.aio import AsyncPubSub
from pubsubpy.testing import delete_topology
from pubsubpy.transports.memory import MemoryBroker, MemoryTransport
from tests.conftest import RABBIT_URL, Names, connection_pids, refusing_queue, require_rabbit
from tests.contract.events import ALL, BOOKING, BookingCreated, BookingUpdated
from tests.contract.test_ordering import ORDER, SCHEMAS, OrderUpdated


@pytest.fixture(params=["memory", "rabbitmq"])
def make_app(request: pytest.FixtureRequest, names: Names) -> Iterator[Callable[..., AsyncPubSub]]:
    made: list[AsyncPubSub] = []

    def make(**options: object) -> AsyncPubSub:
        options.setdefault("model_exchange", names.exchange())
        options.setdefault("service_name", names.service())
        options.setdefault("telemetry", False)
        options.setdefault("schemas", ALL)
        if request.param == "memory":
            app = AsyncPubSub("memory://", transport=MemoryTransport(MemoryBroker()),
                              **options)  # type: ignore[arg-type]
        else:
            require_rabbit()
            app = AsyncPubSub(RABBIT_URL, **options)  # type: ignore[arg-type]
        made.append(app)
        return app

    yield make
    for app in made:
        if request.param == "rabbitmq":
            delete_topology(app.sync)
        app.sync.close()


def test_async_and_sync_handlers_both_run_without_blocking_the_loop(make_app: Callable[..., AsyncPubSub]) -> None:
    app = make_app()
    got: list[tuple[str, int]] = []
    loop_threads: set[int] = set()
    handler_threads: set[int] = set()

    @app.subscribe("Booking.created")
    async def on_created(event: BookingCreated, info: MessageInfo) -> None:
        loop_threads.add(threading.get_ident())
        await asyncio.sleep(0.01)
        got.append(("async", event.id))

    @app.subscribe("Booking.*")
    def also(event: BookingCreated | BookingUpdated) -> None:
        handler_threads.add(threading.get_ident())
        got.append(("sync", event.id))

    async def main() -> tuple[list[str], pubsubpy.DrainResult, int]:
        await app.declare()
        ids = list(await asyncio.gather(*(app.publish_model_event(BOOKING, "created", {"id": i, "guest": "g"})
                                          for i in range(20))))
        ticks = 0

        async def tick() -> None:  # the loop keeps running while the drain waits
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0.005)

        ticker = asyncio.create_task(tick())
        result = await app.drain(timeout=30, concurrency=4)
        ticker.cancel()
        return ids, result, ticks

    ids, result, ticks = asyncio.run(main())
    assert len(set(ids)) == 20 and all(len(i) == 32 for i in ids)
    assert result.handled == 20 and result.dead_lettered == 0
    assert sorted(got) == sorted([("async", i) for i in range(20)] + [("sync", i) for i in range(20)])
    assert len(loop_threads) == 1 and not loop_threads & handler_threads
    assert ticks > 3, "the event loop ran while the drain waited"


def test_a_sync_pubsub_refuses_async_handlers_when_it_starts_to_drain() -> None:
    app = PubSub("memory://", transport=MemoryTransport(MemoryBroker()), schemas=ALL, service_name="s")

    @app.subscribe("Booking.created")  # no longer refused here: subscriptions are shared with AsyncPubSub
    async def on_created(event: BookingCreated) -> None: ...

    with pytest.raises(ConfigurationError) as excinfo:
        app.drain(timeout=1)
    assert "on_created" in str(excinfo.value) and "AsyncPubSub" in str(excinfo.value)
    assert "pubsubpy worker" in str(excinfo.value)


def test_concurrent_publishes_each_get_their_own_outcome(make_app: Callable[..., AsyncPubSub], names: Names) -> None:
    """50 tasks at once; then a batch in which some messages are refused: only their tasks raise."""
    app = make_app()
    got: Counter[int] = Counter()

    @app.subscribe("Booking.created")
    async def on_created(event: BookingCreated) -> None:
        got[event.id] += 1

    async def main() -> pubsubpy.DrainResult:
        await app.declare()
        await asyncio.gather(*(app.publish_model_event(BOOKING, "created", {"id": i, "guest": "g"})
                               for i in range(50)))
        with pytest.raises(PayloadValidationError):  # raised at once, in the caller; nothing sent
            await app.publish_model_event(BOOKING, "created", {"id": "not a number", "guest": "g"})
        return await app.drain(timeout=30)

    result = asyncio.run(main())
    assert result.handled == 50 and got == Counter(range(50))


def test_a_refused_message_fails_only_its_own_task(rabbit_url: str, names: Names) -> None:
    app = AsyncPubSub(rabbit_url, schemas=ALL, model_exchange=names.exchange(),  # type: ignore[arg-type]
                      connect_timeout=1, confirm_timeout=1, telemetry=False)
    refusing_queue(rabbit_url, names, app.settings.model_exchange, 5)

    async def main() -> list[str | BaseException]:
        return await asyncio.gather(*(app.publish_model_event(BOOKING, "created", {"id": i, "guest": "g"})
                                      for i in range(10)), return_exceptions=True)

    outcomes = asyncio.run(asyncio.wait_for(main(), timeout=60))
    confirmed = [o for o in outcomes if isinstance(o, str)]
    refused = [o for o in outcomes if isinstance(o, PublishNacked)]
    assert (len(confirmed), len(refused)) == (5, 5), outcomes
    assert all(len(exc.message_ids) >= 1 for exc in refused)
    app.sync.close()


def test_an_async_handler_of_five_heartbeats_runs_once(rabbit_url: str, names: Names) -> None:
    app = AsyncPubSub(rabbit_url, schemas=ALL, model_exchange=names.exchange(),  # type: ignore[arg-type]
                      service_name=names.service(), heartbeat=1, telemetry=False)
    runs: list[int] = []

    @app.subscribe("Booking.created")
    async def slow(event: BookingCreated) -> None:
        runs.append(event.id)
        await asyncio.sleep(5.5)  # five heartbeat intervals and a half: the work itself, not a wait

    async def main() -> pubsubpy.DrainResult:
        await app.declare()
        await app.publish_model_event(BOOKING, "created", {"id": 1, "guest": "g"})
        return await app.drain(timeout=60)

    result = asyncio.run(main())
    assert runs == [1] and result.handled == 1 and result.redelivered == 0
    assert asyncio.run(app.drain(timeout=5)).messages == 0, "nothing came back"
    app.sync.close()


@pytest.mark.parametrize("how", ["event", "cancel"])
def test_run_stops_on_its_event_or_when_cancelled_and_finishes_the_running_handler(
        make_app: Callable[..., AsyncPubSub], how: str) -> None:
    app = make_app()
    started = asyncio.Event()
    finished: list[int] = []

    @app.subscribe("Booking.created")
    async def on_created(event: BookingCreated) -> None:
        started.set()
        await asyncio.sleep(0.3)
        finished.append(event.id)

    async def main() -> pubsubpy.DrainResult | None:
        await app.declare()
        await app.publish_model_event(BOOKING, "created", {"id": 7, "guest": "g"})
        stop = asyncio.Event()
        worker = asyncio.create_task(app.run(stop=stop))
        await asyncio.wait_for(started.wait(), timeout=30)
        if how == "event":
            stop.set()
            return await asyncio.wait_for(worker, timeout=30)
        worker.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(worker, timeout=30)
        return None

    result = asyncio.run(main())
    assert finished == [7], "the running handler finished"
    if result is not None:
        assert result.handled == 1 and result.stopped_by == "stopped"
    assert asyncio.run(app.drain(timeout=5)).messages == 0, "it was acked, not sent back"


def test_a_connection_closed_under_a_publish_confirms_or_raises(rabbit_url: str, names: Names) -> None:
    service = names.service()
    app = AsyncPubSub(rabbit_url, schemas=ALL, model_exchange=names.exchange(), service_name=service,  # type: ignore[arg-type]
                      telemetry=False, connect_timeout=5, confirm_timeout=10)
    handled: Counter[int] = Counter()

    @app.subscribe("Booking.created")
    def on_created(event: BookingCreated) -> None:
        handled[event.id] += 1

    def close_ours() -> int:
        pids = connection_pids(service)
        for pid in pids:
            subprocess.run(["rabbitmqctl", "close_connection", pid, "test: closed under a publish"],
                           capture_output=True, timeout=60)
        return len(pids)

    async def main() -> list[str | BaseException]:
        await app.declare()
        tasks = [asyncio.create_task(app.publish_model_event(BOOKING, "created", {"id": i, "guest": "g"}))
                 for i in range(300)]
        closed = await asyncio.to_thread(close_ours)
        assert closed >= 1
        tasks += [asyncio.create_task(app.publish_model_event(BOOKING, "created", {"id": i, "guest": "g"}))
                  for i in range(300, 400)]
        return await asyncio.wait_for(asyncio.gather(*tasks, return_exceptions=True), timeout=60)

    started = time.monotonic()
    outcomes = asyncio.run(main())
    assert time.monotonic() - started < 60, "never hangs"
    confirmed = {i for i, o in enumerate(outcomes) if isinstance(o, str)}
    raised = [o for o in outcomes if not isinstance(o, str)]
    assert all(isinstance(o, PublishError | pubsubpy.BrokerUnavailable) for o in raised), raised
    asyncio.run(app.drain(timeout=30))
    assert confirmed <= set(handled), "every confirmed message arrived"
    print(f"\nclosed under publish: confirmed={len(confirmed)} raised={len(raised)} "
          f"handled={len(handled)} duplicates={sum(handled.values()) - len(handled)}")
    app.sync.close()


def test_apublish_model_event_on_the_default_instance() -> None:
    from pubsubpy.testing import reset

    reset()
    pubsubpy.init("memory://", service_name="aio-facade", schemas=ALL, telemetry=False)
    got: list[int] = []

    @pubsubpy.subscribe("Booking.created")
    def on_created(event: BookingCreated) -> None:
        got.append(event.id)

    async def main() -> str:
        return await pubsubpy.apublish_model_event(BOOKING, "created", {"id": 3, "guest": "g"})

    try:
        message_id = asyncio.run(main())
        assert len(message_id) == 32
        assert pubsubpy.drain(timeout=5).handled == 1 and got == [3]
        with pytest.raises(PayloadValidationError):  # a bad payload raises in the caller
            asyncio.run(pubsubpy.apublish_model_event(BOOKING, "created", {"id": "x"}))
    finally:
        reset()


def test_concurrency_bounds_the_async_handlers_in_flight(make_app: Callable[..., AsyncPubSub]) -> None:
    app = make_app()
    running = 0
    most = 0

    @app.subscribe("Booking.created")
    async def on_created(event: BookingCreated) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.05)
        running -= 1

    async def main() -> pubsubpy.DrainResult:
        await app.declare()
        await app.publish_many([(BOOKING, "created", {"id": i, "guest": "g"}) for i in range(12)])
        return await app.drain(timeout=30, concurrency=3)

    result = asyncio.run(main())
    assert result.handled == 12
    assert most == 3, f"at most `concurrency` handlers at once, and that many when there is work: {most}"


def test_async_handlers_fail_retry_and_dead_letter_like_sync_ones(make_app: Callable[..., AsyncPubSub]) -> None:
    """Each handler's outcome is its own: a failing async run is retried alone, a Reject dead-letters naming
    only that handler, and a sync handler of the same messages runs once."""
    app = make_app(retry_delay=0.05, max_attempts=3)
    attempts: Counter[tuple[str, int]] = Counter()

    @app.subscribe("Booking.created")
    async def flaky(event: BookingCreated, info: MessageInfo) -> None:
        attempts["flaky", event.id] += 1
        if event.id % 2 == 0 and info.attempt == 1:
            raise RuntimeError("first attempt fails")

    @app.subscribe("Booking.created")
    async def picky(event: BookingCreated) -> None:
        attempts["picky", event.id] += 1
        if event.id == 3:
            raise pubsubpy.Reject("not this one")

    @app.subscribe("Booking.created")
    def plain(event: BookingCreated) -> None:
        attempts["plain", event.id] += 1

    async def main() -> tuple[pubsubpy.DrainResult, list[pubsubpy.DeadLetter]]:
        await app.declare()
        await app.publish_many([(BOOKING, "created", {"id": i, "guest": "g"}) for i in range(6)])
        result = pubsubpy.DrainResult()
        for _ in range(20):  # retries come back through the retry queue after 50 ms
            step = await app.drain(timeout=10)
            result.handled += step.handled
            result.dead_lettered += step.dead_lettered
            if result.handled + result.dead_lettered == 6:
                break
            await asyncio.sleep(0.05)
        return result, await app.list_dead_letters()

    result, letters = asyncio.run(main())
    assert (result.handled, result.dead_lettered) == (5, 1)
    assert [(letter.reason, letter.handler, letter.payload["id"]) for letter in letters] == [
        ("rejected", "tests.test_aio.test_async_handlers_fail_retry_and_dead_letter_like_sync_ones.<locals>.picky", 3)]
    for i in range(6):
        assert attempts["flaky", i] == (2 if i % 2 == 0 else 1), (i, attempts)
        assert attempts["picky", i] == 1 and attempts["plain", i] == 1, (i, attempts)


def test_a_cancelled_async_run_is_retried_and_the_drain_goes_on(make_app: Callable[..., AsyncPubSub]) -> None:
    app = make_app(retry_delay=0.05, max_attempts=3)
    runs: Counter[int] = Counter()

    @app.subscribe("Booking.created")
    async def sometimes_cancelled(event: BookingCreated, info: MessageInfo) -> None:
        runs[event.id] += 1
        if event.id == 1 and info.attempt == 1:
            raise asyncio.CancelledError  # e.g. it awaited a task someone else cancelled

    async def main() -> int:
        await app.declare()
        await app.publish_many([(BOOKING, "created", {"id": i, "guest": "g"}) for i in range(4)])
        handled = 0
        for _ in range(40):
            handled += (await app.drain(timeout=10)).handled
            if handled == 4:
                break
            await asyncio.sleep(0.05)  # the retry waits 50 ms in its queue
        return handled

    assert asyncio.run(main()) == 4
    assert runs[1] == 2, "the cancelled run was retried once"
    assert all(runs[i] == 1 for i in (0, 2, 3)), f"the others ran once each, none twice: {runs}"


def test_cancelling_a_drain_finishes_running_handlers_and_starts_no_more(
        make_app: Callable[..., AsyncPubSub]) -> None:
    app = make_app()
    runs: Counter[int] = Counter()

    @app.subscribe("Booking.created")
    async def slow(event: BookingCreated) -> None:
        runs[event.id] += 1
        await asyncio.sleep(0.1)  # the handler's own work

    async def main() -> None:
        await app.declare()
        await app.publish_many([(BOOKING, "created", {"id": i, "guest": "g"}) for i in range(30)])
        drain = asyncio.ensure_future(app.drain(timeout=30))
        for _ in range(500):  # up to 10 s for the first handler to start
            if runs or drain.done():
                break
            await asyncio.sleep(0.02)
        assert runs, "a handler started"
        drain.cancel()
        with pytest.raises(asyncio.CancelledError):
            await drain
        started = sum(runs.values())
        assert 0 < started < 30, "cancelled with handlers still to start (30 x 0.1 s at concurrency 1)"
        await asyncio.sleep(0.3)
        assert sum(runs.values()) == started, "a cancelled drain starts nothing more"
        rest = await app.drain(timeout=30)
        assert rest.handled == 30 - started, "the unstarted ones went back to the queue, the run ones were acked"

    asyncio.run(main())
    assert set(runs) == set(range(30)) and max(runs.values()) == 1


def test_context_variables_do_not_leak_between_messages_in_an_async_app(
        make_app: Callable[..., AsyncPubSub]) -> None:
    app = make_app()
    var: contextvars.ContextVar[int | None] = contextvars.ContextVar("var", default=None)
    seen: list[tuple[str, int, int | None]] = []

    @app.subscribe("Booking.created")
    def sync_side(event: BookingCreated) -> None:
        seen.append(("sync", event.id, var.get()))
        var.set(event.id)

    @app.subscribe("Booking.created")
    async def async_side(event: BookingCreated) -> None:
        seen.append(("async", event.id, var.get()))
        var.set(event.id)

    async def main() -> pubsubpy.DrainResult:
        await app.declare()
        await app.publish_many([(BOOKING, "created", {"id": i, "guest": "g"}) for i in range(6)])
        return await app.drain(timeout=30)

    assert asyncio.run(main()).handled == 6
    assert len(seen) == 12 and all(value is None for _, _, value in seen), seen


def test_a_decorated_async_handler_is_awaited_not_acked_unrun(make_app: Callable[..., AsyncPubSub]) -> None:
    app = make_app()
    ran: list[int] = []

    def logged(handler: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(handler)
        def wrapper(*args: Any) -> Any:  # a plain def returning the coroutine
            return handler(*args)

        return wrapper

    @app.subscribe("Booking.created")
    @logged
    async def on_created(event: BookingCreated) -> None:
        ran.append(event.id)

    async def main() -> pubsubpy.DrainResult:
        await app.declare()
        await app.publish_model_event(BOOKING, "created", {"id": 5, "guest": "g"})
        return await app.drain(timeout=30)

    assert asyncio.run(main()).handled == 1 and ran == [5]


def test_cancelling_run_leaves_the_callers_threading_event_alone(make_app: Callable[..., AsyncPubSub]) -> None:
    app = make_app()

    @app.subscribe("Booking.created")
    async def on_created(event: BookingCreated) -> None: ...

    shared = threading.Event()  # e.g. one stop for several workers

    async def main() -> pubsubpy.DrainResult:
        await app.declare()
        worker = asyncio.create_task(app.run(stop=shared))
        await asyncio.sleep(0.3)  # let it start consuming
        worker.cancel()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(worker, timeout=30)
        assert not shared.is_set(), "a cancel stops this worker only"
        second = asyncio.create_task(app.run(stop=shared))
        await asyncio.sleep(0.3)
        shared.set()  # the caller's event still stops a worker
        return await asyncio.wait_for(second, timeout=30)

    assert asyncio.run(main()).stopped_by == "stopped"


def test_an_async_ordered_handler_retries_in_its_lane(make_app: Callable[..., AsyncPubSub]) -> None:
    """An ``async def`` ordered handler: one failure on ``paid`` is retried in the lane (held, on no thread),
    so ``cancelled`` still comes last, and an async handler beside it runs once per message."""
    app = make_app(schemas=SCHEMAS, retry_delay=0.1)
    applied: list[tuple[int, str, int]] = []
    audited: list[str] = []

    @app.subscribe("Order.updated", ordered=True)
    async def on_order(event: OrderUpdated, info: MessageInfo) -> None:
        await asyncio.sleep(0)
        if event.status == "paid" and info.attempt == 1:
            raise TimeoutError("database timeout")
        applied.append((event.id, event.status, info.attempt))

    @app.subscribe("Order.updated")
    async def audit(event: OrderUpdated) -> None:
        audited.append(event.status)

    async def main() -> pubsubpy.DrainResult:
        await app.declare()
        await app.publish_many([(ORDER, "updated", {"id": 1, "status": s, "version": v})
                                for v, s in enumerate(["paid", "cancelled"], start=1)])
        return await app.drain(timeout=20, concurrency=4)

    result = asyncio.run(main())
    assert result.handled == 2 and result.retried == 0, result
    assert applied == [(1, "paid", 2), (1, "cancelled", 1)]
    assert sorted(audited) == ["cancelled", "paid"], "the plain async handler ran once per message"
