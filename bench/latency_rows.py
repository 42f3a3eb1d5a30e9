"""End-to-end latency at a fixed rate: pubsubpy (publisher and worker) against raw pika doing the same.

Each side, each round: a publisher in a process of its own sends ``rate`` messages a second for
``seconds`` on a fixed schedule (message ``i`` is due at ``t0 + i / rate``), every message persistent
and confirmed, into a durable queue bound to a topic exchange; the consumer runs in this process and
notes the clock as its handler starts. Latency is handler start minus the message's *due* time,
carried in a header of the bench's own, ``bench-due-us`` (epoch microseconds): a publisher that falls
behind its schedule adds its lag to every message it delays, as a caller waiting on it would see (no
coordinated omission). ``pubsubpy-published-at`` says when a message was actually published, in whole
milliseconds, so it would hide both that lag and anything under a millisecond.

- pubsubpy: ``AsyncPubSub.publish_model_event`` from one asyncio loop (a task per due message, each
  awaiting its own confirm; concurrent ones go out as one confirmed batch, where a one-thread sync
  loop waits a round trip per message: see the single publish row), consumed by ``PubSub.run()``
  (concurrency 1, its default prefetch) on a thread of this process, stopped by its event; a typed
  handler (``Booking``, with ``MessageInfo`` for the headers). Telemetry off, as in the other rows.
- raw pika: a ``SelectConnection`` publisher in confirm mode (the schedule on its I/O loop, confirms
  counted as they come), consumed by ``basic_consume`` on a ``BlockingConnection`` with the worker's
  prefetch and the worker rows' baseline ack policy (a multiple ack every ``min(prefetch // 2, 500)``
  messages); its handler starts once ``Booking.model_validate_json`` has validated the body.

Both queues are declared alike (durable, the service queue's arguments, bound with the same pattern
to a durable topic exchange of their own); the messages carry the same body and the same
properties and headers (pubsubpy's envelope). Before the schedule starts, each publisher has
connected and had one warm-up message confirmed, and the consumer has handled it. Every wait is
bounded: a publisher that dies or stalls fails the row, it does not hang the bench.

Each row is the median over rounds of one percentile; the note gives the percentiles of all the
rounds' messages pooled, and how far behind schedule the publishers got.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import math
import queue as queue_module
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import pika
import pika.channel
import pika.frame
import pika.spec

from bench.common import BODY, MODEL, PAYLOAD, ROUTING_KEY, URL, Booking, Row, channel, delete, delete_app, unique
from bench.worker_rows import ack_batch
from pubsubpy import MessageInfo, PubSub
from pubsubpy._worker import worker_prefetch
from pubsubpy.envelope import H_PUBLISHED_AT

DUE = "bench-due-us"  # when the message was due to be sent, epoch microseconds
SEQ = "bench-seq"  # its place in the schedule; -1 for the warm-up message
GRACE = 30.0  # seconds any step may overrun before the row fails
ROOT = Path(__file__).resolve().parent.parent


# -- the publisher process -------------------------------------------------------------------

def _due_us(t0: float, i: int, rate: float) -> int:
    return int((t0 + i / rate) * 1_000_000)


def _wait_for_go() -> bool:
    """Blocks until the bench says go (True) or closes our stdin (False: it is gone)."""
    print("ready", flush=True)
    return sys.stdin.readline().strip() == "go"


def _report(stats: dict[str, Any]) -> None:
    print(json.dumps(stats), flush=True)


async def _publish_pubsubpy(exchange: str, rate: float, count: int) -> dict[str, Any]:
    from pubsubpy.aio import AsyncPubSub

    app = AsyncPubSub(URL, schemas=[Booking], model_exchange=exchange, telemetry=False)
    loop = asyncio.get_running_loop()
    stats: dict[str, Any] = {"sent": 0, "confirmed": 0, "errors": 0, "behind_ms": 0.0, "first_error": None}
    try:
        await asyncio.wait_for(app.publish_model_event(MODEL, "updated", PAYLOAD, headers={SEQ: -1, DUE: 0}),
                               GRACE)
        if not await loop.run_in_executor(None, _wait_for_go):
            return stats
        tasks: list[asyncio.Task[str]] = []

        def settled(task: asyncio.Task[str]) -> None:
            if task.cancelled() or task.exception() is not None:
                stats["errors"] += 1
                stats["first_error"] = stats["first_error"] or repr(task.exception())
            else:
                stats["confirmed"] += 1

        t0 = time.time() + 0.05
        for i in range(count):
            due = _due_us(t0, i, rate)
            delay = due / 1_000_000 - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            stats["behind_ms"] = max(stats["behind_ms"], (time.time() * 1_000_000 - due) / 1000)
            task = asyncio.ensure_future(app.publish_model_event(MODEL, "updated", PAYLOAD,
                                                                 headers={SEQ: i, DUE: due}))
            task.add_done_callback(settled)
            tasks.append(task)
            stats["sent"] += 1
        await asyncio.wait(tasks, timeout=GRACE)
        return stats
    finally:
        await app.aclose()


def _publish_pika(exchange: str, rate: float, count: int) -> dict[str, Any]:
    stats: dict[str, Any] = {"sent": 0, "confirmed": 0, "errors": 0, "behind_ms": 0.0, "first_error": None}
    state = {"t0": 0.0, "next": 0}

    def properties(seq: int, due: int) -> pika.BasicProperties:
        now = time.time()
        return pika.BasicProperties(content_type="application/json", delivery_mode=2, message_id=uuid.uuid4().hex,
                                    timestamp=int(now), type=f"{MODEL}.updated",
                                    headers={SEQ: seq, DUE: due, H_PUBLISHED_AT: int(now * 1000)})

    def on_open(connection: pika.SelectConnection) -> None:
        connection.channel(on_open_callback=on_channel)

    def on_channel(ch: pika.channel.Channel) -> None:
        warm = {"done": False}

        def on_confirm(frame: pika.frame.Method[Any]) -> None:
            method = frame.method
            if not warm["done"]:  # the warm-up message: now wait for the bench, then keep the schedule
                warm["done"] = True
                if not _wait_for_go():
                    ch.connection.close()
                    return
                state["t0"] = time.time() + 0.05
                tick()
                return
            confirmed = method.delivery_tag - 1 - (stats["confirmed"] + stats["errors"]) if method.multiple else 1
            key = "confirmed" if isinstance(method, pika.spec.Basic.Ack) else "errors"
            stats[key] += confirmed
            if stats["confirmed"] + stats["errors"] >= count:
                ch.connection.close()

        def tick() -> None:
            now_us = time.time() * 1_000_000
            while state["next"] < count:
                due = _due_us(state["t0"], state["next"], rate)
                if due > now_us:
                    ch.connection.ioloop.call_later(max(0.0, due / 1_000_000 - time.time()), tick)
                    return
                stats["behind_ms"] = max(stats["behind_ms"], (now_us - due) / 1000)
                ch.basic_publish(exchange, ROUTING_KEY, BODY, properties(state["next"], due))
                state["next"] += 1
                stats["sent"] += 1

        def publish_warm_up(_frame: object) -> None:
            ch.basic_publish(exchange, ROUTING_KEY, BODY, properties(-1, 0))

        ch.confirm_delivery(on_confirm, callback=publish_warm_up)

    connection = pika.SelectConnection(pika.URLParameters(URL), on_open_callback=on_open,
                                       on_open_error_callback=lambda c, exc: c.ioloop.stop(),
                                       on_close_callback=lambda c, _reason: c.ioloop.stop())
    connection.ioloop.call_later(count / rate + 4 * GRACE, connection.close)  # a bound on the whole run
    connection.ioloop.start()
    return stats


def publisher_main(side: str, exchange: str, rate: float, seconds: float) -> int:
    """The publisher process: ``ready`` on stdout once connected (its warm-up message confirmed), waits
    for ``go`` on stdin, keeps the schedule, then prints its figures as one JSON line."""
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    count = round(rate * seconds)
    if side == "pubsubpy":
        stats = asyncio.run(_publish_pubsubpy(exchange, rate, count))
    else:
        stats = _publish_pika(exchange, rate, count)
    _report(stats)
    return 0


# -- the consumers, in this process -----------------------------------------------------------

class _Latencies:
    """Handler start minus due time (µs), by place in the schedule; thread-safe."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.us: list[int | None] = [None] * count
        self.seen = 0
        self.warm = threading.Event()
        self.done = threading.Event()
        self._lock = threading.Lock()

    def hit(self, headers: Mapping[str, Any], started_us: int) -> None:
        seq = headers.get(SEQ)
        if not isinstance(seq, int) or seq < 0:
            self.warm.set()
            return
        with self._lock:
            if self.us[seq] is None:  # a redelivered copy counts once, at its first start
                self.us[seq] = started_us - int(headers[DUE])
                self.seen += 1
                if self.seen == self.count:
                    self.done.set()


def _worker(app: PubSub, stop: threading.Event, failed: list[BaseException]) -> Callable[[], None]:
    def run() -> None:
        try:
            app.run(concurrency=1, stop=stop)
        except BaseException as exc:  # reported on the bench's thread
            failed.append(exc)

    return run


def _raw_consumer(queue: str, prefetch: int, latencies: list[_Latencies], stop: threading.Event,
                  failed: list[BaseException]) -> Callable[[], None]:
    def run() -> None:
        try:
            connection, ch = channel()
            ch.basic_qos(prefetch_count=prefetch)
            every = ack_batch(prefetch)
            state = {"seen": 0, "last": 0, "acked": 0}

            def on_booking(event: Booking, headers: Mapping[str, Any]) -> None:
                latencies[0].hit(headers, time.time_ns() // 1000)

            def on_message(_ch: object, method: pika.spec.Basic.Deliver, props: pika.BasicProperties,
                           body: bytes) -> None:
                on_booking(Booking.model_validate_json(body), props.headers or {})
                state["seen"] += 1
                state["last"] = method.delivery_tag
                if state["seen"] % every == 0:
                    ch.basic_ack(method.delivery_tag, multiple=True)
                    state["acked"] = method.delivery_tag

            ch.basic_consume(queue, on_message)
            while not stop.is_set():
                connection.process_data_events(time_limit=0.05)
            if state["last"] > state["acked"]:
                ch.basic_ack(state["last"], multiple=True)
            connection.close()
        except BaseException as exc:
            failed.append(exc)

    return run


# -- one round: a publisher process against a consumer thread ---------------------------------

class _Publisher:
    """The publisher process, its stdout read on a thread of its own (every read here is bounded)."""

    def __init__(self, side: str, exchange: str, rate: float, seconds: float) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.latency_rows", "publish", side, exchange, str(rate), str(seconds)],
            cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.lines: queue_module.Queue[str | None] = queue_module.Queue()
        threading.Thread(target=self._read, name="bench-latency-publisher-out", daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put(None)  # it closed its stdout: exited or died

    def expect(self, what: str, timeout: float) -> str:
        try:
            line = self.lines.get(timeout=timeout)
        except queue_module.Empty:
            raise RuntimeError(f"latency publisher: no {what} within {timeout:.0f}s") from None
        if line is None:
            raise RuntimeError(f"latency publisher exited ({self.proc.wait(5)}) before {what}")
        return line

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()  # a publisher still waiting for go leaves
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


def _round(side: str, publisher_side: str, exchange: str, rate: float, seconds: float,
           consumer: Callable[[_Latencies], None], stop_consumer: Callable[[], None],
           ) -> tuple[list[int], dict[str, Any]]:
    """One publisher run against a running consumer: the latencies (µs) and the publisher's figures."""
    count = round(rate * seconds)
    latencies = _Latencies(count)
    publisher = _Publisher(publisher_side, exchange, rate, seconds)
    try:
        if publisher.expect("ready", 60) != "ready":
            raise RuntimeError("latency publisher: unexpected output before ready")
        consumer(latencies)
        if not latencies.warm.wait(GRACE):
            raise RuntimeError(f"{side}: the consumer did not handle the warm-up message within {GRACE:.0f}s")
        publisher.go()
        deadline = time.monotonic() + seconds + GRACE
        while not latencies.done.wait(0.25):
            if time.monotonic() > deadline or not publisher.alive():
                break
        stats = json.loads(publisher.expect("its figures", GRACE))
        latencies.done.wait(5.0)  # the publisher saw its last confirm: the last deliveries are close behind
        if latencies.seen != count or stats["confirmed"] != count:
            raise RuntimeError(f"{side}: {latencies.seen} of {count} handled, publisher {stats}")
    finally:
        stop_consumer()
        publisher.close()
    return [us for us in latencies.us if us is not None], stats


def percentile(sorted_values: list[int], q: float) -> float:
    """Nearest rank."""
    return float(sorted_values[max(0, math.ceil(q * len(sorted_values)) - 1)])


def latency_rows(rate: float, seconds: float, rounds: int, split: bool = False) -> list[Row]:
    """``rounds`` alternating pairs (pubsubpy, then raw pika), each side's publisher running ``seconds``.
    ``split``: a third side in each round, raw pika's publisher into the worker, and a row for it (which
    part of the difference is the consumer's)."""
    exchange, service = unique("x"), unique("svc")
    holder: list[_Latencies] = []
    app = PubSub(URL, schemas=[Booking], model_exchange=exchange, service_name=service, telemetry=False)

    @app.subscribe("Booking.*")
    def on_booking(event: Booking, info: MessageInfo) -> None:
        holder[0].hit(info.headers, time.time_ns() // 1000)

    topology = app.declare()
    raw_exchange, raw_queue = unique("x-raw"), unique("raw")
    connection, ch = channel()
    ch.exchange_declare(raw_exchange, exchange_type="topic", durable=True)
    ch.queue_declare(raw_queue, durable=True, arguments=dict(topology.queue.arguments))
    for pattern in topology.bindings:
        ch.queue_bind(raw_queue, raw_exchange, pattern)
    connection.close()
    prefetch = worker_prefetch(None, 1)  # the worker's default at concurrency 1
    figures: dict[str, list[list[int]]] = {"pubsubpy": [], "pika": [], "split": []}
    behind: dict[str, float] = {"pubsubpy": 0.0, "pika": 0.0, "split": 0.0}

    def side(name: str, publisher: str, start: Callable[[threading.Event, list[BaseException]], Callable[[], None]],
             target: str) -> None:
        stop = threading.Event()
        failed: list[BaseException] = []
        thread = threading.Thread(target=start(stop, failed), name=f"bench-latency-{name}", daemon=True)

        def consumer(latencies: _Latencies) -> None:
            holder[:] = [latencies]
            thread.start()

        def stop_consumer() -> None:
            stop.set()
            if thread.ident is not None:  # started
                thread.join(60)
            if thread.is_alive():
                raise RuntimeError(f"{name}: the consumer did not stop within 60s")
            if failed:
                raise RuntimeError(f"{name}: the consumer failed") from failed[0]

        values, stats = _round(name, publisher, target, rate, seconds, consumer, stop_consumer)
        figures[name].append(sorted(values))
        behind[name] = max(behind[name], stats["behind_ms"])

    try:
        for _ in range(rounds):
            side("pubsubpy", "pubsubpy", lambda stop, failed: _worker(app, stop, failed), exchange)
            side("pika", "pika", lambda stop, failed: _raw_consumer(raw_queue, prefetch, holder, stop, failed),
                 raw_exchange)
            if split:
                side("split", "pika", lambda stop, failed: _worker(app, stop, failed), exchange)
    finally:
        delete_app(app)
        delete([raw_queue], [raw_exchange])

    def ms(values: list[int], q: float) -> float:
        return percentile(values, q) / 1000

    pooled = {name: sorted(v for run in runs for v in run) for name, runs in figures.items() if runs}
    how = (f"{rate:,.0f} msg/s, {rounds} x {seconds:g} s per side; publisher in its own process, confirms; "
           "scheduled send to handler start")
    rows = []
    for label, q in (("p50", 0.50), ("p99", 0.99)):
        rows.append(Row(
            f"latency {label}, {rate:,.0f} msg/s: worker vs raw pika (scheduled send to handler start)", "ms",
            ours=[ms(run, q) for run in figures["pubsubpy"]], baseline=[ms(run, q) for run in figures["pika"]],
            note=f"{how}; all {len(pooled['pubsubpy']):,} msgs pooled: {label} {ms(pooled['pubsubpy'], q):.2f} vs "
                 f"{ms(pooled['pika'], q):.2f} ms, max {ms(pooled['pubsubpy'], 1.0):.1f} vs "
                 f"{ms(pooled['pika'], 1.0):.1f} ms; publisher behind schedule at most "
                 f"{behind['pubsubpy']:.1f} vs {behind['pika']:.1f} ms; ratio > 1: pubsubpy slower; no aim set"))
        if split:
            rows.append(Row(
                f"latency {label}, {rate:,.0f} msg/s: raw pika publisher into the worker vs raw pika", "ms",
                ours=[ms(run, q) for run in figures["split"]], baseline=[ms(run, q) for run in figures["pika"]],
                note=f"all pooled: {label} {ms(pooled['split'], q):.2f} ms, max {ms(pooled['split'], 1.0):.1f} ms"))
    return rows


def all_rows(quick: bool, rounds: int, step: Callable[[str], None] = lambda _label: None,
             rate: float = 1000.0) -> list[Row]:
    """60 s per side at full length (5 s quick), in ``rounds`` alternating runs."""
    total = 5.0 if quick else 60.0
    step("end-to-end latency")
    return latency_rows(rate, total / rounds, rounds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command")
    publish = sub.add_parser("publish", help="(internal) the publisher process")
    publish.add_argument("side", choices=("pubsubpy", "pika"))
    publish.add_argument("exchange")
    publish.add_argument("rate", type=float)
    publish.add_argument("seconds", type=float)
    parser.add_argument("--rate", type=float, default=1000.0, help="messages a second (default 1000)")
    parser.add_argument("--seconds", type=float, default=20.0, help="each publisher run (default 20)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating pairs of runs (default 3)")
    parser.add_argument("--split", action="store_true",
                        help="also raw pika's publisher into the worker: which part is the consumer's")
    args = parser.parse_args(argv)
    if args.command == "publish":
        return publisher_main(args.side, args.exchange, args.rate, args.seconds)
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    for row in latency_rows(args.rate, args.seconds, args.rounds, args.split):
        print(f"{row.name}: {row.ours_median:.2f} vs {row.baseline_median:.2f} ms (x{row.ratio:.2f}); rounds "
              f"{[round(v, 2) for v in row.ours]} vs {[round(v, 2) for v in row.baseline]}\n  {row.note}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
