"""Rows for ``@subscribe(..., ordered=True)``: what ordering costs a worker, and what it buys.

One worker (``run(concurrency=8)``, the default prefetch) drains a pre-filled queue of events of many
keys, published in random key order; each key's events carry an increasing ``seq``. The handler
sleeps 0-20 ms (a duration drawn up front per event) and a share of the events, drawn up front,
fails once (the first attempt raises), with ``retry_delay=0.1``. The same workload, the same queues
and the same handler run with the subscription ``ordered=True`` (a failed event is retried in its
key's lane, holding only that key) and with it unordered (a failed event goes through the retry
queue, back to the tail of the service queue), alternately.

- Throughput: events / (worker start, its connection included, to the last event's first success);
  the ordered run's over the unordered run's.
- Violations: successes of an event after a later event of its key had succeeded. Ordered must
  have none; the unordered count shows what the lanes prevent.
- Lost: events published but never handled successfully.

Publishing is not timed: the queue is declared and filled (``publish_many``) before the worker
starts. A run stops once every event has succeeded, within a bounded wait that fails the row.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bench.common import URL, Row, channel, delete_app, keyed_rows_main, run_worker_until, unique
from pubsubpy import ModelEvent, PubSub
from pubsubpy.topology import dead_letter_queue

ORDER = "bench.models.Order"
CONCURRENCY = 8
JITTER = 0.020        # the longest handler sleep, seconds
FAIL_SHARE = 0.05     # events whose first attempt raises
RETRY_DELAY = 0.1
PUBLISH_CHUNK = 5000  # events per publish_many


class OrderUpdated(ModelEvent, model=ORDER, event="updated", key="id", register=False):
    id: int
    seq: int
    status: str


@dataclass(frozen=True)
class Workload:
    """The events in publish order, as indexes ``key * per_key + seq``; each one's sleep; the ones that fail once."""

    keys: int
    per_key: int
    order: list[int]
    sleeps: list[float]
    failing: frozenset[int]

    @property
    def events(self) -> int:
        return self.keys * self.per_key


def workload(events: int, keys: int, seed: int = 27) -> Workload:
    per_key = events // keys
    rng = random.Random(seed)
    slots = [key for key in range(keys) for _ in range(per_key)]
    rng.shuffle(slots)
    next_seq = [0] * keys
    order = []
    for key in slots:  # a key's n-th slot in the shuffled order carries its seq n
        order.append(key * per_key + next_seq[key])
        next_seq[key] += 1
    total = keys * per_key
    return Workload(keys, per_key, order, [rng.uniform(0, JITTER) for _ in range(total)],
                    frozenset(rng.sample(range(total), round(total * FAIL_SHARE))))


@dataclass
class Tally:
    """What the handler did in one run (from any handler thread)."""

    work: Workload
    to_fail: set[int] = field(default_factory=set)
    succeeded: list[bool] = field(default_factory=list)
    newest: list[int] = field(default_factory=list)  # per key: the highest seq that succeeded, -1 for none
    first: int = 0          # events that have succeeded at least once
    repeats: int = 0        # successes of an event that had already succeeded
    violations: int = 0
    failures: int = 0
    last_at: float = 0.0    # perf_counter of the last event's first success
    done: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.to_fail = set(self.work.failing)
        self.succeeded = [False] * self.work.events
        self.newest = [-1] * self.work.keys

    def handle(self, key: int, seq: int) -> None:
        index = key * self.work.per_key + seq
        time.sleep(self.work.sleeps[index])
        with self.lock:
            if index in self.to_fail:
                self.to_fail.discard(index)
                self.failures += 1
                raise RuntimeError("bench: the first attempt fails")
            if seq < self.newest[key]:
                self.violations += 1
            self.newest[key] = max(self.newest[key], seq)
            if self.succeeded[index]:
                self.repeats += 1
                return
            self.succeeded[index] = True
            self.first += 1
            if self.first == self.work.events:
                self.last_at = time.perf_counter()
                self.done.set()


@dataclass
class Outcome:
    rate: float
    violations: int
    lost: int
    repeats: int
    seconds: float  # worker start to the last first success


class Bench:
    """Two apps on one service's queues: the subscription ordered, and the same one unordered."""

    def __init__(self) -> None:
        exchange, self.service = unique("x"), unique("svc")
        self.tally: Tally | None = None
        self.apps = {ordered: self._app(exchange, ordered) for ordered in (True, False)}
        for app in self.apps.values():
            app.declare()

    def _app(self, exchange: str, ordered: bool) -> PubSub:
        app = PubSub(URL, schemas=[OrderUpdated], model_exchange=exchange, service_name=self.service,
                     on_unroutable="ignore", telemetry=False, retry_delay=RETRY_DELAY)

        @app.subscribe("Order.updated", ordered=ordered)
        def on_order(event: OrderUpdated) -> None:
            assert self.tally is not None
            self.tally.handle(event.id, event.seq)

        return app

    def fill(self, work: Workload) -> None:
        publisher = self.apps[True]
        specs = [(ORDER, "updated", {"id": i // work.per_key, "seq": i % work.per_key, "status": "paid"})
                 for i in work.order]
        for start in range(0, len(specs), PUBLISH_CHUNK):
            publisher.publish_many(specs[start:start + PUBLISH_CHUNK])

    def run(self, work: Workload, ordered: bool, timeout: float) -> Outcome:
        self.fill(work)
        tally = self.tally = Tally(work)
        how = "ordered" if ordered else "unordered"
        finished, result, started = run_worker_until(self.apps[ordered], tally.done, CONCURRENCY, timeout, how)
        lost = work.events - tally.first
        if not finished or lost:
            raise RuntimeError(f"{how}: {tally.first:,} of {work.events:,} events succeeded within {timeout:.0f}s "
                               f"({lost:,} never did; {tally.failures:,} failed attempts; worker result: {result})")
        left = self.queued()
        if left:
            raise RuntimeError(f"{how}: every event succeeded but messages are left: {left}")
        seconds = tally.last_at - started
        return Outcome(work.events / seconds, tally.violations, lost, tally.repeats, seconds)

    def queued(self) -> dict[str, int]:
        """Messages still in the service queue or its dead-letter queue (none once a run is done)."""
        connection, ch = channel()
        try:
            counts = {queue: ch.queue_declare(queue, passive=True).method.message_count
                      for queue in (f"{self.service}.events", dead_letter_queue(self.service))}
        finally:
            connection.close()
        return {queue: count for queue, count in counts.items() if count}

    def close(self) -> None:
        self.apps[False].close()
        delete_app(self.apps[True])


def ordering_rows(events: int, keys: int, rounds: int,
                  report: Callable[[str], None] = lambda _line: None) -> list[Row]:
    work = workload(events, keys)
    timeout = 120 + 4 * work.events * JITTER / 2 * (1 + FAIL_SHARE) / CONCURRENCY
    runs: dict[bool, list[Outcome]] = {True: [], False: []}
    bench = Bench()
    try:
        for _ in range(rounds):
            for side in (True, False):
                run = bench.run(work, side, timeout)
                runs[side].append(run)
                report(f"{'ordered' if side else 'unordered'}: {run.rate:,.0f} events/s in {run.seconds:.1f}s, "
                       f"{run.violations:,} violations, {run.lost} lost, {run.repeats} repeats")
    finally:
        bench.close()
    ordered, unordered = runs[True], runs[False]
    what = (f"{work.events:,} events, {keys:,} keys, {CONCURRENCY} threads, 0-{JITTER * 1000:.0f} ms handler, "
            f"{FAIL_SHARE:.0%} fail once, retry_delay={RETRY_DELAY:g}")
    return [
        Row("worker, ordered=True vs unordered (0-20 ms handler, 5% fail once)", "msg/s",
            ours=[r.rate for r in ordered], baseline=[r.rate for r in unordered], target=">= 0.7", note=what),
        Row("worker, ordered=True: per-key sequence violations", "events",
            ours=[float(sum(r.violations for r in ordered))], target="<= 0",
            note=f"all rounds; unordered: {sum(r.violations for r in unordered):,}"),
        Row("worker, ordered=True and unordered: lost events", "events",
            ours=[float(sum(r.lost for r in ordered + unordered))], target="<= 0",
            note=f"all rounds, both sides; events handled twice: {sum(r.repeats for r in ordered + unordered)}"),
    ]


def all_rows(quick: bool, rounds: int, step: Callable[[str], None] = lambda _label: None) -> list[Row]:
    """Quick: 1,000 events over 50 keys, ``rounds`` pairs; else 100,000 over 5,000 keys, one pair
    (about two minutes a side)."""
    step("ordered vs unordered worker")
    return ordering_rows(1000, 50, rounds) if quick else ordering_rows(100_000, 5000, 1)


def main(argv: list[str] | None = None) -> int:
    return keyed_rows_main(__doc__.splitlines()[0], ordering_rows, argv)


if __name__ == "__main__":
    raise SystemExit(main())
