"""Confirmed publishing on one channel, pipelined, with a bounded wait.

pika's ``BlockingChannel.confirm_delivery`` waits for each confirm with no
time limit and one message at a time. This sends a whole batch, then waits for
all confirms at once, up to ``confirm_timeout``. ``send`` and ``wait_for`` do
the two halves apart, so the consumer loop can run handlers while the broker
stores the retry and dead-letter copies of the chunk before; each batch keeps
its own confirms, nacks and returns, so a handler's publish on the same channel
in between neither waits for nor takes the copies' answers. It drives the channel's
underlying ``pika.channel.Channel`` (``BlockingChannel._impl``) and the
connection's I/O loop (``BlockingConnection._flush_output``), and writes a
batch's frames (``encoding.publish_frames``, the bytes pika would write) in one
go (``Connection._output_marshaled_frames``, ``_body_max_length``): the private
pika names this module relies on, pinned by ``pika>=1.3,<=1.4.4``, guarded by
``_pika_hooks.py`` (checked at the first connection: a pika without them is
refused) and covered by the contract suite.

RabbitMQ sends ``basic.return`` (unroutable, ``mandatory``) before the
``basic.ack`` of the same message, so a message is unroutable exactly when its
id was returned by the time its ack arrives.

A publish the broker refuses (no write permission: 403; no such exchange: 404)
closes the channel and no confirm ever comes: the wait ends at once and raises
the broker's ``ChannelClosedByBroker``, which the caller translates.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import pika
import pika.channel
import pika.exceptions
import pika.frame
import pika.spec

from pubsubpy.deadline import Deadline
from pubsubpy.errors import ConfirmTimeout, PublishNacked
from pubsubpy.transports.base import OutgoingMessage
from pubsubpy.transports.rabbitmq._encoding import publish_frames
from pubsubpy.transports.rabbitmq._properties import to_pika_properties

__all__ = ["ConfirmChannel"]


class _DeadlinePassed(Exception):
    pass


class Batch:
    """Messages sent together: confirmed when none is left ``unconfirmed``; ``nacked`` their ids the broker
    refused."""

    def __init__(self, messages: Sequence[OutgoingMessage]) -> None:
        self.messages = messages
        self.nacked: list[str] = []
        self.returned: set[str] = set()  # ids of its mandatory messages that no queue took
        self.unconfirmed: dict[int, str] = {}  # sequence number -> message id, until confirmed


class ConfirmChannel:
    def __init__(self, connection: pika.BlockingConnection, timeout: float) -> None:
        self.broken = False  # a wait ran out: the connection's state is unknown, never reuse it
        self._connection = connection
        self._timeout = timeout
        self.channel = connection.channel()
        self._impl: pika.channel.Channel = self.channel._impl
        self._seq = 0
        self._unconfirmed: dict[int, Batch] = {}  # sequence number -> its batch (ascending: insertion order)
        self._by_id: dict[str, Batch] = {}  # message id -> the batch waiting for its confirm (for returns)
        self._closed_by_broker: pika.exceptions.ChannelClosedByBroker | None = None
        selected: list[bool] = []
        self._impl.confirm_delivery(ack_nack_callback=self._on_confirm,
                                    callback=lambda _frame: selected.append(True))
        self._impl.add_on_return_callback(self._on_return)
        self._impl.add_on_close_callback(self._on_close)
        self._wait(lambda: bool(selected), "enabling publisher confirms")

    def _on_confirm(self, frame: pika.frame.Method[Any]) -> None:
        method = frame.method
        tag: int = method.delivery_tag
        nack = isinstance(method, pika.spec.Basic.Nack)
        if method.multiple:
            settled = []
            for seq in self._unconfirmed:  # ascending: insertion order
                if seq > tag:
                    break
                settled.append(seq)
        else:
            settled = [tag] if tag in self._unconfirmed else []
        for seq in settled:
            batch = self._unconfirmed.pop(seq)
            message_id = batch.unconfirmed.pop(seq)
            if self._by_id.get(message_id) is batch:
                del self._by_id[message_id]
            if nack:
                batch.nacked.append(message_id)

    def _on_return(self, _channel: pika.channel.Channel, _method: pika.spec.Basic.Return,
                   properties: pika.spec.BasicProperties, _body: bytes) -> None:
        batch = self._by_id.get(properties.message_id or "")  # returned before its confirm: still mapped
        if batch is not None:
            batch.returned.add(properties.message_id or "")

    def _on_close(self, _channel: pika.channel.Channel, reason: Exception) -> None:
        if isinstance(reason, pika.exceptions.ChannelClosedByBroker):
            self._closed_by_broker = reason

    def _wait(self, done: Callable[[], bool], doing: str, limit: Deadline | None = None) -> None:
        """Run the I/O loop until ``done()``, for ``confirm_timeout`` at most (less if ``limit`` comes
        first). pika's loop also insists on an empty write buffer, which a blocked broker never
        drains, so the deadline breaks out by raising."""
        wait = self._timeout if limit is None else limit.cap(self._timeout)
        deadline = time.monotonic() + wait

        def finished() -> bool:
            if done() or self._closed_by_broker is not None:
                return True
            if time.monotonic() >= deadline:
                raise _DeadlinePassed
            return False

        timer = self._connection.call_later(wait, lambda: None)  # wakes the I/O loop at the deadline
        try:
            self._connection._flush_output(finished)
        except _DeadlinePassed:
            pass
        finally:
            if self._connection.is_open:
                self._connection.remove_timeout(timer)
        if self._closed_by_broker is not None and not done():
            raise self._closed_by_broker
        if not done():
            self.broken = True
            pending = [message_id for batch in set(self._unconfirmed.values())
                       for message_id in batch.unconfirmed.values()]
            raise ConfirmTimeout(f"{doing}: no answer from the broker within {wait:.3g}s (confirm_timeout="
                                 f"{self._timeout}s); the outcome is unknown (the message may or may not be stored)",
                                 pending)

    def publish(self, messages: Sequence[OutgoingMessage], deadline: Deadline | None = None) -> list[str]:
        """Send all, wait for every confirm; returns ids of mandatory messages no queue took."""
        return self.wait_for(self.send(messages, deadline), deadline)

    def send(self, messages: Sequence[OutgoingMessage], deadline: Deadline | None = None) -> Batch:
        """Write ``messages`` to the connection (within the deadline; a broker that stops reading makes the
        rest wait in the buffer until ``wait_for``); ``wait_for`` their confirms."""
        batch = Batch(messages)
        impl, connection = self._impl, self._connection._impl
        if not impl.is_open:  # pika's error for a channel that is closing or closed
            impl.basic_publish("", "", b"")
        channel_number, body_max = impl.channel_number, connection._body_max_length
        data = b"".join([publish_frames(channel_number, body_max, m.exchange, m.routing_key, m.mandatory,
                                        to_pika_properties(m.properties), m.body) for m in messages])
        for message in messages:  # every message encoded: now they are sent, all or none
            self._seq += 1
            self._unconfirmed[self._seq] = batch
            message_id = message.properties.message_id or ""
            batch.unconfirmed[self._seq] = message_id
            if message.mandatory:  # only those can come back as returns
                self._by_id[message_id] = batch
        if data:
            connection._output_marshaled_frames([data])
        self._wait(lambda: True, f"sending {len(messages)} message(s)", deadline)  # only flushes the writes
        return batch

    def wait_for(self, batch: Batch, deadline: Deadline | None = None) -> list[str]:
        """Wait for every confirm of ``batch``; ids of its mandatory messages no queue took, or
        ``PublishNacked`` (which lists those too)."""
        messages = batch.messages
        self._wait(lambda: not batch.unconfirmed, f"publishing {len(messages)} message(s)", deadline)
        returned = batch.returned
        unroutable = [m.properties.message_id or "" for m in messages if (m.properties.message_id or "") in returned] \
            if returned else []
        if batch.nacked:
            nacked = set(batch.nacked)
            raise PublishNacked(f"the broker refused {len(batch.nacked)} of {len(messages)} message(s) "
                                "(basic.nack); they were not stored", list(batch.nacked),
                                [i for i in unroutable if i not in nacked])
        return unroutable

    @property
    def is_open(self) -> bool:
        return bool(not self.broken and self.channel.is_open and self._connection.is_open)
