"""The RabbitMQ transport (pika). See ``pubsubpy.transports.base`` for the contract.

Threads and processes: no pika connection is ever shared. Publishing uses one
connection per thread (``threading.local``), recreated in a forked child
(the parent's socket is abandoned, never closed from the child). Each consumer
opens its own connection. ``init()`` never connects; the first publish,
declare or drain does.

Recovery: a publish or declare that loses its connection reconnects (up to
``connection_attempts``) and sends again; an unconfirmed message may then be
stored twice (same ``message_id``), never lost. Consumers reconnect inside
``get()``; see ``_consuming.py``. Every operation takes an optional ``Deadline``
that bounds it whole (connecting, retries and broker round trips).
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

import pika
import pika.adapters.blocking_connection
import pika.exceptions

from pubsubpy.deadline import Deadline
from pubsubpy.errors import ConfirmTimeout, PublishNacked, TransportError
from pubsubpy.settings import Settings
from pubsubpy.transports.base import (
    LogOffset,
    OutgoingMessage,
    PendingPublish,
    QueueInfo,
    QueueSpec,
    Redeclare,
    Topology,
    topology_exchanges,
    topology_queues,
)
from pubsubpy.transports.rabbitmq._connection import (
    abandon,
    call_deadline,
    connect,
    parameters,
    retrying,
    translate_errors,
    within,
)
from pubsubpy.transports.rabbitmq._consuming import RabbitConsumer
from pubsubpy.transports.rabbitmq._declaring import (
    declare_topology,
    prune_bindings,
    recorded_bindings,
    report_kept_queues,
)
from pubsubpy.transports.rabbitmq._event_log import declare_event_log
from pubsubpy.transports.rabbitmq._permissions import service_permissions
from pubsubpy.transports.rabbitmq._publishing import ConfirmChannel

__all__ = ["RabbitMQTransport", "service_permissions"]

_FIRST_NACK_PAUSE = 0.05  # seconds; doubling up to
_LAST_NACK_PAUSE = 1.0
_SWEEP_EVERY = 5.0  # seconds between looks for the links of ended threads, besides one at each new link

log = logging.getLogger("pubsubpy.rabbitmq")

BlockingChannel = pika.adapters.blocking_connection.BlockingChannel
T = TypeVar("T")


class _ThreadLink:
    """One thread's publishing connection and confirm channel."""

    def __init__(self, settings: Settings, deadline: Deadline) -> None:
        self.pid = os.getpid()
        self.owner = threading.current_thread()
        self.connection: pika.BlockingConnection = connect(settings, deadline)
        try:
            with within(self.connection, deadline, "opening a confirm channel"):
                self.confirm = ConfirmChannel(self.connection, settings.confirm_timeout)
        except BaseException:
            abandon(self.connection)
            raise
        self.exchanges: set[str] = set()

    def close(self) -> None:
        if self.pid != os.getpid() or not self.connection.is_open:
            return  # a forked child never touches the parent's socket
        if self.confirm.broken:
            abandon(self.connection)
            return
        with contextlib.suppress(Exception):  # closing a broken connection: nothing left to do
            self.connection.close()


class RabbitMQTransport:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._local = threading.local()
        self._links: set[_ThreadLink] = set()  # every thread's, so that a dead thread's is closed, not left to GC
        self._lock = threading.Lock()
        self._next_sweep = 0.0  # monotonic: when a publish on a thread's existing link next looks for ended ones

    def _link(self, deadline: Deadline) -> _ThreadLink:
        link: _ThreadLink | None = getattr(self._local, "link", None)
        if link is not None and (link.pid != os.getpid() or not link.confirm.is_open):
            self._drop(link)
            link = None
        if link is None:
            with translate_errors(f"connecting to {self._settings.display_url}"):
                link = _ThreadLink(self._settings, deadline)
            self._local.link = link
            with self._lock:
                self._links.add(link)
            self._close_ended()
        elif time.monotonic() >= self._next_sweep:
            self._close_ended()
        return link

    def _close_ended(self) -> None:
        """Close the links of threads that have ended (a worker's loop thread, a request's): nobody else uses
        them, and the garbage collector may not get to them for a long time (pika's objects sit in cycles)."""
        with self._lock:
            ended = {each for each in self._links if not each.owner.is_alive()}
            self._links -= ended
            self._next_sweep = time.monotonic() + _SWEEP_EVERY
        for each in ended:
            each.close()

    def _reset(self) -> None:
        link: _ThreadLink | None = getattr(self._local, "link", None)
        self._local.link = None
        if link is not None:
            self._drop(link)

    def _drop(self, link: _ThreadLink) -> None:
        with self._lock:
            self._links.discard(link)
        link.close()  # (a forked child's copy of the parent's link: close() leaves its socket alone)

    def _default_deadline(self, deadline: Deadline | None) -> Deadline:
        """Without a caller's deadline: one connect per URL plus one confirm wait (``call_deadline``)."""
        return deadline if deadline is not None else call_deadline(self._settings)

    def _on_channel(self, doing: str, deadline: Deadline | None,
                    work: Callable[[_ThreadLink, BlockingChannel], T]) -> T:
        """Run ``work`` on a fresh channel of this thread's connection, bounded and retried."""
        limit = self._default_deadline(deadline)

        def operation() -> T:
            link = self._link(limit)
            with within(link.connection, limit, doing):
                channel = link.connection.channel()
                try:
                    return work(link, channel)
                finally:
                    if channel.is_open:
                        channel.close()

        return retrying(self._settings, doing, operation, self._reset, limit)

    def declare_exchange(self, name: str, *, deadline: Deadline | None = None) -> None:
        limit = self._default_deadline(deadline)

        def operation() -> None:
            link = self._link(limit)
            if name not in link.exchanges:
                with within(link.connection, limit, f"declaring exchange {name!r}"):
                    link.confirm.channel.exchange_declare(name, exchange_type="topic", durable=True)
                link.exchanges.add(name)

        retrying(self._settings, f"declaring exchange {name!r}", operation, self._reset, limit)

    def declare(self, topology: Topology, *, deadline: Deadline | None = None) -> None:
        def work(link: _ThreadLink, channel: BlockingChannel) -> set[str]:
            kept_without = declare_topology(channel, link.confirm, topology)
            link.exchanges.add(topology.exchange)
            return kept_without

        kept_without = self._on_channel(f"declaring the topology of {topology.queue.name!r}", deadline, work)
        report_kept_queues(topology, parameters(self._settings)[0].virtual_host, kept_without)

    def declare_listener(self, exchange: str, queue: QueueSpec, *, deadline: Deadline | None = None) -> None:
        def work(_link: _ThreadLink, channel: BlockingChannel) -> None:
            channel.exchange_declare(exchange, exchange_type="fanout", durable=True)
            channel.queue_declare(queue.name, durable=False, arguments=dict(queue.arguments) or None)
            channel.queue_bind(queue.name, exchange, routing_key="")

        self._on_channel(f"declaring the listener {queue.name!r}", deadline, work)

    def declare_log(self, exchange: str, stream: QueueSpec, *, deadline: Deadline | None = None) -> None:
        vhost = parameters(self._settings)[0].virtual_host

        def work(link: _ThreadLink, channel: BlockingChannel) -> None:
            declare_event_log(channel, exchange, stream, vhost)
            link.exchanges.add(exchange)

        self._on_channel(f"declaring the event log {stream.name!r}", deadline, work)

    def publish(self, messages: Sequence[OutgoingMessage], *, deadline: Deadline | None = None) -> list[str]:
        """Publish confirmed; returns the ids of mandatory messages no queue took.

        A nack means the broker could not store the message now: a quorum queue between leaders, a
        queue refusing publishes. On RabbitMQ 3.10 a channel that saw a quorum queue's leader killed
        goes on nacking for good, while a new connection is accepted within seconds, so the nacked
        messages are sent again on a new connection, pausing longer each time, until the deadline;
        then ``PublishNacked``. A message nacked and then stored may be stored twice (same id).
        """
        limit = self._default_deadline(deadline)
        unroutable: list[str] = []
        pending = list(messages)
        pause = _FIRST_NACK_PAUSE
        while True:
            try:
                unroutable += self._publish_once(pending, limit)
                return unroutable
            except PublishNacked as exc:
                self._reset()
                unroutable += exc.unroutable
                if limit.remaining() <= pause:
                    raise PublishNacked(str(exc), exc.message_ids, unroutable) from exc
                log.warning("%d message(s) nacked by the broker; sending them again on a new connection in %.2gs",
                            len(exc.message_ids), pause)
                nacked = set(exc.message_ids)
                pending = [m for m in pending if (m.properties.message_id or "") in nacked]
                time.sleep(pause)
                pause = min(pause * 2, _LAST_NACK_PAUSE)

    def begin_publish(self, messages: Sequence[OutgoingMessage], *,
                      deadline: Deadline | None = None) -> PendingPublish:
        """Sent on this thread's confirm channel now; ``result()`` waits for the confirms. Anything but a
        clean answer (a nack, a lost connection) hands the batch, or its nacked part, to ``publish``
        with what is left of the deadline: its recovery, its errors."""
        limit = self._default_deadline(deadline)
        doing = f"publishing {len(messages)} message(s)"
        try:
            with translate_errors(doing):
                confirm = self._link(limit).confirm
                batch = confirm.send(messages, limit)
        except TransportError:  # the link could not be had or used: the whole publish, with its retries
            self._reset()
            return PendingPublish(lambda: self.publish(messages, deadline=limit))

        def finish() -> list[str]:
            try:
                with translate_errors(doing):
                    return confirm.wait_for(batch, limit)
            except PublishNacked as exc:
                self._reset()
                nacked = set(exc.message_ids)
                again = [m for m in messages if (m.properties.message_id or "") in nacked]
                return [*exc.unroutable, *self.publish(again, deadline=limit)]
            except ConfirmTimeout:
                self._reset()  # the channel's state is unknown: never reuse it
                raise
            except TransportError:
                self._reset()
                return self.publish(messages, deadline=limit)

        return PendingPublish(finish)

    def _publish_once(self, messages: Sequence[OutgoingMessage], limit: Deadline) -> list[str]:
        def operation() -> list[str]:
            link = self._link(limit)
            try:
                return link.confirm.publish(messages, limit)
            except ConfirmTimeout:
                self._reset()  # the channel's state is unknown: never reuse it
                raise

        return retrying(self._settings, f"publishing {len(messages)} message(s)", operation, self._reset, limit)

    def consume(self, queue: str, prefetch: int, *, recover: bool = True, limit: int | None = None,
                deadline: Deadline | None = None, redeclare: Redeclare | None = None,
                offset: LogOffset | None = None) -> RabbitConsumer:
        return RabbitConsumer(self._settings, queue, prefetch, recover=recover, limit=limit, deadline=deadline,
                              redeclare=redeclare, offset=offset)

    def queue_depth(self, queue: str, *, deadline: Deadline | None = None) -> int:
        def work(_link: _ThreadLink, channel: BlockingChannel) -> int:
            return int(channel.queue_declare(queue, passive=True).method.message_count)

        return self._on_channel(f"reading the depth of {queue!r}", deadline, work)

    def queue_info(self, queue: str, *, deadline: Deadline | None = None) -> QueueInfo | None:
        def work(_link: _ThreadLink, channel: BlockingChannel) -> QueueInfo | None:
            try:
                method = channel.queue_declare(queue, passive=True).method
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code == 404:
                    return None
                raise
            return QueueInfo(queue, int(method.message_count), int(method.consumer_count))

        return self._on_channel(f"inspecting queue {queue!r}", deadline, work)

    def recorded_bindings(self, topology: Topology, *, deadline: Deadline | None = None) -> set[str]:
        return self._on_channel(f"reading the bindings ledger of {topology.queue.name!r}", deadline,
                                lambda _link, channel: recorded_bindings(channel, topology))

    def prune_bindings(self, topology: Topology, patterns: Iterable[str], *,
                       deadline: Deadline | None = None) -> list[str]:
        wanted = sorted(patterns)
        return self._on_channel(f"pruning bindings of {topology.queue.name!r}", deadline,
                                lambda _link, channel: prune_bindings(channel, topology, wanted))

    def delete(self, topology: Topology, *, exchange: bool = False) -> None:
        def operation() -> None:
            channel = self._link(self._default_deadline(None)).connection.channel()
            try:
                for name in topology_queues(topology):
                    channel.queue_delete(name)
                for name in [topology.dead_letter_exchange, *topology_exchanges(topology)] \
                        + ([topology.exchange] if exchange else []):
                    channel.exchange_delete(name)
            finally:
                if channel.is_open:
                    channel.close()

        retrying(self._settings, f"deleting the topology of {topology.queue.name!r}", operation, self._reset)

    def close(self) -> None:
        with self._lock:
            links = list(self._links)
            self._links = set()
        self._local = threading.local()
        for link in links:
            link.close()
