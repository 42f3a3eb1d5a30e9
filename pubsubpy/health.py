"""A worker's readiness, as a Kubernetes probe asks for it: is its consumer attached to the broker?

The consumer loop reports here (``attached``, ``detached``, ``turned``); the
metrics server's ``/healthz`` reads ``ready()`` from another thread. Ready means:
a consumer is attached to the queue on a live connection, and the loop has
turned within ``stale_after`` seconds (it turns at least every 0.2 s while
healthy, handlers running or not), so a wedged loop is not ready either. A
consumer paused because a handler's dependency is down is ready too (a restart
would not bring the dependency back); ``paused()`` lists why. A worker with shards
reports each shard's loop in a part of its own (``part``): ready needs every part
ready too, a standby shard (another worker still active on it) included.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from pubsubpy.transports.base import Consumer

__all__ = ["WorkerHealth"]


class WorkerHealth:
    def __init__(self, stale_after: float = 60.0) -> None:
        self._lock = threading.Lock()
        self._consumer: Consumer | None = None
        self._turned = 0.0
        self._stale_after = stale_after
        self._paused: Callable[[], tuple[str, ...]] = tuple
        self._trips: Callable[[], int] = int
        self.queue: str | None = None
        self._parts: dict[str, WorkerHealth] = {}  # a shard's loop: its queue -> its own health

    def part(self, queue: str) -> WorkerHealth:
        """The health of another loop of this worker (a shard's), which ``ready`` counts from now on."""
        child = WorkerHealth(self._stale_after)
        with self._lock:
            self._parts[queue] = child
        return child

    def drop_part(self, queue: str) -> None:
        with self._lock:
            self._parts.pop(queue, None)

    def pausing(self, paused: Callable[[], tuple[str, ...]], trips: Callable[[], int]) -> None:
        """Where the loop says which subscriptions paused it (their dependency is down), and how often."""
        self._paused, self._trips = paused, trips

    def pauses(self) -> int:
        """How many times the consumer paused (breaker trips) since the worker started."""
        return self._trips()

    def paused(self) -> tuple[str, ...]:
        """The subscriptions whose dependency is down, pausing the consumer (empty: consuming)."""
        return self._paused()

    def attached(self, consumer: Consumer, queue: str) -> None:
        with self._lock:
            self._consumer, self.queue = consumer, queue
            self._turned = time.monotonic()

    def detached(self) -> None:
        with self._lock:
            self._consumer = None

    def turned(self) -> None:
        self._turned = time.monotonic()

    def ready(self) -> tuple[bool, str]:
        """(ready, why) for a probe's answer."""
        paused = self._paused()
        if paused:  # waiting for a dependency is the worker doing its job: ready, not restarted
            return True, f"paused: a dependency of {', '.join(paused)} is down; probing one message at a time"
        with self._lock:
            consumer, turned = self._consumer, self._turned
        if consumer is None:
            return False, "no consumer: starting, reconnecting or stopped"
        if not consumer.connected:
            return False, f"consumer on {self.queue} lost its connection; reconnecting"
        idle = time.monotonic() - turned
        if idle > self._stale_after:
            return False, f"the consumer loop has not turned for {idle:.0f}s"
        with self._lock:
            parts = dict(self._parts)
        for queue, child in sorted(parts.items()):
            ok, why = child.ready()
            if not ok:
                return False, f"{queue}: {why}"
        shards = f" and {len(parts)} shard queue(s)" if parts else ""
        return True, f"consuming from {self.queue}{shards}"
