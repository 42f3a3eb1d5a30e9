"""The RabbitMQ transport (pika). See ``pubsubpy.transports.base`` for the contract.

Threads and processes: no pika connection is ever shared. Publishing uses one
connection per thread (``threading.local``), recreated in a forked child
(the parent's socket is abandoned, never closed from the child). Each consumer
opens its own connection. ``init()`` never connects; the first publish,
declare or drain does.

Recovery: a publish or declare that loses its connection reconnects (up to
``connection_attempts``) and sends again; an unconfirmed message may then be
stored twice (same ``message_id``), never lost. Consumers reconnect inside
``next()``; see ``consuming.py``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import weakref
from collections.abc import Sequence

import pika

from pubsubpy.errors import ConfirmTimeout
from pubsubpy.settings import Settings
from pubsubpy.transports.base import OutgoingMessage, Topology, topology_queues
from pubsubpy.transports.rabbitmq.connection import abandon, connect, retrying, translate_errors
from pubsubpy.transports.rabbitmq.consuming import RabbitConsumer
from pubsubpy.transports.rabbitmq.declaring import declare_topology
from pubsubpy.transports.rabbitmq.publishing import ConfirmChannel

__all__ = ["RabbitMQTransport"]

log = logging.getLogger("pubsubpy.rabbitmq")


class _ThreadLink:
    """One thread's publishing connection and confirm channel."""

    def __init__(self, settings: Settings) -> None:
        self.pid = os.getpid()
        self.connection: pika.BlockingConnection = connect(settings)
        self.confirm = ConfirmChannel(self.connection, settings.confirm_timeout)
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
        self._links: weakref.WeakSet[_ThreadLink] = weakref.WeakSet()
        self._lock = threading.Lock()

    def _link(self) -> _ThreadLink:
        link: _ThreadLink | None = getattr(self._local, "link", None)
        if link is not None and (link.pid != os.getpid() or not link.confirm.is_open):
            if link.pid == os.getpid():
                link.close()
            link = None
        if link is None:
            with translate_errors(f"connecting to {self._settings.display_url}"):
                link = _ThreadLink(self._settings)
            self._local.link = link
            with self._lock:
                self._links.add(link)
        return link

    def _reset(self) -> None:
        link: _ThreadLink | None = getattr(self._local, "link", None)
        self._local.link = None
        if link is not None:
            link.close()

    def declare_exchange(self, name: str) -> None:
        def operation() -> None:
            link = self._link()
            if name not in link.exchanges:
                link.confirm.channel.exchange_declare(name, exchange_type="topic", durable=True)
                link.exchanges.add(name)

        retrying(self._settings, f"declaring exchange {name!r}", operation, self._reset)

    def declare(self, topology: Topology) -> None:
        def operation() -> None:
            link = self._link()
            channel = link.connection.channel()
            try:
                declare_topology(channel, link.confirm, topology)
            finally:
                if channel.is_open:
                    channel.close()
            link.exchanges.add(topology.exchange)

        retrying(self._settings, f"declaring the topology of {topology.queue.name!r}", operation, self._reset)

    def publish(self, messages: Sequence[OutgoingMessage]) -> list[str]:
        def operation() -> list[str]:
            link = self._link()
            try:
                return link.confirm.publish(messages)
            except ConfirmTimeout:
                self._reset()  # the channel's state is unknown: never reuse it
                raise

        return retrying(self._settings, f"publishing {len(messages)} message(s)", operation, self._reset)

    def consume(self, queue: str, prefetch: int, *, recover: bool = True,
                limit: int | None = None) -> RabbitConsumer:
        return RabbitConsumer(self._settings, queue, prefetch, recover=recover, limit=limit)

    def queue_depth(self, queue: str) -> int:
        def operation() -> int:
            channel = self._link().connection.channel()
            try:
                return int(channel.queue_declare(queue, passive=True).method.message_count)
            finally:
                if channel.is_open:
                    channel.close()

        return retrying(self._settings, f"reading the depth of {queue!r}", operation, self._reset)

    def delete(self, topology: Topology, *, exchange: bool = False) -> None:
        def operation() -> None:
            channel = self._link().connection.channel()
            try:
                for name in topology_queues(topology):
                    channel.queue_delete(name)
                for name in [topology.dead_letter_exchange] + ([topology.exchange] if exchange else []):
                    channel.exchange_delete(name)
            finally:
                if channel.is_open:
                    channel.close()

        retrying(self._settings, f"deleting the topology of {topology.queue.name!r}", operation, self._reset)

    def close(self) -> None:
        with self._lock:
            links = list(self._links)
            self._links = weakref.WeakSet()
        self._local = threading.local()
        for link in links:
            link.close()
