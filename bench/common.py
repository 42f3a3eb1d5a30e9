"""Shared pieces of the benchmarks: the payload, timing, alternating rounds, broker helpers."""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import pika

from pubsubpy import ModelEvent, PubSub
from pubsubpy.messages import DrainResult

URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
MODEL = "shop.models.Booking"


class Booking(ModelEvent, model=MODEL, event="updated", register=False):
    """Five fields, about 90 bytes of JSON: the payload every row uses."""

    id: int
    guest: str
    room: str
    nights: int
    status: str


PAYLOAD = {"id": 123456, "guest": "Ada Lovelace", "room": "A-101", "nights": 3, "status": "confirmed"}
BODY = Booking(**PAYLOAD).model_dump_json().encode()  # type: ignore[arg-type]
ROUTING_KEY = "Booking.updated"


@dataclass
class Row:
    name: str
    unit: str
    ours: list[float] = field(default_factory=list)
    baseline: list[float] = field(default_factory=list)
    target: str = ""
    note: str = ""

    @property
    def ours_median(self) -> float:
        return statistics.median(self.ours) if self.ours else float("nan")

    @property
    def baseline_median(self) -> float:
        return statistics.median(self.baseline) if self.baseline else float("nan")

    @property
    def ratio(self) -> float:
        if not self.baseline:
            return float("nan")
        return self.ours_median / self.baseline_median


def rate(count: int, work: Callable[[], object]) -> float:
    """Messages (or operations) per second for one call of ``work`` doing ``count`` of them."""
    started = time.perf_counter()
    work()
    return count / (time.perf_counter() - started)


def alternate(row: Row, rounds: int, ours: Callable[[], float], baseline: Callable[[], float] | None) -> Row:
    """Run ours and the baseline alternately, ``rounds`` times each; medians go in the row."""
    for _ in range(rounds):
        row.ours.append(ours())
        if baseline is not None:
            row.baseline.append(baseline())
    return row


def unique(label: str) -> str:
    return f"bench-{label}-{uuid.uuid4().hex[:8]}"


def channel() -> tuple[pika.BlockingConnection, pika.adapters.blocking_connection.BlockingChannel]:
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    return connection, connection.channel()


def fill(queue: str, count: int, exchange: str = "", body: bytes = BODY, headers: dict[str, object] | None = None,
         ) -> None:
    """Put ``count`` copies of ``body`` (the payload) in ``queue``, directly or through ``exchange`` (already
    bound); ``headers``, when given, on every copy."""
    connection, ch = channel()
    routing_key = queue
    if exchange:
        routing_key = ROUTING_KEY
    else:
        ch.queue_declare(queue, durable=True)
    props = pika.BasicProperties(content_type="application/json", delivery_mode=2, message_id="m",
                                 type=f"{MODEL}.updated", headers=headers)
    for _ in range(count - 1):
        ch.basic_publish(exchange, routing_key, body, props)
    ch.confirm_delivery()
    ch.basic_publish(exchange, routing_key, body, props)
    connection.close()


def purge(*queues: str) -> None:
    connection, ch = channel()
    for queue in queues:
        ch.queue_purge(queue)
    connection.close()


def delete(queues: list[str] = (), exchanges: list[str] = ()) -> None:  # type: ignore[assignment]
    connection, ch = channel()
    for queue in queues:
        ch.queue_delete(queue)
    for exchange in exchanges:
        ch.exchange_delete(exchange)
    connection.close()


def delete_app(app: PubSub) -> None:
    """Remove everything ``app.declare()`` created."""
    from pubsubpy.testing import delete_topology

    delete_topology(app)


def run_worker_until(app: PubSub, done: threading.Event, concurrency: int, timeout: float,
                     name: str) -> tuple[bool, DrainResult | None, float]:
    """Run ``app``'s worker on a thread until ``done`` is set (the handler sets it, or the worker's failure
    does), at most ``timeout`` seconds; stop it and wait for it. Whether ``done`` was set, the worker's
    result, and when it started (``perf_counter``). Raises when the worker failed or does not stop."""
    stop = threading.Event()
    outcome: list[DrainResult | BaseException] = []

    def work() -> None:
        try:
            outcome.append(app.run(concurrency=concurrency, stop=stop))
        except BaseException as exc:  # reported below, on the bench's thread
            outcome.append(exc)
            done.set()

    started = time.perf_counter()
    thread = threading.Thread(target=work, name=f"bench-{name}", daemon=True)
    thread.start()
    finished = done.wait(timeout)
    stop.set()
    thread.join(timeout=60)
    if thread.is_alive():
        raise RuntimeError(f"the {name} worker did not stop within 60s of stop.set()")
    result = outcome[0] if outcome else None
    if isinstance(result, BaseException):
        raise RuntimeError(f"the {name} worker failed") from result
    return finished, result, started


KeyedRows = Callable[[int, int, int, Callable[[str], None]], list[Row]]
"""(events, keys, rounds, report) -> rows: the ordering benchmarks' shape."""


def keyed_rows_main(description: str, rows: KeyedRows, argv: list[str] | None) -> int:
    """The command line of an ordering benchmark: ``--events``, ``--keys``, ``--rounds``; progress on stderr,
    each row on stdout."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--keys", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=1, help="alternating pairs of runs (default 1)")
    args = parser.parse_args(argv)
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    started = time.perf_counter()

    def report(line: str) -> None:
        print(f"  ... {line} ({time.perf_counter() - started:.0f}s)", file=sys.stderr, flush=True)

    for row in rows(args.events, args.keys, args.rounds, report):
        measured = f"{row.ours_median:,.0f} vs {row.baseline_median:,.0f} (x{row.ratio:.2f})" if row.baseline \
            else f"{row.ours_median:,.0f}"
        print(f"{row.name}: {measured} {row.unit}; target {row.target}\n  {row.note}")
    print(f"wall time {time.perf_counter() - started:.0f}s")
    return 0
