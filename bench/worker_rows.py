"""Rows for the long-running worker (``PubSub.run``) and for the failure paths of a drain.

- Concurrency: a handler that sleeps (I/O-bound) at concurrency 1, 4 and 16; each
  level against concurrency 1 measured in the same rounds.
- No-op handler: the worker against a raw pika ``basic_consume`` with the same
  prefetch, the same validation and the same ack policy as the drain row's
  baseline (``multiple=True`` acks every ``min(prefetch // 2, 500)`` messages),
  at the worker's default prefetch and at 1000.
- Failure paths: a drain of N messages that fail (validation, handler raising on
  its last attempt, handler raising with attempts left) against a drain of N
  handled ones, on the same queues.

The worker clock runs from just before ``run()`` starts (its connection
included, as the raw consumer's is) to the return of the handler of the last
message; stopping the worker is not timed. Every run checks afterwards that the
worker acked them all.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable

import pika
import pika.channel
import pika.frame
import pika.spec

from bench.common import (
    BODY,
    PAYLOAD,
    URL,
    Booking,
    Row,
    alternate,
    channel,
    delete,
    delete_app,
    fill,
    purge,
    run_worker_until,
    unique,
)
from pubsubpy import PubSub
from pubsubpy._worker import worker_prefetch
from pubsubpy.messages import DrainResult
from pubsubpy.topology import dead_letter_exchange, dead_letter_queue, retry_delay_ms, retry_queue

LEVELS = (1, 4, 16)
SLEEP = 0.020  # the I/O-bound handler's wait
RETRY_DELAY = 300.0  # seconds: a retried copy stays in its TTL queue for the whole measurement
INVALID_BODY = json.dumps({**PAYLOAD, "nights": "three"}).encode()  # ``nights`` must be an int


class _Finish:
    """Counts handler returns from any thread; notes when the ``target``-th one returned."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.target = 0
        self.seen = 0
        self.at = 0.0
        self.done = threading.Event()

    def reset(self, target: int) -> None:
        self.target, self.seen, self.at = target, 0, 0.0
        self.done.clear()

    def hit(self) -> None:
        with self._lock:
            self.seen += 1
            if self.seen == self.target:
                self.at = time.perf_counter()
                self.done.set()


def _app(service: str, exchange: str, **options: object) -> PubSub:
    """The core (telemetry=False), as in the drain row."""
    return PubSub(URL, schemas=[Booking], model_exchange=exchange, service_name=service, on_unroutable="ignore",
                  telemetry=False, **options)


def _worker_rate(app: PubSub, finish: _Finish, count: int, concurrency: int, timeout: float) -> float:
    """Fill the service queue with ``count`` messages, run the worker until its handlers returned
    ``count`` times, stop it; messages per second."""
    service = app.settings.service_name
    fill(f"{service}.events", count, app.settings.model_exchange)
    finish.reset(count)
    finished, result, started = run_worker_until(app, finish.done, concurrency, timeout,
                                                 f"worker (concurrency {concurrency})")
    if not finished or result is None or result.handled != count:
        raise RuntimeError(f"worker at concurrency {concurrency}: {finish.seen} of {count} handled within "
                           f"{timeout}s (result: {result})")
    return count / (finish.at - started)


def concurrency(counts: dict[int, int], rounds: int) -> list[Row]:
    """``counts``: messages per run for each level (about the same seconds each)."""
    exchange, service = unique("x"), unique("svc")
    app = _app(service, exchange)
    finish = _Finish()

    @app.subscribe("Booking.*")
    def on_booking(event: Booking) -> None:
        time.sleep(SLEEP)
        finish.hit()

    app.declare()
    rates: dict[int, list[float]] = {level: [] for level in LEVELS}
    try:
        for _ in range(rounds):
            for level in LEVELS:
                budget = 30 + 3 * counts[level] * SLEEP / level
                rates[level].append(_worker_rate(app, finish, counts[level], level, budget))
    finally:
        delete_app(app)
    ms = f"{SLEEP * 1000:.0f} ms"

    def p(level: int) -> int:
        return worker_prefetch(None, level)

    return [
        Row(f"worker, {ms} handler: concurrency 16 vs 1", "msg/s", ours=rates[16], baseline=rates[1],
            target=">= 10", note=f"{counts[16]} vs {counts[1]} msgs; default prefetch {p(16)} vs {p(1)}; ideal 16"),
        Row(f"worker, {ms} handler: concurrency 4 vs 1", "msg/s", ours=rates[4], baseline=rates[1],
            note=f"{counts[4]} vs {counts[1]} msgs; default prefetch {p(4)} vs {p(1)}; ideal 4, no aim set"),
    ]


def ack_batch(prefetch: int) -> int:
    """The drain row baseline's policy (a multiple ack every 500 at prefetch 1000), scaled to the window."""
    return max(1, min(prefetch // 2, 500))


def raw_consume(queue: str, count: int, prefetch: int) -> float:
    """The baseline worker: basic_consume with ``prefetch``, model_validate_json, batched multiple acks.
    Messages per second from connecting to the last message validated (as the worker is timed)."""
    started = time.perf_counter()
    connection, ch = channel()
    ch.basic_qos(prefetch_count=prefetch)
    every = ack_batch(prefetch)
    seen = 0
    finished_at = 0.0

    def on_message(_channel: object, method: pika.spec.Basic.Deliver, _props: object, body: bytes) -> None:
        nonlocal seen, finished_at
        Booking.model_validate_json(body)
        seen += 1
        if seen == count:
            finished_at = time.perf_counter()
        if seen % every == 0 or seen == count:
            ch.basic_ack(method.delivery_tag, multiple=True)
        if seen == count:
            ch.stop_consuming()

    ch.basic_consume(queue, on_message)
    ch.start_consuming()
    connection.close()
    return count / (finished_at - started)


def noop_vs_raw(count: int, rounds: int, prefetch: int | None) -> Row:
    """The worker at concurrency 1 with a no-op handler, at its default prefetch (``None``) or an explicit one."""
    exchange, service = unique("x"), unique("svc")
    app = _app(service, exchange) if prefetch is None else _app(service, exchange, prefetch=prefetch)
    window = worker_prefetch(prefetch, 1)
    finish = _Finish()

    @app.subscribe("Booking.*")
    def on_booking(event: Booking) -> None:
        finish.hit()

    app.declare()
    raw_queue = unique("raw")

    def baseline() -> float:
        fill(raw_queue, count)
        return raw_consume(raw_queue, count, window)

    how = f"default prefetch {window}" if prefetch is None else f"prefetch={prefetch}"
    try:
        return alternate(Row(f"worker, no-op handler ({how}) vs raw pika", "msg/s", target=">= 0.8",
                             note=f"both prefetch {window}, multiple acks every {ack_batch(window)}"),
                         rounds, lambda: _worker_rate(app, finish, count, 1, 120), baseline)
    finally:
        delete_app(app)
        delete([raw_queue])


def raw_dead_letters(queue: str, count: int, prefetch: int, exchange: str, copy: pika.BasicProperties) -> float:
    """The peer of a drain of invalid messages: raw pika doing the same broker work, as fast as pika
    allows (``SelectConnection``: nothing waits but the broker). Per delivery: validate (it fails), publish
    a copy with ``copy``'s properties (a real dead letter's, so the same headers) and the same body to
    ``exchange`` (the dead-letter exchange), mandatory and persistent, under confirms; ack the original
    once its copy is confirmed. Messages per second from the first delivery to the last ack."""
    pending: dict[int, int] = {}  # copy's publish sequence number -> original's delivery tag
    state = {"published": 0, "acked": 0, "started": 0.0, "finished": 0.0}

    def on_open(connection: pika.SelectConnection) -> None:
        connection.channel(on_open_callback=on_channel)

    def on_channel(ch: pika.channel.Channel) -> None:
        def on_message(_ch: object, method: pika.spec.Basic.Deliver, _props: object, body: bytes) -> None:
            if not state["started"]:
                state["started"] = time.perf_counter()
            with contextlib.suppress(ValueError):
                Booking.model_validate_json(body)
            state["published"] += 1
            pending[int(state["published"])] = method.delivery_tag
            ch.basic_publish(exchange, method.routing_key, body, copy, mandatory=True)

        def on_confirm(frame: pika.frame.Method[pika.spec.Basic.Ack]) -> None:
            seq, multiple = frame.method.delivery_tag, frame.method.multiple
            done = [n for n in pending if n <= seq] if multiple else [seq]
            tags = [pending.pop(n) for n in done]
            if tags:  # copies are confirmed in order, and publish n copies delivery n: one multiple ack
                ch.basic_ack(max(tags), multiple=True)
            state["acked"] += len(tags)
            if state["acked"] >= count:
                state["finished"] = time.perf_counter()
                ch.connection.close()

        def consume(_frame: object) -> None:
            ch.basic_consume(queue, on_message)

        ch.basic_qos(prefetch_count=prefetch,
                     callback=lambda _frame: ch.confirm_delivery(on_confirm, callback=consume))

    connection = pika.SelectConnection(pika.URLParameters(URL), on_open_callback=on_open,
                                       on_close_callback=lambda c, _reason: c.ioloop.stop())
    connection.ioloop.call_later(300, connection.close)  # a bound: the check below says what went wrong
    connection.ioloop.start()
    if state["acked"] < count:
        raise RuntimeError(f"raw dead letters: {state['acked']} of {count} acked")
    return count / (state["finished"] - state["started"])


def failure_paths(count: int, rounds: int) -> list[Row]:
    """Drains of ``count`` failing messages against drains of ``count`` handled ones, all on one
    service's queues (the same topology: main queue, dead-letter exchange and queue, retry queue)."""
    exchange, service = unique("x"), unique("svc")
    options: dict[str, object] = {"max_attempts": 3, "retry_delay": RETRY_DELAY}
    failing = threading.Event()
    app = _app(service, exchange, **options)

    @app.subscribe("Booking.*")
    def on_booking(event: Booking) -> None:
        if failing.is_set():
            raise RuntimeError("bench: the handler failed")

    # The same service and settings (so the same topology: max_attempts=3 still declares the retry
    # queue), with a subscription allowed a single attempt: its failures are dead-lettered at once.
    last_try = _app(service, exchange, **options)

    @last_try.subscribe("Booking.*", max_attempts=1)
    def on_booking_once(event: Booking) -> None:
        raise RuntimeError("bench: the handler failed")

    app.declare()
    last_try.declare()
    queue = f"{service}.events"
    copies = [dead_letter_queue(service), retry_queue(service, retry_delay_ms(app.settings, 1))]

    def run(drainer: PubSub, body: bytes, fail: bool, expect: Callable[[DrainResult], bool]) -> float:
        fill(queue, count, exchange, body)
        if fail:
            failing.set()
        try:
            started = time.perf_counter()
            result = drainer.drain(timeout=600)
            elapsed = time.perf_counter() - started
        finally:
            failing.clear()
        if result.messages != count or not expect(result):
            raise RuntimeError(f"failure-path drain did not do what the row measures: {result}")
        purge(*copies)  # every measurement starts from the same empty queues
        return count / elapsed

    def handled() -> float:
        return run(app, BODY, False, lambda r: r.handled == count)

    def invalid() -> float:
        return run(app, INVALID_BODY, False, lambda r: r.reasons.get("validation_error") == count)

    def exhausted() -> float:
        return run(last_try, BODY, False, lambda r: r.reasons.get("handler_error") == count)

    def retried() -> float:
        return run(app, BODY, True, lambda r: r.retried == count)

    peer = Row("drain: validation_error dead letters vs raw pika making the same copies", "msg/s",
               note="raw: SelectConnection, a copy per delivery with a real dead letter's headers, each "
                    "original acked when its copy is confirmed; no log line")

    def raw() -> float:
        copy = _a_dead_letter(app, copies[0])
        fill(queue, count, exchange, INVALID_BODY)
        rate_ = raw_dead_letters(queue, count, app.settings.prefetch, dead_letter_exchange(service), copy)
        purge(*copies)
        return rate_

    ok: list[float] = []
    rows = [
        Row("drain: validation_error dead letters vs handled", "msg/s", baseline=ok, target=">= 0.3",
            note="bodies the schema rejects, sent with plain pika"),
        Row("drain: handler_error dead letters vs handled", "msg/s", baseline=ok, target=">= 0.3",
            note="handler raises, max_attempts=1"),
        Row("drain: handler raised, retried vs handled", "msg/s", baseline=ok, target=">= 0.3",
            note=f"attempts left; copies wait in a {RETRY_DELAY:.0f}s TTL retry queue"),
    ]
    try:
        for _ in range(rounds):
            ok.append(handled())
            for row, measure in zip(rows, (invalid, exhausted, retried), strict=True):
                row.ours.append(measure())
            peer.ours.append(invalid())
            peer.baseline.append(raw())
    finally:
        last_try.close()
        delete_app(app)
    return [*rows, peer]


def _a_dead_letter(app: PubSub, queue: str) -> pika.BasicProperties:
    """The properties of a real dead letter of ``app`` (one invalid message drained into ``queue``)."""
    fill(f"{app.settings.service_name}.events", 1, app.settings.model_exchange, INVALID_BODY)
    app.drain(timeout=60)
    connection, ch = channel()
    try:
        method, properties, _body = ch.basic_get(queue, auto_ack=True)
        if method is None:
            raise RuntimeError(f"no dead letter in {queue}")
        return properties
    finally:
        connection.close()


def all_rows(quick: bool, rounds: int, step: Callable[[str], None] = lambda _label: None) -> list[Row]:
    rows: list[Row] = []
    step("worker concurrency")
    seconds = 0.5 if quick else 1.5  # per run, whatever the level
    rows.extend(concurrency({level: int(seconds * level / SLEEP) for level in LEVELS}, rounds))
    step("worker no-op vs raw pika")
    rows.append(noop_vs_raw(2000 if quick else 20000, rounds, None))
    rows.append(noop_vs_raw(3000 if quick else 30000, rounds, 1000))
    step("failure paths")
    rows.extend(failure_paths(1000 if quick else 10000, rounds))
    return rows
