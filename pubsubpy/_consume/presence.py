"""Which workers of a service are alive, and which shards each should consume.

Every worker of a service with shards announces itself on the fanout exchange ``<service>.presence``
every ``ANNOUNCE_EVERY`` seconds and hears the others on a queue of its own (``<service>.presence.<id>``,
removed by the broker once nobody consumes it). A worker not heard from for ``EXPIRES_AFTER`` is gone; one
that stops says so (``leaving``) and is gone at once.

``assign`` maps shards to live workers: rendezvous hashing (each shard goes to the worker scoring highest
for it, so a join or a leave moves only the shards it must), bounded so no worker gets more than its fair
share rounded up. Every worker computes it from its own view; while views differ (a worker just joined,
or just died), two workers may both consume a shard: the queue's single active consumer is the fence.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence

from pubsubpy.deadline import Deadline
from pubsubpy.envelope import Properties
from pubsubpy.errors import TransportError
from pubsubpy.messages import Delivery, OutgoingMessage
from pubsubpy.topology import QueueSpec
from pubsubpy.transports.base import Consumer, Transport

__all__ = ["ANNOUNCE_EVERY", "EXPIRES_AFTER", "Presence", "assign", "new_worker_id", "shard_owners"]

log = logging.getLogger("pubsubpy.shards")

ANNOUNCE_EVERY = 2.0  # seconds between a worker's announcements
EXPIRES_AFTER = 6.0   # seconds without an announcement after which a worker counts as gone
_LISTENER_EXPIRES_MS = 60_000  # a dead worker's presence queue goes this long after its last consumer


def new_worker_id() -> str:
    """``host:pid:random``: unique per process start, readable in logs and in ``topology``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


def _score(worker: str, shard: int) -> int:
    return int.from_bytes(hashlib.blake2b(f"{worker}/{shard}".encode(), digest_size=8).digest(), "big")


def assign(shards: int, workers: Sequence[str]) -> dict[int, str]:
    """Each shard's owner among ``workers``: its highest-scoring worker that has fewer than
    ``ceil(shards / len(workers))`` shards yet. The same answer wherever the same workers are seen."""
    live = sorted(set(workers))
    if not live:
        return {}
    cap = -(-shards // len(live))
    load = dict.fromkeys(live, 0)
    owners: dict[int, str] = {}
    for shard in range(shards):
        for worker in sorted(live, key=lambda w: _score(w, shard), reverse=True):
            if load[worker] < cap:
                owners[shard] = worker
                load[worker] += 1
                break
    return owners


class Presence:
    """This worker's announcements and what it heard; owned by one thread (its consumer's)."""

    def __init__(self, transport: Transport, exchange: str, worker: str) -> None:
        self.transport = transport
        self.exchange = exchange
        self.worker = worker
        self.queue = QueueSpec(f"{exchange}.{worker}", {"x-expires": _LISTENER_EXPIRES_MS})
        self.seen: dict[str, float] = {}  # worker -> when last heard (monotonic)
        self.claims: dict[str, list[str]] = {}  # worker -> the shard queues it said it consumes
        self._consumer: Consumer | None = None
        self._announced = -ANNOUNCE_EVERY  # monotonic

    def _declare(self, deadline: Deadline | None) -> None:
        self.transport.declare_listener(self.exchange, self.queue, deadline=deadline)

    def open(self) -> None:
        """Declare the queue and consume it (a consumer that reconnects by itself); raises ``TransportError``."""
        if self._consumer is None:
            self._declare(Deadline.after(10.0))
            self._consumer = self.transport.consume(self.queue.name, 100, redeclare=self._declare)

    def live(self) -> list[str]:
        """This worker and every worker heard from within ``EXPIRES_AFTER``."""
        now = time.monotonic()
        for worker, heard in list(self.seen.items()):
            if now - heard > EXPIRES_AFTER:
                del self.seen[worker]
                self.claims.pop(worker, None)
                log.info("worker %s is gone (not heard from for %.0f s)", worker, EXPIRES_AFTER)
        return sorted({self.worker, *self.seen})

    def announce(self, shards: Sequence[str], *, leaving: bool = False, force: bool = False) -> None:
        """Say this worker is alive (and which shards it consumes), at most every ``ANNOUNCE_EVERY``."""
        now = time.monotonic()
        if not force and now - self._announced < ANNOUNCE_EVERY:
            return
        body = json.dumps({"worker": self.worker, "shards": sorted(shards), "leaving": leaving}).encode()
        message = OutgoingMessage(self.exchange, "", body, Properties(delivery_mode=1, app_id="pubsubpy-presence"))
        try:
            self.transport.publish([message], deadline=Deadline.after(5.0))
            self._announced = now
        except TransportError as exc:  # heard again at the next one; others may count us gone meanwhile
            log.warning("could not announce worker %s on %s: %s", self.worker, self.exchange, exc)

    def hear(self, timeout: float) -> None:
        """Read announcements for up to ``timeout`` seconds (returns early once one came)."""
        consumer = self._consumer
        if consumer is None:
            time.sleep(timeout)
            return
        delivery = consumer.get(timeout)
        while delivery is not None:
            self._heard(delivery)
            consumer.ack(delivery.tag)
            delivery = consumer.get(0)
        consumer.flush()

    def _heard(self, delivery: Delivery) -> None:
        try:
            said = json.loads(delivery.body)
            worker, leaving = str(said["worker"]), bool(said.get("leaving"))
            shards = [str(name) for name in said.get("shards", [])]
        except (ValueError, KeyError, TypeError):
            log.warning("ignored a malformed announcement on %s: %r", self.exchange, delivery.body[:200])
            return
        if worker == self.worker:
            return
        if leaving:
            if self.seen.pop(worker, None) is not None:
                log.info("worker %s is leaving", worker)
            self.claims.pop(worker, None)
            return
        if worker not in self.seen:
            log.info("worker %s joined", worker)
        self.seen[worker] = time.monotonic()
        self.claims[worker] = shards

    def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            consumer.close()


def shard_owners(transport: Transport, exchange: str) -> dict[str, list[str]]:
    """The shards each live worker says it consumes, heard for one announcement round (``topology``). A
    listener that never announces itself, so no worker counts it."""
    presence = Presence(transport, exchange, f"observer-{new_worker_id()}")
    try:
        presence.open()
        until = time.monotonic() + ANNOUNCE_EVERY + 0.5
        while (left := until - time.monotonic()) > 0:
            presence.hear(min(left, 0.5))
    except TransportError as exc:
        log.warning("could not hear the workers on %s: %s", exchange, exc)
    finally:
        presence.close()
    return dict(presence.claims)
