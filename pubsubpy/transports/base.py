"""The transport contract: the few broker operations pubsubpy needs.

Everything above this line (publisher, consumer, dead letters) is written
against these two protocols; ``memory.py`` and ``rabbitmq.py`` implement them
with the same observable semantics, checked by one suite in ``tests/contract``.

Semantics every transport keeps:

- ``publish`` returns only when the broker has confirmed every message; it
  returns the ids of messages sent with ``mandatory=True`` that no queue took.
  It takes ownership of the messages: callers build fresh ones and never reuse them.
- A consumer belongs to the thread that calls ``get``; only ``wake`` may be
  called from other threads. ``get(timeout)`` returns a delivery that is
  buffered or arrives within ``timeout``, and ``None`` at the timeout or as soon
  as ``wake()`` was called; it keeps the connection serviced while it waits.
  ``is_empty()`` is True when nothing is buffered and the broker has nothing
  ready for the queue. ``next(timeout)`` combines them: a delivery, or ``None``
  once the queue is empty or ``timeout`` runs out.
- Unacknowledged deliveries come back (``redelivered=True``) when the consumer
  closes or its connection dies. ``ack`` may be deferred until ``flush``/``close``.
- ``consume(..., recover=True)`` reconnects inside ``get()`` after a lost
  connection (``connected`` is False from the loss until it is back); with
  ``recover=False`` it raises ``BrokerUnavailable`` instead (a walk that must
  not read a message twice).
- ``deadline`` bounds connecting and every broker round trip of the call (or,
  for ``consume``, of the consumer's life); without one, the settings' own
  timeouts apply.
- ``consume(..., limit=N)``: the consumer takes at most N deliveries in all (a
  drain with ``max_messages``), so it never holds messages it will not handle
  while competing consumers find the queue empty.
- A queue's ``x-dead-letter-exchange`` receives what it rejects or expires.
- A stream (the event log, ``declare_log``) keeps what it holds: ``consume(stream, ..., offset=...)`` reads
  it from ``offset`` (``"first"``, ``"next"``, an offset, or a ``datetime``: the first chunk stored at or
  after it, to the second), each delivery's ``x-stream-offset`` header naming its place; acks only make room
  in the window, and a nack is refused. Headers holding arrays or tables are dropped on the way in.
- ``declare`` only adds: exchanges, queues and the topology's bindings, each
  binding recorded as made by pubsubpy. Nothing but ``prune_bindings`` removes
  a binding, and it removes only recorded ones (never one made by hand).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from pubsubpy.deadline import Deadline
from pubsubpy.messages import TAG_BITS, Delivery, OutgoingMessage
from pubsubpy.topology import QueueSpec, Topology  # what ``declare`` takes; defined with the names

__all__ = ["TAG_BITS", "Consumer", "Delivery", "LogOffset", "OutgoingMessage", "QueueInfo", "QueueSpec", "Redeclare",
           "Topology", "Transport", "next_delivery", "topology_exchanges", "topology_queues"]

LogOffset = int | str | dt.datetime
"""Where a stream consumer attaches: ``"first"``, ``"next"``, an offset, or a time (``x-stream-offset``)."""

Redeclare = Callable[[Deadline | None], None]
"""Declares a consumer's topology again (its queue was deleted under it), within the deadline given."""


@dataclass(frozen=True, slots=True)
class QueueInfo:
    name: str
    messages: int   # ready to deliver (not counting unacked ones held by consumers)
    consumers: int


def topology_queues(topology: Topology) -> list[str]:
    """Every queue of a topology, ledger included (``<service queue>.ledger``, RabbitMQ only)."""
    names = [topology.queue.name, topology.dead_letter_queue.name, f"{topology.queue.name}.ledger"]
    if topology.parked_queue is not None:
        names.append(topology.parked_queue.name)
    if topology.shards is not None:
        names.extend(spec.name for spec in topology.shards.queues)
    return names + [spec.name for spec in topology.retry_queues]


def topology_exchanges(topology: Topology) -> list[str]:
    """The exchanges of a topology that belong to the service (the shards' and presence ones), for ``delete``."""
    return [] if topology.shards is None else [topology.shards.exchange, topology.shards.presence]


class PendingPublish:
    """A publish on its way (``Transport.begin_publish``): ``result()`` waits for its confirms and returns
    what ``publish`` would have returned, or raises what it would have raised."""

    def __init__(self, finish: Callable[[], list[str]]) -> None:
        self._finish = finish

    def result(self) -> list[str]:
        return self._finish()


class Consumer(Protocol):
    def get(self, timeout: float) -> Delivery | None: ...

    def take_ready(self) -> list[Delivery]:
        """Every delivery that is here now, after one turn of I/O that does not wait (may be empty)."""
        ...

    def keep_alive(self) -> None:
        """One turn of I/O that does not wait (heartbeats; deliveries stay buffered). Called from another
        thread while the owner runs handlers and lends it the connection (``_consume/caller_thread.py``); never raises:
        a lost connection is noticed by the owner's next call."""
        ...

    def is_empty(self) -> bool: ...

    def next(self, timeout: float) -> Delivery | None: ...

    def wake(self) -> None: ...

    @property
    def connected(self) -> bool:
        """Attached to the queue on a live connection (read from other threads: a health probe)."""
        ...

    def ack(self, tag: int) -> None: ...

    def nack(self, tag: int, requeue: bool) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...

    def release(self) -> None:
        """Close for a hand-over (a single-active-consumer queue another worker takes next): write the acks,
        then close without cancelling first, so every message still held goes back to its place in the queue
        before the broker makes the next consumer active (a cancel would activate it first, and it would take
        later messages of a key ahead of the held ones)."""
        ...


class Transport(Protocol):
    def declare_exchange(self, name: str) -> None: ...

    def declare(self, topology: Topology, *, deadline: Deadline | None = None) -> None: ...

    def declare_listener(self, exchange: str, queue: QueueSpec, *, deadline: Deadline | None = None) -> None:
        """The fanout ``exchange`` and ``queue`` (not durable; ``x-expires`` in its arguments removes it once
        nobody consumes it) bound to it: how a worker hears the others (``_consume/presence.py``)."""
        ...

    def declare_log(self, exchange: str, stream: QueueSpec, *, deadline: Deadline | None = None) -> None:
        """The topic ``exchange`` and the event log ``stream`` bound from it with ``#``. A stream that exists
        with other arguments is kept as it is (a warning names the policy that changes it)."""
        ...

    def publish(self, messages: Sequence[OutgoingMessage], *, deadline: Deadline | None = None) -> list[str]: ...

    def begin_publish(self, messages: Sequence[OutgoingMessage], *,
                      deadline: Deadline | None = None) -> PendingPublish:
        """``publish`` in two halves: send now, wait for the confirms at ``result()``, on the same thread."""
        ...

    def consume(self, queue: str, prefetch: int, *, recover: bool = True, limit: int | None = None,
                deadline: Deadline | None = None, redeclare: Redeclare | None = None,
                offset: LogOffset | None = None) -> Consumer:
        """A consumer of ``queue``. With ``recover`` it reconnects by itself; a consumer the broker
        cancels (its queue deleted) calls ``redeclare`` (declare the topology again), then consumes on.
        ``offset``: ``queue`` is a stream, read from there (with ``recover=False``: a reconnect would read
        from ``offset`` again)."""
        ...

    def queue_depth(self, queue: str, *, deadline: Deadline | None = None) -> int: ...

    def queue_info(self, queue: str, *, deadline: Deadline | None = None) -> QueueInfo | None:
        """Depth and consumer count of ``queue``; None when it does not exist."""
        ...

    def recorded_bindings(self, topology: Topology, *, deadline: Deadline | None = None) -> set[str]:
        """The bindings pubsubpy made (and recorded) from ``topology.exchange``: patterns to its queue, and
        ``"<pattern> -> <shards exchange>"`` (``topology.shard_binding``) to a shards exchange of any generation."""
        ...

    def prune_bindings(self, topology: Topology, patterns: Iterable[str], *,
                       deadline: Deadline | None = None) -> list[str]:
        """Remove those of ``patterns`` (named as ``recorded_bindings`` names them) that pubsubpy recorded
        binding; returns the ones removed."""
        ...

    def delete(self, topology: Topology, *, exchange: bool = False) -> None:
        """Remove what ``declare`` created (queues with their messages); the model exchange only if asked."""
        ...

    def close(self) -> None: ...


_WAIT_STEP = 0.05


def next_delivery(consumer: Consumer, timeout: float) -> Delivery | None:
    """The next delivery, or ``None`` once the queue is empty for this consumer or ``timeout`` passed.

    Messages the broker reports ready but has not pushed yet (a window still full of unsent acks)
    are waited for in short steps, re-asking, until ``timeout``.
    """
    until = time.monotonic() + timeout
    while True:
        delivery = consumer.get(0)
        if delivery is not None or consumer.is_empty():
            return delivery
        remaining = until - time.monotonic()
        if remaining <= 0:
            return None
        delivery = consumer.get(min(_WAIT_STEP, remaining))
        if delivery is not None:
            return delivery
