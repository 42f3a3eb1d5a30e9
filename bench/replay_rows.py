"""Rows for the event log's replay (``app.replay``): its rate against raw pika reading the same stream, and
against a live drain of the same events, in the same run.

The events (the ``Booking`` payload, published as pubsubpy publishes them: fresh message id,
``pubsubpy-published-at``) go into the event log (``event_log="7D"``: the stream ``<exchange>.log`` bound
from the exchange with ``#``) once, untimed. Each round then runs, alternately:

- pubsubpy: ``app.replay(since)`` with a no-op typed handler: its end marker written, the gap check, every
  event through the live engine (decode, validation, handler) one at a time, each stream delivery acked,
  up to its end marker. Prefetch 1000 (the default), attached at ``since`` minus 60 s, as it does.
- raw pika: a ``BlockingConnection`` consumer of the same stream from the same ``x-stream-offset``,
  prefetch 1000, ``model_validate_json`` of each body and an ack (``multiple``) every 500, as the raw pika
  drain of ``broker_rows.py``; like the replay, it writes an end marker first and reads up to it.
- the live drain: ``app.drain()`` of as many events, published the same way just before (untimed) through the
  exchange into the service's bound durable queue, the log unbound meanwhile so it keeps what it had.

Rates are events over the wall time of one call (connection and setup included on every side); each row
reports medians over the rounds. The stream and the queues are deleted at the end.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
import time
import uuid
from collections.abc import Callable

import pika
import pika.spec

from bench.common import MODEL, PAYLOAD, ROUTING_KEY, URL, Booking, Row, channel, delete, delete_app, rate, unique
from pubsubpy import PubSub
from pubsubpy.envelope import H_LOG_MARKER
from pubsubpy.messages import DrainResult, ReplayResult

EVENTS = 1_000_000
QUICK_EVENTS = 20_000
FULL_ROUNDS = 3  # at full size a round reads 3,000,000 events and refills the queue: about 3.5 minutes
PREFETCH = 1000  # pubsubpy's default ``prefetch``, which the replay's stream consumer uses
ACK_EVERY = 500  # the raw consumers' multiple ack (broker_rows.raw_drain)
ATTACH_EARLY = dt.timedelta(seconds=60)  # the replay attaches at ``since`` minus this (pubsubpy/_replay/runner.py)
TIMEOUT = 600  # seconds: the longest one read or drain may take


class ReplayBench:
    """One exchange with its event log, and a service subscribed to ``Booking.*`` with a no-op typed handler."""

    def __init__(self) -> None:
        self.exchange, self.service = unique("x"), unique("svc")
        self.stream = f"{self.exchange}.log"
        self.queue = f"{self.service}.events"
        self.app = PubSub(URL, schemas=[Booking], model_exchange=self.exchange, service_name=self.service,
                          event_log="7D", on_unroutable="ignore", telemetry=False)

        @self.app.subscribe("Booking.*")
        def on_booking(event: Booking) -> None:
            pass

        self.since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=1)  # before every event

    def publish(self, exchange: str, routing_key: str, count: int) -> None:
        """``count`` events as pubsubpy encodes them (``publisher.encode``: fresh message id, published-at,
        schema version), each persistent, sent by raw pika; confirmed by the last one (as ``common.fill``)."""
        connection, ch = channel()
        try:
            for sent in range(1, count + 1):
                message = self.app.publisher.encode(MODEL, "updated", PAYLOAD)
                props = message.properties
                properties = pika.BasicProperties(
                    content_type=props.content_type, delivery_mode=2, message_id=props.message_id,
                    timestamp=props.timestamp, type=props.type, app_id=props.app_id, headers=props.headers)
                if sent == count:
                    ch.confirm_delivery()
                ch.basic_publish(exchange, routing_key, message.body, properties, mandatory=sent == count)
        finally:
            connection.close()

    def fill_log(self, count: int) -> None:
        """Through the exchange, before the service queue exists (it would hold a copy of each): the first event
        by a publishing app (``publish_model_event`` declares the exchange and the log), the rest by raw pika;
        then the service's topology."""
        publisher = PubSub(URL, schemas=[Booking], model_exchange=self.exchange, event_log="7D",
                           on_unroutable="ignore", telemetry=False)
        publisher.publish_model_event(MODEL, "updated", PAYLOAD)
        publisher.close()
        self.publish(self.exchange, ROUTING_KEY, count - 1)
        self.app.declare()  # the service queue bound with ``Booking.*`` (the log as it is)

    def fill_queue(self, count: int) -> None:
        """The service queue, through the exchange as live events come (the routing key is the event's), with the
        log unbound meanwhile, so it keeps exactly the events it had."""
        connection, ch = channel()
        try:
            ch.queue_unbind(self.stream, self.exchange, routing_key="#")
            try:
                self.publish(self.exchange, ROUTING_KEY, count)
            finally:
                ch.queue_bind(self.stream, self.exchange, routing_key="#")
            held = ch.queue_declare(self.queue, passive=True).method.message_count
        finally:
            connection.close()
        if held != count:
            raise RuntimeError(f"the queue {self.queue!r} holds {held:,} messages, expected {count:,}")

    def replay(self, count: int) -> float:
        result: list[ReplayResult] = []
        measured = rate(count, lambda: result.append(self.app.replay(since=self.since)))
        replayed = result[0]
        if replayed.handled != count or replayed.repeated or replayed.outside or replayed.unsubscribed:
            raise RuntimeError(f"the replay ran {replayed}, expected {count:,} events handled")
        return measured

    def raw(self, count: int) -> float:
        return rate(count, lambda: raw_read(self.stream, count, self.since - ATTACH_EARLY))

    def drain(self, count: int) -> float:
        self.fill_queue(count)
        result: list[DrainResult] = []
        measured = rate(count, lambda: result.append(self.app.drain(timeout=TIMEOUT)))
        if result[0].handled != count:
            raise RuntimeError(f"the drain ran {result[0]}, expected {count:,} events handled")
        return measured

    def close(self) -> None:
        delete([self.stream])
        delete_app(self.app)


def raw_read(stream: str, count: int, offset: dt.datetime) -> None:
    """The baseline reader, as the replay reads: an end marker written into the stream first (a confirmed
    publish, with the ``pubsubpy-log-marker`` header, which every replay skips), then basic_consume from
    ``offset`` (``x-stream-offset``), prefetch 1000, model_validate_json of each event, acks (``multiple``) every
    500 deliveries, up to that marker. (Stopping at a count instead would cancel with deliveries still
    arriving, and pika rejects those, which a stream refuses by closing the connection.)"""
    connection, ch = channel()
    end = uuid.uuid4().hex
    ch.confirm_delivery()
    ch.basic_publish("", stream, b"", pika.BasicProperties(headers={H_LOG_MARKER: end}), mandatory=True)
    ch.basic_qos(prefetch_count=PREFETCH)
    delivered = events = 0
    done: list[bool] = []  # the end marker was read
    stalled: list[bool] = []  # TIMEOUT passed first

    def on_message(_channel: object, method: pika.spec.Basic.Deliver, props: pika.spec.BasicProperties,
                   body: bytes) -> None:
        nonlocal delivered, events
        delivered += 1
        marker = props.headers.get(H_LOG_MARKER) if props.headers else None
        if marker is None:
            Booking.model_validate_json(body)
            events += 1
        last = marker is not None and (marker.decode() if isinstance(marker, bytes) else marker) == end
        if delivered % ACK_EVERY == 0 or last:
            ch.basic_ack(method.delivery_tag, multiple=True)
        if last:
            done.append(True)

    tag = ch.basic_consume(stream, on_message, arguments={"x-stream-offset": offset})
    timer = connection.call_later(TIMEOUT, lambda: stalled.append(True))
    while not done and not stalled:  # start_consuming's loop, bounded
        connection.process_data_events(time_limit=None)
    connection.remove_timeout(timer)
    ch.basic_cancel(tag)
    connection.close()
    if not done or events != count:
        raise RuntimeError(f"raw pika read {events:,} events from {stream!r} (end marker read: {bool(done)}), "
                           f"expected {count:,}")


def replay_rows(events: int, rounds: int, report: Callable[[str], None] = lambda _line: None) -> list[Row]:
    bench = ReplayBench()
    replays: list[float] = []
    raws: list[float] = []
    drains: list[float] = []
    try:
        started = time.perf_counter()
        bench.fill_log(events)
        report(f"published {events:,} events into {bench.stream} in {time.perf_counter() - started:.0f}s")
        for number in range(1, rounds + 1):
            replays.append(bench.replay(events))
            raws.append(bench.raw(events))
            drains.append(bench.drain(events))
            report(f"round {number}: replay {replays[-1]:,.0f}/s, raw pika {raws[-1]:,.0f}/s, "
                   f"drain {drains[-1]:,.0f}/s")
    finally:
        bench.close()
    what = f"{events:,} events, prefetch {PREFETCH}, {rounds} rounds"
    return [
        Row(f"replay: {events:,} events from the event log, no-op typed handler (vs raw pika reading the same "
            f"stream: basic_consume with x-stream-offset, prefetch {PREFETCH}, manual acks)", "msg/s",
            ours=replays, baseline=raws, target=">= 0.8",
            note=f"{what}; raw pika: model_validate_json, ack every {ACK_EVERY}"),
        Row(f"replay vs live drain of the same {events:,} events (app.drain() from the bound durable queue)",
            "msg/s", ours=replays, baseline=drains, note=what),
    ]


def all_rows(quick: bool, rounds: int, step: Callable[[str], None] = lambda _label: None) -> list[Row]:
    """Quick: 20,000 events, ``rounds`` rounds; else 1,000,000 events (published in about 75 s), at most 3
    rounds (about 3.5 minutes each)."""
    step("replay of the event log")
    return replay_rows(QUICK_EVENTS, rounds) if quick else replay_rows(EVENTS, min(rounds, FULL_ROUNDS))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=None, help=f"default {EVENTS:,} ({QUICK_EVENTS:,} with --quick)")
    parser.add_argument("--rounds", type=int, default=FULL_ROUNDS, help=f"alternating rounds (default {FULL_ROUNDS})")
    parser.add_argument("--quick", action="store_true", help=f"{QUICK_EVENTS:,} events")
    args = parser.parse_args(argv)
    events = args.events or (QUICK_EVENTS if args.quick else EVENTS)
    logging.getLogger("pika").setLevel(logging.CRITICAL)
    started = time.perf_counter()

    def report(line: str) -> None:
        print(f"  ... {line} ({time.perf_counter() - started:.0f}s)", file=sys.stderr, flush=True)

    for row in replay_rows(events, args.rounds, report):
        print(f"{row.name}: {row.ours_median:,.0f} vs {row.baseline_median:,.0f} (x{row.ratio:.2f}) {row.unit}; "
              f"target {row.target or '-'}\n  {row.note}\n  pubsubpy {[round(r) for r in row.ours]}, "
              f"baseline {[round(r) for r in row.baseline]}")
    print(f"wall time {time.perf_counter() - started:.0f}s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
