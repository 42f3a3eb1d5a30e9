"""A ``basic_consume`` consumer: a prefetch window, batched acks, wake-ups from other threads.

The thread that owns this consumer owns its connection: ``get`` runs pika's
I/O loop (deliveries, heartbeats, flow control) while it waits, and returns
early when a handler thread calls ``wake`` (``add_callback_threadsafe``, the one
thread-safe pika call). Handlers never run on this thread, so a long handler
never starves the connection.

Empty-queue test (no fixed sleep): with nothing buffered, send pending acks and
ask the broker how many messages are ready (a passive ``queue.declare``). The
broker sends every delivery it dispatched to us before that reply on the same
channel, so "nothing buffered after the reply, and 0 ready" means the queue is
empty for us.

Acks: ``ack`` records the tag; a ``multiple=True`` ack covers the run of tags
contiguous with what is already acked, single acks the rest. Every
``ack_batch`` tags the frames are queued on the channel (``Channel.basic_ack``,
pika's non-blocking channel, ``BlockingChannel._impl``) and written by the next
I/O the loop does anyway (``take_ready``, ``get``); ``flush`` writes them at
once (``BlockingConnection._flush_output``: the same private pika name the
publisher relies on). pika's ``BlockingChannel.basic_ack`` runs the I/O loop
for every ack, a large share of a small-prefetch loop's time. Delivery
tags given out carry a connection generation: after a reconnect, an ack for a
tag from the old connection is dropped (that message comes back redelivered),
never sent on the new channel.

A consumer the broker cancels (``basic.cancel``: its queue was deleted, the node
holding a classic queue was lost, a quorum consumer timed out on 4.3) is
treated like a lost connection, with one step first: ``redeclare`` declares the
service's topology again (additive, as at start), then the consumer consumes
on a new connection. Its unacked messages, if the queue still exists, come back
redelivered, and the loop acks those it had already settled without running
them again.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections import deque

import pika
import pika.adapters.blocking_connection
import pika.channel
import pika.exceptions
import pika.spec

from pubsubpy.deadline import Deadline
from pubsubpy.errors import BrokerUnavailable, ConfigurationError, ConsumerCancelled, PermissionDenied, TransportError
from pubsubpy.settings import Settings
from pubsubpy.transports.base import TAG_BITS, Delivery, LogOffset, Redeclare, next_delivery
from pubsubpy.transports.rabbitmq._connection import abandon, call_deadline, connect, translate_errors, within
from pubsubpy.transports.rabbitmq._deliveries import DirectDeliveries
from pubsubpy.transports.rabbitmq._properties import from_pika_properties

__all__ = ["RabbitConsumer"]

log = logging.getLogger("pubsubpy.rabbitmq")

_GENERATION_SHIFT = TAG_BITS
_CLOSE_BUDGET = 2.0  # seconds for a polite cancel + final acks on close
_QUORUM_SETTLE = 0.25  # seconds a quorum queue's deliveries may trail its declare-ok (see _settled_depth)
_REOPEN_TRIES = 3  # fresh connections a lost consumer tries (each making connection_attempts) before it gives up


class RabbitConsumer:
    def __init__(self, settings: Settings, queue: str, prefetch: int, *, recover: bool = True,
                 limit: int | None = None, deadline: Deadline | None = None,
                 redeclare: Redeclare | None = None, offset: LogOffset | None = None) -> None:
        self._settings = settings
        self._offset = offset  # a stream's consumer: where it attaches (``x-stream-offset``); it never nacks
        self._recover = recover
        self._redeclare = redeclare
        self._deadline = deadline or Deadline.never()
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
        self._generation = 0
        self._connection: pika.BlockingConnection | None = None
        self._channel: pika.adapters.blocking_connection.BlockingChannel | None = None
        self._buffer: deque[Delivery] = deque()
        self._pending_acks: list[int] = []
        self._floor = 0  # every tag <= floor is settled
        self._settled_above: set[int] = set()  # tags > floor acked or nacked one by one
        self._closed = False
        self._woken = False
        self._broken: BrokerUnavailable | None = None  # set when the connection died; get() reconnects
        self._consumer_tag = ""
        self._direct: DirectDeliveries | None = None
        self._open()

    # -- connection ----------------------------------------------------------------
    def _open(self) -> None:
        self._generation += 1
        self._buffer.clear()
        self._pending_acks.clear()
        self._settled_above.clear()
        self._floor = 0
        doing = f"consuming from {self._queue!r}"
        # a worker's (no deadline) connect and consume are bounded too: its loop retries with backoff
        limit = call_deadline(self._settings) if math.isinf(self._deadline.at) else self._deadline
        with translate_errors(doing):
            connection = connect(self._settings, limit)
            try:
                with within(connection, limit, doing):
                    channel = connection.channel()
                    channel.basic_qos(prefetch_count=self._prefetch)
                    arguments = None if self._offset is None else {"x-stream-offset": self._offset}
                    self._consumer_tag = channel.basic_consume(self._queue, self._on_message, arguments=arguments)
                    channel.add_on_cancel_callback(self._on_cancelled)
                    self._direct = DirectDeliveries(connection, channel, self._consumer_tag, self._on_delivery)
            except BaseException:
                abandon(connection)
                raise
        self._connection, self._channel = connection, channel
        self._broken = None

    def _reopen(self, exc: BaseException) -> None:
        """Connect and consume again after ``exc``; a cancelled consumer declares its topology first.
        Permissions (or the vhost) taken away while the consumer ran are a lost broker here, not a
        configuration error: a worker waits for them to come back instead of ending."""
        self._abandon()
        deadline = None if math.isinf(self._deadline.at) else self._deadline
        redeclare = self._redeclare if isinstance(exc, ConsumerCancelled) else None
        if redeclare is None:
            log.warning("consumer on %r lost its connection (%r); reconnecting", self._queue, exc)
        for attempt in range(1, _REOPEN_TRIES + 1):
            try:
                if redeclare is not None:
                    redeclare(deadline)
                    redeclare = None
                self._open_or_redeclare(deadline)
                return
            except BrokerUnavailable as error:
                # connected, then lost again while setting up (a cluster still electing a queue leader)
                if attempt == _REOPEN_TRIES or self._deadline.expired:
                    raise BrokerUnavailable(f"consumer on {self._queue!r} could not reconnect: {error}") from error
                log.warning("consumer on %r: reconnecting failed (%s); trying again", self._queue, error)
            except (TransportError, PermissionDenied) as error:
                raise BrokerUnavailable(f"consumer on {self._queue!r} could not reconnect: {error}") from error

    def _open_or_redeclare(self, deadline: Deadline | None) -> None:
        try:
            self._open()  # connect() makes connection_attempts attempts within the deadline
        except ConfigurationError as error:
            # the queue went while the connection was down (its cancel never reached us): as for a cancel
            if self._redeclare is None or not _queue_missing(error):
                raise
            log.warning("the queue %r is gone (deleted while the consumer reconnected); declaring the "
                        "topology again and consuming", self._queue)
            self._redeclare(deadline)
            self._open()

    def _abandon(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            abandon(connection)

    def _on_message(self, _channel: object, method: pika.spec.Basic.Deliver,
                    properties: pika.spec.BasicProperties, body: bytes) -> None:
        """A delivery that came with the consume-ok, before ``DirectDeliveries`` took over."""
        self._on_delivery(method.delivery_tag, method.exchange, method.routing_key, bool(method.redelivered),
                          properties, body)

    def _on_delivery(self, delivery_tag: int, exchange: str, routing_key: str, redelivered: bool,
                     properties: pika.spec.BasicProperties, body: bytes) -> None:
        tag = (self._generation << _GENERATION_SHIFT) | delivery_tag
        self._buffer.append(Delivery(tag, exchange, routing_key, body, from_pika_properties(properties),
                                     redelivered))

    def _on_cancelled(self, _frame: object) -> None:
        if self._closed or self._broken is not None:
            return
        log.warning("the broker cancelled the consumer on %r (the queue was deleted, its node lost, or a delivery "
                    "outlived consumer_timeout); declaring the topology again and consuming", self._queue)
        self._lost(ConsumerCancelled(f"the broker cancelled the consumer on {self._queue!r}"))

    def _on_wake(self) -> None:
        self._woken = True

    def _lost(self, exc: BrokerUnavailable) -> None:
        """The connection died: forget its tags (the broker redelivers those messages). Without ``recover``,
        raise (and ``close`` then only lets the dead connection go: a cancel on it would fail in pika)."""
        self._broken = exc
        self._buffer.clear()
        if not self._recover:
            raise exc

    # -- consumer contract ---------------------------------------------------------
    def get(self, timeout: float) -> Delivery | None:
        until = time.monotonic() + timeout
        while True:
            if self._broken is not None:
                if not self._recover:
                    raise self._broken
                self._reopen(self._broken)
            if self._buffer:
                return self._buffer.popleft()
            if self._woken:
                self._woken = False
                return None
            remaining = until - time.monotonic()
            assert self._connection is not None
            try:
                with translate_errors(f"consuming from {self._queue!r}"):
                    self._connection.process_data_events(max(remaining, 0.0))
            except BrokerUnavailable as exc:
                self._lost(exc)
                continue
            if remaining <= 0 and not self._buffer:
                self._woken = False
                return None

    @property
    def connected(self) -> bool:
        connection, channel = self._connection, self._channel
        return self._broken is None and channel is not None and channel.is_open and connection is not None \
            and connection.is_open  # a channel the broker closed (a consumer timeout) is not attached either

    def is_empty(self) -> bool:
        if self._buffer:
            return False
        if self._broken is not None or self._connection is None or self._channel is None:
            return False  # get() reconnects first
        connection, channel = self._connection, self._channel
        doing = f"asking the depth of {self._queue!r}"
        try:
            with translate_errors(doing), within(connection, self._deadline, doing):
                connection.process_data_events(0)
                if self._buffer:
                    return False
                if not self._limited:
                    self._send_acks()  # frees the window; a limited consumer keeps it shut (see __init__)
                ready = channel.queue_declare(self._queue, passive=True).method.message_count
                connection.process_data_events(0)
                if ready == 0 and not self._buffer and self._settings.queue_type == "quorum":
                    ready = self._settled_depth(connection, channel)
        except BrokerUnavailable as exc:
            self._lost(exc)
            return False
        return not self._buffer and ready == 0

    def _settled_depth(self, connection: pika.BlockingConnection,
                       channel: pika.adapters.blocking_connection.BlockingChannel) -> int:
        """A quorum queue counts as ready only what it has not yet handed to a consumer, and its
        deliveries can arrive after the declare-ok that says 0 (measured: a drain of 1,000 messages
        returned with none handled in 2 of 5 tries). Wait ``_QUORUM_SETTLE`` for deliveries still on
        their way, then ask again; classic queues answer in order with their deliveries."""
        until = time.monotonic() + min(_QUORUM_SETTLE, max(self._deadline.remaining(), 0.0))
        while not self._buffer and (left := until - time.monotonic()) > 0:
            connection.process_data_events(min(left, 0.05))
        if self._buffer:
            return 0
        ready = channel.queue_declare(self._queue, passive=True).method.message_count
        connection.process_data_events(0)
        return int(ready)

    def take_ready(self) -> list[Delivery]:
        if not self._buffer and self._broken is None:
            assert self._connection is not None
            try:
                with translate_errors(f"consuming from {self._queue!r}"):
                    self._connection.process_data_events(0)  # one turn of I/O: reads, and writes queued acks
            except BrokerUnavailable as exc:
                self._lost(exc)
        ready = list(self._buffer)
        self._buffer.clear()
        return ready

    def keep_alive(self) -> None:
        if self._broken is not None or self._connection is None or self._closed:
            return
        try:
            with translate_errors(f"consuming from {self._queue!r}"):
                self._connection.process_data_events(0)
        except TransportError as exc:  # the owner's next call reconnects (or raises, without recover)
            self._broken = exc if isinstance(exc, BrokerUnavailable) else BrokerUnavailable(str(exc))
            self._buffer.clear()

    def next(self, timeout: float) -> Delivery | None:
        return next_delivery(self, timeout)

    def wake(self) -> None:
        connection = self._connection
        if connection is None:
            self._woken = True
            return
        try:
            connection.add_callback_threadsafe(self._on_wake)
        except Exception:  # the connection is closing: get() notices that by itself
            self._woken = True

    def _split(self, tag: int) -> int | None:
        if tag >> _GENERATION_SHIFT != self._generation:
            return None  # from a connection that is gone: the broker will redeliver it
        return tag & ((1 << _GENERATION_SHIFT) - 1)

    def ack(self, tag: int) -> None:
        local = self._split(tag)
        if local is None or self._broken is not None:
            return
        self._pending_acks.append(local)
        if len(self._pending_acks) >= self._ack_batch and not self._limited:
            self._flush_quietly(write=False)

    def nack(self, tag: int, requeue: bool) -> None:
        if self._offset is not None:  # refused here: RabbitMQ would close the whole connection (540)
            raise TransportError(f"basic.nack and basic.reject not supported by stream queues ({self._queue!r}): "
                                 "a stream keeps every message, there is nothing to requeue or reject")
        local = self._split(tag)
        if local is None or self._channel is None or self._broken is not None:
            return
        self._send_acks()
        with translate_errors(f"rejecting a message on {self._queue!r}"):
            self._channel.basic_nack(local, multiple=False, requeue=requeue)
        self._mark_single(local)

    def _mark_single(self, local: int) -> None:
        self._settled_above.add(local)
        while self._floor + 1 in self._settled_above:
            self._floor += 1
            self._settled_above.discard(self._floor)

    def _send_acks(self, write: bool = True) -> None:
        """Queue the ack frames of the pending tags; ``write``: and write every queued frame now."""
        if self._channel is None or self._connection is None:
            return
        with translate_errors(f"acknowledging on {self._queue!r}"):
            if self._pending_acks:
                self._queue_acks(self._channel._impl)
            if write:
                self._connection._flush_output()  # returns at once when nothing waits to be written

    def _queue_acks(self, channel: pika.channel.Channel) -> None:
        tags = sorted(self._pending_acks)
        self._pending_acks.clear()
        pending = set(tags)
        cut, run_end = self._floor, 0
        while cut + 1 in pending or cut + 1 in self._settled_above:
            cut += 1
            if cut in pending:
                run_end = cut
        if run_end:
            channel.basic_ack(run_end, multiple=True)
        for local in tags:
            if local > cut:
                channel.basic_ack(local)
        self._settled_above = {t for t in self._settled_above if t > cut}
        self._floor = cut
        for local in tags:
            if local > cut:
                self._mark_single(local)

    def _flush_quietly(self, write: bool = True) -> None:
        try:
            self._send_acks(write)
        except BrokerUnavailable as exc:
            log.warning("acks on %r lost with the connection; those messages will be redelivered (%s)",
                        self._queue, exc)
            self._broken = exc
            self._buffer.clear()  # their tags died with the channel: the broker redelivers them

    def flush(self) -> None:
        if self._limited or self._broken is not None:
            return  # a limited consumer acks on close (see __init__)
        try:
            self._send_acks()
        except BrokerUnavailable as exc:
            self._lost(exc)

    def _give_back(self, channel: pika.adapters.blocking_connection.BlockingChannel) -> None:
        """Return every message still held (taken, not settled) with one ``basic.nack(0, multiple, requeue)``
        after the acks: RabbitMQ 4.3 counts a connection closed over held messages towards a quorum queue's
        delivery limit, and a nack not; a graceful stop or a listing must not use up a message's deliveries."""
        if self._broken is not None or self._offset is not None:  # a stream has nothing to give back (and no nack)
            return
        with contextlib.suppress(pika.exceptions.AMQPError, OSError):  # closing anyway: the broker requeues them
            channel.basic_nack(0, multiple=True, requeue=True)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._buffer.clear()
        connection, channel = self._connection, self._channel
        if connection is not None and channel is not None and self._broken is None:
            # Cancel first: acks sent to a live consumer reopen its window, and the broker would push
            # messages we then hand back, marked redelivered although nobody saw them.
            if self._direct is not None:
                self._direct.stop()  # deliveries after the cancel are pika's to reject
            with contextlib.suppress(TransportError, pika.exceptions.AMQPError, OSError), \
                    within(connection, Deadline.after(_CLOSE_BUDGET), f"closing the consumer on {self._queue!r}"):
                channel.basic_cancel(self._consumer_tag)
            if connection.is_open:
                self._flush_quietly()
                self._give_back(channel)
                with contextlib.suppress(Exception), within(connection, Deadline.after(_CLOSE_BUDGET), "closing"):
                    connection.close()  # a polite close; abandoned below if it fails
        self._abandon()

    def release(self) -> None:
        """No ``basic.cancel``: the acks, then the connection's close, after which the broker returns what the
        channel held to its place and only then activates the next single-active consumer."""
        if self._closed:
            return
        self._closed = True
        self._buffer.clear()
        connection = self._connection
        if connection is not None and self._broken is None and connection.is_open:
            self._flush_quietly()  # (what arrives meanwhile is held, and goes back with the rest)
            with contextlib.suppress(Exception), within(connection, Deadline.after(_CLOSE_BUDGET), "closing"):
                connection.close()
        self._abandon()


def _queue_missing(error: ConfigurationError) -> bool:
    """``basic.consume`` was refused with 404: the queue does not exist."""
    cause = error.__cause__
    return isinstance(cause, pika.exceptions.ChannelClosedByBroker) and cause.reply_code == 404
