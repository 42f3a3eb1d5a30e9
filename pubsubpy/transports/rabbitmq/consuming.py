"""A ``basic_consume`` consumer with a prefetch window, batched acks and an empty-queue stop.

Stop rule (no fixed sleep): when nothing is buffered, flush acks and ask the
broker how many messages are ready (a passive ``queue.declare``). The broker
sends every delivery it dispatched to us before that reply on the same
channel, so "nothing buffered after the reply, and 0 ready" means the queue is
empty for us. If messages are ready but not yet here, wait for them in short
steps, re-asking, until ``timeout``.

Acks: ``ack`` records the tag; tags are sent with ``multiple=True`` when the
acked tags are contiguous (the drain's case), one by one otherwise (dead-letter
walks), every ``ack_batch`` tags and on ``flush``/``close``. Delivery tags
given out carry a connection generation: after a reconnect, an ack for a tag
from the old connection is dropped (that message comes back redelivered),
never sent on the new channel.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque

import pika
import pika.adapters.blocking_connection
import pika.exceptions
import pika.spec

from pubsubpy.errors import BrokerUnavailable
from pubsubpy.settings import Settings
from pubsubpy.transports.base import Delivery
from pubsubpy.transports.rabbitmq.connection import connect, translate_errors
from pubsubpy.transports.rabbitmq.properties import from_pika_properties

__all__ = ["RabbitConsumer"]

log = logging.getLogger("pubsubpy.rabbitmq")

_GENERATION_SHIFT = 40
_WAIT_STEP = 0.05


class RabbitConsumer:
    def __init__(self, settings: Settings, queue: str, prefetch: int, *, recover: bool = True,
                 limit: int | None = None) -> None:
        self._settings = settings
        self._recover = recover
        limited = limit is not None and (not prefetch or limit <= prefetch)
        if limited:
            # The broker refills the window as acks arrive. With the window equal to the limit and every
            # ack held until close, it can never push more than ``limit`` to us. (A limit above the
            # prefetch can overshoot by one window; the surplus is requeued on close.)
            assert limit is not None
            prefetch = limit
        self._queue = queue
        self._prefetch = prefetch
        self._ack_batch = max(1, min(prefetch // 2, 500)) if prefetch else 100
        self._limited = limited
        if limited:
            self._ack_batch = prefetch + 1
        self._generation = 0
        self._connection: pika.BlockingConnection | None = None
        self._channel: pika.adapters.blocking_connection.BlockingChannel | None = None
        self._buffer: deque[Delivery] = deque()
        self._pending_acks: list[int] = []
        self._floor = 0  # every tag <= floor is acked
        self._closed = False
        self._broken: BrokerUnavailable | None = None  # set when the connection died; next() reconnects
        self._consumer_tag = ""
        self._open()

    # -- connection ----------------------------------------------------------------
    def _open(self) -> None:
        self._generation += 1
        self._buffer.clear()
        self._pending_acks.clear()
        self._floor = 0
        with translate_errors(f"consuming from {self._queue!r}"):
            self._connection = connect(self._settings)
            channel = self._connection.channel()
            channel.basic_qos(prefetch_count=self._prefetch)
            self._consumer_tag = channel.basic_consume(self._queue, self._on_message)
            self._channel = channel
        self._broken = None

    def _reopen(self, exc: BaseException) -> None:
        log.warning("consumer on %r lost its connection (%r); reconnecting", self._queue, exc)
        self._abandon()
        last: BaseException = exc
        for attempt in range(self._settings.connection_attempts):
            try:
                self._open()
                return
            except BrokerUnavailable as error:
                last = error
                time.sleep(self._settings.retry_connect_delay * (attempt + 1))
        raise BrokerUnavailable(f"consumer on {self._queue!r} could not reconnect: {last}") from last

    def _abandon(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            with contextlib.suppress(Exception):  # already broken: nothing more to do
                connection.close()

    def _on_message(self, _channel: object, method: pika.spec.Basic.Deliver,
                    properties: pika.spec.BasicProperties, body: bytes) -> None:
        tag = (self._generation << _GENERATION_SHIFT) | method.delivery_tag
        self._buffer.append(Delivery(tag, method.exchange, method.routing_key, body,
                                     from_pika_properties(properties), bool(method.redelivered)))

    # -- consumer contract ---------------------------------------------------------
    def next(self, timeout: float) -> Delivery | None:
        deadline = time.monotonic() + timeout
        while True:
            if self._broken is not None:
                if not self._recover:
                    raise self._broken
                self._reopen(self._broken)
            if self._buffer:
                return self._buffer.popleft()
            try:
                if self._poll(deadline):
                    continue
                return None
            except BrokerUnavailable as exc:
                if time.monotonic() >= deadline:
                    raise
                self._broken = exc

    def _poll(self, deadline: float) -> bool:
        """Fill the buffer; False once the queue is empty or the deadline passed."""
        assert self._connection is not None and self._channel is not None
        with translate_errors(f"consuming from {self._queue!r}"):
            self._connection.process_data_events(0)
            if self._buffer:
                return True
            if not self._limited:
                self._send_acks()  # frees the window; a limited consumer keeps it shut (see __init__)
            while True:
                ready = self._channel.queue_declare(self._queue, passive=True).method.message_count
                self._connection.process_data_events(0)
                if self._buffer:
                    return True
                if ready == 0:
                    return False
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._connection.process_data_events(min(_WAIT_STEP, remaining))
                if self._buffer:
                    return True

    def _split(self, tag: int) -> int | None:
        if tag >> _GENERATION_SHIFT != self._generation:
            return None  # from a connection that is gone: the broker will redeliver it
        return tag & ((1 << _GENERATION_SHIFT) - 1)

    def ack(self, tag: int) -> None:
        local = self._split(tag)
        if local is None or self._broken is not None:
            return
        self._pending_acks.append(local)
        if len(self._pending_acks) >= self._ack_batch:
            self._flush_quietly()

    def nack(self, tag: int, requeue: bool) -> None:
        local = self._split(tag)
        if local is None or self._channel is None or self._broken is not None:
            return
        self._send_acks()
        with translate_errors(f"rejecting a message on {self._queue!r}"):
            self._channel.basic_nack(local, multiple=False, requeue=requeue)

    def _send_acks(self) -> None:
        if not self._pending_acks or self._channel is None:
            return
        tags = sorted(self._pending_acks)
        self._pending_acks.clear()
        with translate_errors(f"acknowledging on {self._queue!r}"):
            if tags[-1] - self._floor == len(tags):
                self._channel.basic_ack(tags[-1], multiple=True)
                self._floor = tags[-1]
            else:
                for local in tags:
                    self._channel.basic_ack(local)

    def _flush_quietly(self) -> None:
        try:
            self._send_acks()
        except BrokerUnavailable as exc:
            log.warning("acks on %r lost with the connection; those messages will be redelivered (%s)",
                        self._queue, exc)
            self._broken = exc
            self._buffer.clear()  # their tags died with the channel: the broker redelivers them

    def flush(self) -> None:
        self._send_acks()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._buffer.clear()
        if self._channel is not None and self._broken is None:
            # Cancel first: acks sent to a live consumer reopen its window, and the broker would push
            # messages we then hand back, marked redelivered although nobody saw them.
            with contextlib.suppress(pika.exceptions.AMQPError, OSError):
                self._channel.basic_cancel(self._consumer_tag)
            self._flush_quietly()
        self._abandon()
