"""``memory://``: an in-process broker with RabbitMQ's semantics, for demos and unit tests.

Not a mock: it routes through topic (``TopicTrie``, the same matcher as the
router), fanout, consistent-hash (on a header, as ``<service>.shards`` uses
it), exchange-to-exchange bindings and the default exchange; queues keep FIFO
order (one active consumer with ``x-single-active-consumer``), hold
unacknowledged messages per consumer and put them back at their original place
(marked redelivered) when the consumer closes; ``x-dead-letter-exchange``,
``x-message-ttl`` and ``x-delivery-limit`` behave as on RabbitMQ, with an
``x-death`` note. All state lives on the ``MemoryBroker`` instance: share one
between two ``PubSub`` objects to model two services.

``memory://NAME`` URLs name shared brokers: ``named_broker(name)`` returns the
process's one broker of that name, made on first use. The registry holds them
strongly, like a RabbitMQ server that outlives its clients: a service that
declared its queue and went away must not take the queue, and what was
published to it since, with it. A named broker lives until ``drop_named_broker``
(the pytest fixture drops its own) or the end of the process. Plain
``memory://`` is a private broker per ``PubSub``.

Time: TTLs (the retry queues) run on the broker's clock, ``clock`` plus what
``advance()`` added, so a test moves a retry's delay forward instead of sleeping
it (``pubsubpy.testing.settle`` does).
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import threading
import time
import zlib
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from pubsubpy.deadline import Deadline
from pubsubpy.envelope import Properties
from pubsubpy.errors import ConfigurationError, TransportError
from pubsubpy.topics import TopicTrie, topic_matches
from pubsubpy.topology import SHARD_EXCHANGE_ARGUMENTS, SHARD_WEIGHT, SHARDS_ARROW, shard_binding
from pubsubpy.transports._memory_stream import MemoryLog, MemoryLogConsumer, is_stream
from pubsubpy.transports.base import (
    Delivery,
    LogOffset,
    OutgoingMessage,
    PendingPublish,
    QueueInfo,
    QueueSpec,
    Redeclare,
    Topology,
    next_delivery,
    topology_exchanges,
    topology_queues,
)

__all__ = ["MemoryBroker", "MemoryTransport", "drop_named_broker", "named_broker"]


log = logging.getLogger("pubsubpy.memory")

_TICK = 1e-6  # seconds advance_to_next_expiry() goes past an expiry


@dataclass(slots=True)
class _Message:
    seq: int
    exchange: str
    routing_key: str
    body: bytes
    properties: Properties
    enqueued_at: float
    redelivered: bool = False
    deliveries: int = 0


class _Queue:
    def __init__(self, name: str, arguments: Mapping[str, Any]) -> None:
        self.name = name
        self.arguments = dict(arguments)
        self.ready: deque[_Message] = deque()
        ttl = arguments.get("x-message-ttl")
        self.ttl: float | None = None if ttl is None else float(ttl) / 1000.0  # seconds
        self.delivery_limit = arguments.get("x-delivery-limit")
        self.holders: dict[MemoryConsumer, None] = {}  # consumers open on it, oldest first (their unacked are its)
        self.single_active = bool(arguments.get("x-single-active-consumer"))  # only the oldest holder gets any

    @property
    def consumers(self) -> int:
        return len(self.holders)


class _Exchange:
    def __init__(self, name: str, kind: str, arguments: Mapping[str, Any] | None = None) -> None:
        self.name = name
        self.kind = kind
        self.arguments = dict(arguments or {})
        self.bindings: dict[str, set[str]] = {}  # queue -> patterns
        self.onward: dict[str, set[str]] = {}    # exchange -> patterns (exchange-to-exchange bindings)
        self.trie: TopicTrie[str] | None = None
        self.routes: dict[str, list[str]] = {}  # routing key -> queues, until the bindings change
        self.onward_routes: dict[str, list[str]] = {}  # routing key -> exchanges, until the bindings change

    def changed(self) -> None:
        self.trie = None
        self.routes.clear()
        self.onward_routes.clear()

    def onward_exchanges(self, routing_key: str) -> list[str]:
        found = self.onward_routes.get(routing_key)
        if found is None:
            found = [name for name, patterns in self.onward.items()
                     if any(topic_matches(p, routing_key) for p in patterns)]
            if len(self.onward_routes) < 10_000:
                self.onward_routes[routing_key] = found
        return found

    def route(self, routing_key: str, headers: Mapping[str, Any] | None = None) -> list[str]:
        if self.kind == "fanout":
            return list(self.bindings)
        if self.kind == "x-consistent-hash":
            return self.hashed(headers or {})
        found = self.routes.get(routing_key)
        if found is not None:
            return found
        if self.trie is None:
            self.trie = TopicTrie()
            for queue, patterns in self.bindings.items():
                for pattern in patterns:
                    self.trie.add(pattern, queue)
        found = list(dict.fromkeys(self.trie.match(routing_key)))
        if len(self.routes) < 10_000:
            self.routes[routing_key] = found
        return found

    def hashed(self, headers: Mapping[str, Any]) -> list[str]:
        """RabbitMQ's consistent-hash exchange with ``hash-header``: one bound queue per message, the same one
        for the same header value (queues of weight 1; a message without the header: the first queue)."""
        queues = sorted(self.bindings)
        if not queues:
            return []
        value = headers.get(self.arguments.get("hash-header", ""))
        if value is None:
            return [queues[0]]
        text = value if isinstance(value, bytes) else str(value).encode()
        return [queues[zlib.crc32(text) % len(queues)]]


class MemoryBroker:
    """The shared state: exchanges, queues and their messages."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._skew = 0.0  # added by advance()
        self._lock = threading.RLock()
        self.arrived = threading.Condition(self._lock)  # notified whenever a queue gains a ready message
        self._exchanges: dict[str, _Exchange] = {}
        self._queues: dict[str, _Queue] = {}
        self._logs: dict[str, MemoryLog] = {}  # streams (``_memory_stream.py``)
        self._ttl_queues: list[_Queue] = []
        self._seq = itertools.count()
        self._recorded: dict[tuple[str, str], set[str]] = {}  # (exchange, queue): bindings pubsubpy made

    # -- topology -----------------------------------------------------------------
    def declare_exchange(self, name: str, kind: str, arguments: Mapping[str, Any] | None = None) -> None:
        with self._lock:
            existing = self._exchanges.get(name)
            if existing is not None and existing.kind != kind:
                raise ConfigurationError(f"exchange {name!r} exists with type {existing.kind!r}, not {kind!r}")
            if existing is None:
                self._exchanges[name] = _Exchange(name, kind, arguments)

    def unbind_exchange(self, destination: str, source: str, pattern: str) -> None:
        with self._lock:
            ex = self._exchange(source)
            ex.onward.get(destination, set()).discard(pattern)
            ex.changed()

    def bind_exchange(self, destination: str, source: str, pattern: str) -> None:
        with self._lock:
            self._exchange(destination)
            ex = self._exchange(source)
            ex.onward.setdefault(destination, set()).add(pattern)
            ex.changed()

    def declare_queue(self, name: str, arguments: Mapping[str, Any]) -> None:
        with self._lock:
            if is_stream(arguments) or name in self._logs:
                self._declare_log(name, arguments)
                return
            existing = self._queues.get(name)
            if existing is None:
                queue = self._queues[name] = _Queue(name, arguments)
                if queue.ttl is not None:
                    self._ttl_queues.append(queue)
                return
            for key in set(existing.arguments) | set(arguments):
                if existing.arguments.get(key) != arguments.get(key):
                    raise ConfigurationError(
                        f"queue {name!r} already exists with {key}={existing.arguments.get(key)!r}, "
                        f"not {arguments.get(key)!r}; delete it or keep the old setting (pubsubpy never deletes it)"
                    )

    def _declare_log(self, name: str, arguments: Mapping[str, Any]) -> None:
        existing = self._logs.get(name)
        if existing is None:
            if name in self._queues:
                raise ConfigurationError(f"queue {name!r} already exists, and is not a stream")
            self._logs[name] = MemoryLog(name, arguments)
            return
        if existing.arguments != dict(arguments):
            raise ConfigurationError(f"the stream {name!r} already exists with {existing.arguments!r}, not "
                                     f"{dict(arguments)!r} (PRECONDITION_FAILED)")

    def log(self, name: str) -> MemoryLog | None:
        return self._logs.get(name)

    def wall(self) -> float:
        """The broker's wall clock (a stream's times): ``time.time()`` plus every ``advance()``."""
        return time.time() + self._skew

    def read_log(self, name: str, offset: LogOffset, prefetch: int) -> MemoryLogConsumer:
        with self._lock:
            stream = self._logs.get(name)
            if stream is None:
                raise TransportError(f"stream {name!r} does not exist (NOT_FOUND)")
            return MemoryLogConsumer(stream, self.arrived, offset, prefetch, self.wall)

    def bind(self, exchange: str, queue: str, pattern: str) -> None:
        with self._lock:
            ex = self._exchange(exchange)
            ex.bindings.setdefault(queue, set()).add(pattern)
            ex.changed()

    def unbind(self, exchange: str, queue: str, pattern: str) -> None:
        with self._lock:
            ex = self._exchange(exchange)
            ex.bindings.get(queue, set()).discard(pattern)
            ex.changed()

    def record_bindings(self, exchange: str, queue: str, patterns: set[str] | frozenset[str]) -> None:
        """Bind ``patterns`` and note that pubsubpy made them (RabbitMQ's ledger, ``_ledger.py``)."""
        with self._lock:
            for pattern in patterns:
                self.bind(exchange, queue, pattern)
            self._recorded.setdefault((exchange, queue), set()).update(patterns)

    def record_names(self, exchange: str, queue: str, names: set[str]) -> None:
        """Note bindings made otherwise (to a shards exchange), by the name ``stale_bindings`` gives them."""
        with self._lock:
            self._recorded.setdefault((exchange, queue), set()).update(names)

    def recorded(self, exchange: str, queue: str) -> set[str]:
        with self._lock:
            return set(self._recorded.get((exchange, queue), set()))

    def prune(self, exchange: str, queue: str, patterns: set[str]) -> list[str]:
        with self._lock:
            recorded = self._recorded.get((exchange, queue), set())
            removed = sorted(patterns & recorded)
            for name in removed:
                pattern, _, destination = name.partition(SHARDS_ARROW)
                if destination:
                    if destination in self._exchanges:
                        self.unbind_exchange(destination, exchange, pattern)
                else:
                    self.unbind(exchange, queue, pattern)
                recorded.discard(name)
            return removed

    def info(self, queue_name: str) -> tuple[int, int] | None:
        with self._lock:
            stream = self._logs.get(queue_name)
            if stream is not None:
                return 0, stream.consumers  # as RabbitMQ: a stream reports no ready messages
            queue = self._queues.get(queue_name)
            if queue is None:
                return None
            self._expire()
            return len(queue.ready), queue.consumers

    def bindings(self, exchange: str, queue: str) -> set[str]:
        with self._lock:
            return set(self._exchange(exchange).bindings.get(queue, set()))

    def _exchange(self, name: str) -> _Exchange:
        try:
            return self._exchanges[name]
        except KeyError:
            raise TransportError(f"exchange {name!r} does not exist (NOT_FOUND)") from None

    def queue(self, name: str) -> _Queue:
        try:
            return self._queues[name]
        except KeyError:
            raise TransportError(f"queue {name!r} does not exist (NOT_FOUND)") from None

    # -- messages -----------------------------------------------------------------
    def publish(self, message: OutgoingMessage) -> bool:
        """Route one message; False when it reached no queue."""
        with self._lock:
            self._expire()
            if message.exchange == "":
                known = message.routing_key in self._queues or message.routing_key in self._logs
                targets = [message.routing_key] if known else []
            else:
                targets = self._routed(message.exchange, message.routing_key, message.properties.headers)
            for name in targets:  # the message is ours now (see the contract): no defensive copy
                stream = self._logs.get(name) if self._logs else None
                if stream is not None:
                    stream.append(message.exchange, message.routing_key, message.body, message.properties, self.wall())
                    self.arrived.notify_all()
                    continue
                self._enqueue(self._queues[name], message.exchange, message.routing_key, message.body,
                              message.properties)
            return bool(targets)

    def _routed(self, exchange: str, routing_key: str, headers: Mapping[str, Any]) -> list[str]:
        """The queues a message reaches from ``exchange``, through exchange-to-exchange bindings too."""
        ex = self._exchange(exchange)
        found = ex.route(routing_key, headers)
        if not ex.onward:
            return found
        queues = dict.fromkeys(found)
        for onward in ex.onward_exchanges(routing_key):
            queues.update(dict.fromkeys(self._routed(onward, routing_key, headers)))
        return list(queues)

    def _enqueue(self, queue: _Queue, exchange: str, routing_key: str, body: bytes, props: Properties) -> None:
        """``props`` is the broker's own copy, shared by the queues it was routed to and never mutated."""
        queue.ready.append(_Message(next(self._seq), exchange, routing_key, body, props, self.now()))
        self.arrived.notify_all()

    def dead_letter(self, queue: _Queue, message: _Message, reason: str) -> None:
        target = queue.arguments.get("x-dead-letter-exchange")
        if target is None:
            return  # RabbitMQ drops it too: a queue without a DLX discards
        routing_key = queue.arguments.get("x-dead-letter-routing-key", message.routing_key)
        headers = dict(message.properties.headers)
        deaths = list(headers.get("x-death") or [])
        deaths.insert(0, {"reason": reason, "queue": queue.name, "exchange": message.exchange,
                          "routing-keys": [message.routing_key], "count": 1})
        headers["x-death"] = deaths
        headers.setdefault("x-first-death-reason", reason)
        headers.setdefault("x-first-death-queue", queue.name)
        props = replace(message.properties, headers=headers, expiration=None)
        if target == "":
            names = [routing_key] if routing_key in self._queues else []
        else:
            names = self._exchange(target).route(routing_key)
        for name in names:
            self._enqueue(self._queues[name], target, routing_key, message.body, props)

    def _expire(self) -> None:
        if not self._ttl_queues:
            return
        now = self.now()
        for queue in self._ttl_queues:
            if not queue.ready:
                continue
            limit = queue.ttl or 0.0
            while queue.ready and now - queue.ready[0].enqueued_at >= limit:
                self.dead_letter(queue, queue.ready.popleft(), "expired")

    def take(self, queue_name: str) -> _Message | None:
        with self._lock:
            self._expire()
            queue = self.queue(queue_name)
            while queue.ready:
                message = queue.ready.popleft()
                limit = queue.delivery_limit
                if limit is not None and message.deliveries > int(limit):
                    self.dead_letter(queue, message, "delivery_limit")
                    continue
                message.deliveries += 1
                return message
            return None

    def active(self, queue_name: str, consumer: MemoryConsumer) -> bool:
        """Whether ``consumer`` may receive messages: on a single-active-consumer queue, the oldest only."""
        queue = self._queues.get(queue_name)
        return queue is None or not queue.single_active or next(iter(queue.holders), None) is consumer

    def give_back(self, queue_name: str, messages: Sequence[_Message]) -> None:
        """Requeue unacknowledged messages at their original place, marked redelivered."""
        with self._lock:
            queue = self.queue(queue_name)
            merged = sorted([*queue.ready, *(replace(m, redelivered=True) for m in messages)],
                            key=lambda m: m.seq)
            queue.ready = deque(merged)
            self.arrived.notify_all()

    def reject(self, queue_name: str, message: _Message) -> None:
        with self._lock:
            self.dead_letter(self.queue(queue_name), message, "rejected")

    def delete(self, queues: Sequence[str], exchanges: Sequence[str]) -> None:
        with self._lock:
            for name in queues:
                for key in [key for key in self._recorded if key[1] == name]:
                    del self._recorded[key]
                self._logs.pop(name, None)
                queue = self._queues.pop(name, None)
                if queue in self._ttl_queues:
                    self._ttl_queues.remove(queue)
                for ex in self._exchanges.values():
                    if ex.bindings.pop(name, None) is not None:
                        ex.changed()
            for name in exchanges:
                self._exchanges.pop(name, None)

    def wait_step(self, remaining: float) -> float:
        """How long a consumer may sleep: not past a TTL queue's next expiry, which moves messages."""
        if self._ttl_queues:
            return min(remaining, 0.01)
        return remaining

    def depth(self, queue_name: str) -> int:
        with self._lock:
            if queue_name in self._logs:
                return 0  # as RabbitMQ: a stream reports no ready messages
            self._expire()
            return len(self.queue(queue_name).ready)

    def unacked(self, queue_name: str) -> int:
        """Messages of the queue delivered to a consumer and not yet acked (0 for a missing queue)."""
        with self._lock:
            queue = self._queues.get(queue_name)
            return 0 if queue is None else sum(consumer.unacked for consumer in queue.holders)

    # -- time ---------------------------------------------------------------------
    def now(self) -> float:
        """The broker's clock: ``clock()`` plus every ``advance()``."""
        return self._clock() + self._skew

    def advance(self, seconds: float) -> None:
        """Move the broker's clock forward: TTLs that run out meanwhile expire now (a retry comes back)."""
        if seconds < 0:
            raise ValueError(f"the clock only moves forward, not by {seconds}")
        with self._lock:
            self._skew += seconds
            self._expire()

    def next_expiry(self, queues: Iterable[str] | None = None) -> float | None:
        """Seconds until the next message of a TTL queue (of ``queues``, else any) expires; None when no
        TTL queue holds one."""
        with self._lock:
            self._expire()
            wanted = None if queues is None else set(queues)
            due = [queue.ready[0].enqueued_at + (queue.ttl or 0.0) for queue in self._ttl_queues
                   if queue.ready and (wanted is None or queue.name in wanted)]
            return None if not due else max(0.0, min(due) - self.now())

    def advance_to_next_expiry(self, queues: Iterable[str] | None = None) -> float:
        """``advance()`` just past the next TTL expiry among ``queues`` (else any); returns the seconds moved
        (0.0: nothing was waiting)."""
        with self._lock:
            step = self.next_expiry(queues)
            if step is None:
                return 0.0
            step += _TICK  # past it: float sums must not leave the head a hair short of its TTL
            self.advance(step)
            return step


class MemoryConsumer:
    def __init__(self, broker: MemoryBroker, queue: str, prefetch: int, limit: int | None = None) -> None:
        target = broker.queue(queue)  # NOT_FOUND before anything else
        self._left = limit  # deliveries this consumer may still take
        self._broker = broker
        self._queue = queue
        self._prefetch = prefetch
        self._unacked: dict[int, _Message] = {}
        self._pushed: deque[int] = deque()  # delivered to this consumer, not yet returned by next()
        self._tags = itertools.count(1)
        self._closed = False
        self._woken = False
        with broker.arrived:
            target.holders[self] = None

    def _fill(self) -> None:
        """Like basic_consume: the broker pushes up to ``prefetch`` unacked messages to this
        consumer (they count as delivered, and come back redelivered if it goes away)."""
        if self._closed:
            raise TransportError("consumer is closed")
        if not self._broker.active(self._queue, self):
            return
        while (not self._prefetch or len(self._unacked) < self._prefetch) and self._left != 0:
            message = self._broker.take(self._queue)
            if message is None:
                break
            if self._left is not None:
                self._left -= 1
            tag = next(self._tags)
            self._unacked[tag] = message
            self._pushed.append(tag)

    def get(self, timeout: float) -> Delivery | None:
        until = time.monotonic() + timeout
        with self._broker.arrived:
            while True:
                self._fill()
                if self._pushed:
                    tag = self._pushed.popleft()
                    message = self._unacked[tag]
                    return Delivery(tag, message.exchange, message.routing_key, message.body, message.properties,
                                    message.redelivered)
                remaining = until - time.monotonic()
                if self._woken or remaining <= 0:
                    self._woken = False
                    return None
                self._broker.arrived.wait(self._broker.wait_step(remaining))

    def take_ready(self) -> list[Delivery]:
        ready: list[Delivery] = []
        with self._broker.arrived:
            self._fill()
            while self._pushed:
                tag = self._pushed.popleft()
                message = self._unacked[tag]
                ready.append(Delivery(tag, message.exchange, message.routing_key, message.body, message.properties,
                                      message.redelivered))
        return ready

    def keep_alive(self) -> None:
        """Nothing to keep alive in memory."""

    @property
    def connected(self) -> bool:
        return not self._closed

    def is_empty(self) -> bool:
        self._fill()
        return not self._pushed

    @property
    def unacked(self) -> int:
        return len(self._unacked)

    def next(self, timeout: float) -> Delivery | None:
        return next_delivery(self, timeout)

    def wake(self) -> None:
        with self._broker.arrived:
            self._woken = True
            self._broker.arrived.notify_all()

    def ack(self, tag: int) -> None:
        if self._unacked.pop(tag, None) is None:
            raise TransportError(f"unknown delivery tag {tag} (PRECONDITION_FAILED)")

    def nack(self, tag: int, requeue: bool) -> None:
        message = self._unacked.pop(tag, None)
        if message is None:
            raise TransportError(f"unknown delivery tag {tag} (PRECONDITION_FAILED)")
        if tag in self._pushed:
            self._pushed.remove(tag)
        if requeue:
            self._broker.give_back(self._queue, [message])
        else:
            self._broker.reject(self._queue, message)

    def flush(self) -> None:
        return None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pushed.clear()
        with self._broker.arrived:  # what it held is back (or its own) before it stops counting as unacked
            if self._unacked:
                self._broker.give_back(self._queue, list(self._unacked.values()))
                self._unacked.clear()
            with contextlib.suppress(TransportError):  # the queue was deleted meanwhile
                self._broker.queue(self._queue).holders.pop(self, None)

    def release(self) -> None:
        self.close()  # gives back what it holds, then stops being the active consumer, atomically


class MemoryTransport:
    """The ``Transport`` over a ``MemoryBroker`` (a private one unless given)."""

    def __init__(self, broker: MemoryBroker | None = None) -> None:
        self.broker = broker if broker is not None else MemoryBroker()

    def declare_exchange(self, name: str, *, deadline: Deadline | None = None) -> None:
        self.broker.declare_exchange(name, "topic")

    def declare(self, topology: Topology, *, deadline: Deadline | None = None) -> None:
        broker = self.broker
        broker.declare_exchange(topology.exchange, "topic")
        broker.declare_exchange(topology.dead_letter_exchange, "fanout")
        parked = (topology.parked_queue,) if topology.parked_queue is not None else ()
        for spec in (topology.queue, topology.dead_letter_queue, *topology.retry_queues, *parked):
            broker.declare_queue(spec.name, spec.arguments)
        broker.bind(topology.dead_letter_exchange, topology.dead_letter_queue.name, "#")
        broker.record_bindings(topology.exchange, topology.queue.name, topology.bindings)
        shards = topology.shards
        if shards is not None:
            broker.declare_exchange(shards.exchange, "x-consistent-hash", SHARD_EXCHANGE_ARGUMENTS)
            for spec in shards.queues:
                broker.declare_queue(spec.name, spec.arguments)
                broker.bind(shards.exchange, spec.name, SHARD_WEIGHT)
            for pattern in shards.bindings:
                broker.bind_exchange(shards.exchange, topology.exchange, pattern)
                if shards.previous is not None:
                    broker.unbind_exchange(shards.previous, topology.exchange, pattern)
            broker.record_names(topology.exchange, topology.queue.name,
                                {shard_binding(p, shards.exchange) for p in shards.bindings})
            broker.declare_exchange(shards.presence, "fanout")

    def declare_listener(self, exchange: str, queue: QueueSpec, *, deadline: Deadline | None = None) -> None:
        self.broker.declare_exchange(exchange, "fanout")
        self.broker.declare_queue(queue.name, queue.arguments)  # (no expiry in memory: the process is the broker)
        self.broker.bind(exchange, queue.name, "")

    def declare_log(self, exchange: str, stream: QueueSpec, *, deadline: Deadline | None = None) -> None:
        self.broker.declare_exchange(exchange, "topic")
        try:
            self.broker.declare_queue(stream.name, stream.arguments)
        except ConfigurationError as exc:  # as on RabbitMQ: the log keeps its retention, and a warning says so
            log.warning("the event log %r exists with another retention (%s); it keeps its own", stream.name, exc)
        self.broker.bind(exchange, stream.name, "#")

    def publish(self, messages: Sequence[OutgoingMessage], *, deadline: Deadline | None = None) -> list[str]:
        unroutable: list[str] = []
        for message in messages:
            if not self.broker.publish(message) and message.mandatory:
                unroutable.append(message.properties.message_id or "")
        return unroutable

    def begin_publish(self, messages: Sequence[OutgoingMessage], *,
                      deadline: Deadline | None = None) -> PendingPublish:
        unroutable = self.publish(messages, deadline=deadline)  # stored at once: nothing to wait for
        return PendingPublish(lambda: unroutable)

    def consume(self, queue: str, prefetch: int, *, recover: bool = True, limit: int | None = None,
                deadline: Deadline | None = None, redeclare: Redeclare | None = None,
                offset: LogOffset | None = None) -> MemoryConsumer | MemoryLogConsumer:
        if offset is not None or self.broker.log(queue) is not None:
            return self.broker.read_log(queue, "next" if offset is None else offset, prefetch)
        return MemoryConsumer(self.broker, queue, prefetch, limit)

    def queue_depth(self, queue: str, *, deadline: Deadline | None = None) -> int:
        return self.broker.depth(queue)

    def queue_info(self, queue: str, *, deadline: Deadline | None = None) -> QueueInfo | None:
        info = self.broker.info(queue)
        return None if info is None else QueueInfo(queue, *info)

    def recorded_bindings(self, topology: Topology, *, deadline: Deadline | None = None) -> set[str]:
        return self.broker.recorded(topology.exchange, topology.queue.name)

    def prune_bindings(self, topology: Topology, patterns: Iterable[str], *,
                       deadline: Deadline | None = None) -> list[str]:
        return self.broker.prune(topology.exchange, topology.queue.name, set(patterns))

    def delete(self, topology: Topology, *, exchange: bool = False) -> None:
        self.broker.delete(topology_queues(topology), [topology.dead_letter_exchange, *topology_exchanges(topology)]
                           + ([topology.exchange] if exchange else []))

    def close(self) -> None:
        return None


_named: dict[str, MemoryBroker] = {}
_named_lock = threading.Lock()


def named_broker(name: str) -> MemoryBroker:
    """The process's broker called ``name`` (``memory://NAME``), made on first use; see the module docstring."""
    with _named_lock:
        broker = _named.get(name)
        if broker is None:
            broker = _named[name] = MemoryBroker()
        return broker


def drop_named_broker(name: str) -> bool:
    """Forget the broker called ``name``: the next ``memory://NAME`` gets a new, empty one (apps that hold
    the old one keep it). False when there was none."""
    with _named_lock:
        return _named.pop(name, None) is not None
