"""The transport contract: the few broker operations pubsubpy needs.

Everything above this line (publisher, consumer, dead letters) is written
against these two protocols; ``memory.py`` and ``rabbitmq.py`` implement them
with the same observable semantics, checked by one suite in ``tests/contract``.

Semantics every transport keeps:

- ``publish`` returns only when the broker has confirmed every message; it
  returns the ids of messages sent with ``mandatory=True`` that no queue took.
  It takes ownership of the messages: callers build fresh ones and never reuse them.
- ``Consumer.next`` returns ``None`` once nothing is ready in the queue and
  nothing is buffered, or when ``timeout`` runs out; it never blocks longer.
- Unacknowledged deliveries come back (``redelivered=True``) when the consumer
  closes or its connection dies. ``ack`` may be deferred until ``flush``/``close``.
- ``consume(..., recover=True)`` reconnects inside ``next()`` after a lost
  connection; with ``recover=False`` it raises ``BrokerUnavailable`` instead (a
  walk that must not read a message twice).
- ``consume(..., limit=N)``: the consumer takes at most N deliveries in all (a
  drain with ``max_messages``), so it never holds messages it will not handle
  while competing consumers find the queue empty.
- A queue's ``x-dead-letter-exchange`` receives what it rejects or expires.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pubsubpy.envelope import Properties

__all__ = ["Consumer", "Delivery", "OutgoingMessage", "QueueSpec", "Topology", "Transport", "topology_queues"]


@dataclass(slots=True)
class OutgoingMessage:
    exchange: str
    routing_key: str
    body: bytes
    properties: Properties
    mandatory: bool = False


@dataclass(slots=True)
class Delivery:
    """A consumed message. Treat ``properties`` (headers included) as read-only."""

    tag: int
    exchange: str
    routing_key: str
    body: bytes
    properties: Properties
    redelivered: bool


@dataclass(frozen=True, slots=True)
class QueueSpec:
    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Topology:
    """What one service needs on the broker.

    ``bindings`` is the full set of patterns bound from ``exchange`` to
    ``queue``; declaring removes this queue's other bindings on ``exchange``.
    """

    exchange: str
    queue: QueueSpec
    bindings: frozenset[str]
    dead_letter_exchange: str
    dead_letter_queue: QueueSpec
    retry_queues: tuple[QueueSpec, ...] = ()


def topology_queues(topology: Topology) -> list[str]:
    """Every queue of a topology, ledger included (``<service queue>.bindings``, RabbitMQ only)."""
    names = [topology.queue.name, topology.dead_letter_queue.name, f"{topology.queue.name}.bindings"]
    return names + [spec.name for spec in topology.retry_queues]


class Consumer(Protocol):
    def next(self, timeout: float) -> Delivery | None: ...

    def ack(self, tag: int) -> None: ...

    def nack(self, tag: int, requeue: bool) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class Transport(Protocol):
    def declare_exchange(self, name: str) -> None: ...

    def declare(self, topology: Topology) -> None: ...

    def publish(self, messages: Sequence[OutgoingMessage]) -> list[str]: ...

    def consume(self, queue: str, prefetch: int, *, recover: bool = True, limit: int | None = None) -> Consumer: ...

    def queue_depth(self, queue: str) -> int: ...

    def delete(self, topology: Topology, *, exchange: bool = False) -> None:
        """Remove what ``declare`` created (queues with their messages); the model exchange only if asked."""
        ...

    def close(self) -> None: ...
