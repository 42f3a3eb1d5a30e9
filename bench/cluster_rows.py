"""Cluster rows: confirmed publish and consuming on a 3-node quorum queue against a single-node classic queue.

Four ``PubSub`` apps, identical but for the broker URL and ``queue_type`` (``telemetry=False``, the
same payload, the same bound durable queue, every publish confirmed and persistent, prefetch 1000):

- classic, 1 node: the broker at 127.0.0.1:5672, ``queue_type="classic"``: the baseline of every row;
- quorum, 1 node: the same broker, ``queue_type="quorum"``: what the queue type costs, no replication;
- quorum, 3 nodes: the cluster at 127.0.0.1:5681-5683 (``scripts/cluster.sh up``), the three URLs
  comma-separated, ``queue_type="quorum"``: the client connects to the first, where the queue is
  declared and so led (quorum queues are placed ``client-local`` by default), and every message is
  written on a majority of the three nodes before it is confirmed;
- classic on cluster node 1 (control): a classic queue on 127.0.0.1:5681, not replicated: a node's
  own speed, told apart from what replication costs.

Each round runs every configuration in turn, for each kind of work: ``count`` single
``publish_model_event`` calls; one ``publish_many`` of ``5 * count`` events; consuming ``consumed``
messages filled beforehand (untimed). After each publish run the queue must hold every message sent,
and is purged (untimed). Consuming is timed on the worker (``run()``, a no-op handler, concurrency 1,
prefetch 1000 as a drain's), not on ``drain()``: on a quorum queue a drain can return while messages
are still on their way to it (the passive ``queue.declare`` it asks "empty?" with can answer 0 ready
before deliveries already checked out to its consumer arrive), so it cannot be timed to the last
message. Skipped, with the reason, when the cluster is not up.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import pika

from bench.broker_rows import stored
from bench.common import BODY, MODEL, PAYLOAD, ROUTING_KEY, URL, Booking, Row, rate, unique
from bench.worker_rows import _Finish
from pubsubpy import PubSub
from pubsubpy.messages import DrainResult
from pubsubpy.testing import delete_topology

PORTS = (5681, 5682, 5683)
NODE_URLS = [f"amqp://guest:guest@127.0.0.1:{port}/%2F" for port in PORTS]
CLUSTER_URL = ",".join(NODE_URLS)
PREFETCH = 1000  # a drain's default window, set explicitly for the worker (its default at concurrency 1 is 4)
PERSISTENT = pika.BasicProperties(content_type="application/json", delivery_mode=2, type=f"{MODEL}.updated")


def _connect(url: str) -> pika.BlockingConnection:
    params = pika.URLParameters(url)
    params.socket_timeout = params.blocked_connection_timeout = 5
    params.stack_timeout = 10
    params.connection_attempts = 1
    return pika.BlockingConnection(params)


def unavailable() -> str | None:
    """Why the cluster rows cannot run (a node does not answer, or the nodes are not one cluster), or None."""
    for url, port in zip(NODE_URLS, PORTS, strict=True):
        try:
            _connect(url).close()
        except pika.exceptions.AMQPError as exc:
            return f"the node at 127.0.0.1:{port} does not answer ({type(exc).__name__})"
    probe = unique("cluster-probe")  # an exchange declared on node 1 exists on the others only if clustered
    first = _connect(NODE_URLS[0])
    try:
        first.channel().exchange_declare(probe, "fanout", auto_delete=False)
        for url, port in zip(NODE_URLS[1:], PORTS[1:], strict=True):
            other = _connect(url)
            try:
                other.channel().exchange_declare(probe, "fanout", passive=True)
            except pika.exceptions.ChannelClosedByBroker:
                return f"the node at 127.0.0.1:{port} is not clustered with 127.0.0.1:{PORTS[0]}"
            finally:
                if other.is_open:
                    other.close()
    finally:
        first.channel().exchange_delete(probe)
        first.close()
    return None


@dataclass
class _Config:
    label: str
    url: str
    queue_type: Literal["classic", "quorum"]
    app: PubSub = field(init=False)
    single: list[float] = field(default_factory=list)
    many: list[float] = field(default_factory=list)
    consume: list[float] = field(default_factory=list)
    finish: _Finish = field(default_factory=_Finish)

    def __post_init__(self) -> None:
        self.app = PubSub(self.url, schemas=[Booking], model_exchange=unique("x"), service_name=unique("svc"),
                          on_unroutable="ignore", telemetry=False, queue_type=self.queue_type, prefetch=PREFETCH)
        finish = self.finish

        @self.app.subscribe("Booking.*")
        def on_booking(event: Booking) -> None:
            finish.hit()

        self.app.declare()

    @property
    def node_url(self) -> str:
        """The node the app talks to (the first of its URLs)."""
        return self.url.split(",")[0]

    @property
    def queue(self) -> str:
        return f"{self.app.settings.service_name}.events"

    def _published(self, count: int, work: Callable[[], object]) -> float:
        """Messages per second of ``work``; then the queue must hold all ``count``, and is purged."""
        measured = rate(count, work)
        stored(self.queue, count, self.node_url)
        connection = _connect(self.node_url)
        try:
            connection.channel().queue_purge(self.queue)
        finally:
            connection.close()
        return measured

    def publish_single(self, count: int) -> None:
        self.single.append(self._published(count, lambda: [
            self.app.publish_model_event(MODEL, "updated", PAYLOAD) for _ in range(count)]))

    def publish_many(self, count: int) -> None:
        events = [(MODEL, "updated", PAYLOAD)] * count
        self.many.append(self._published(count, lambda: self.app.publish_many(events)))

    def consume_once(self, count: int) -> None:
        """Fill the queue (untimed), run the worker until its handler returned ``count`` times, stop it;
        timed from ``run()`` to the last handler's return, as in worker_rows.py."""
        _fill(self.node_url, self.app.settings.model_exchange, count)
        self.finish.reset(count)
        stop = threading.Event()
        outcome: list[DrainResult | BaseException] = []

        def work() -> None:
            try:
                outcome.append(self.app.run(stop=stop))
            except BaseException as exc:  # reported below, on the bench's thread
                outcome.append(exc)
                self.finish.done.set()

        started = time.perf_counter()
        thread = threading.Thread(target=work, name=f"bench-cluster-{self.label}", daemon=True)
        thread.start()
        finished = self.finish.done.wait(600)
        stop.set()
        thread.join(timeout=60)
        result = outcome[0] if outcome else None
        if thread.is_alive() or isinstance(result, BaseException) or not finished or result is None \
                or result.handled != count:
            raise RuntimeError(f"cluster consume ({self.label}): {self.finish.seen} of {count} handled, "
                               f"worker result: {result!r}, stopped: {not thread.is_alive()}")
        stored(self.queue, 0, self.node_url)  # every message acked
        self.consume.append(count / (self.finish.at - started))


def _fill(url: str, exchange: str, count: int) -> None:
    """``count`` copies of the payload through ``exchange`` (its queue bound), persistent, the last confirmed."""
    connection = _connect(url)
    try:
        ch = connection.channel()
        for _ in range(count - 1):
            ch.basic_publish(exchange, ROUTING_KEY, BODY, PERSISTENT)
        ch.confirm_delivery()
        ch.basic_publish(exchange, ROUTING_KEY, BODY, PERSISTENT)
    finally:
        connection.close()


def rows(count: int, consumed: int, rounds: int) -> list[Row]:
    configs: list[_Config] = []
    try:
        configs.append(_Config("classic, 1 node", URL, "classic"))
        configs.append(_Config("quorum, 1 node", URL, "quorum"))
        configs.append(_Config("quorum, 3 nodes", CLUSTER_URL, "quorum"))
        configs.append(_Config("classic on cluster node 1", NODE_URLS[0], "classic"))
        for _ in range(rounds):  # each kind of work on every configuration in turn
            for config in configs:
                config.publish_single(count)
            for config in configs:
                config.publish_many(count * 5)
            for config in configs:
                config.consume_once(consumed)
    finally:
        for config in configs:
            delete_topology(config.app)
    classic, quorum1, quorum3, control = configs
    result: list[Row] = []
    for kind, attr, note in (("publish", "single", f"each confirmed, {count} per run"),
                             ("publish_many", "many", f"{count * 5} per call"),
                             ("consume", "consume", f"worker, prefetch {PREFETCH}, {consumed} per run")):
        for ours, versus, extra in ((quorum3, "3-node quorum", ""), (quorum1, "1-node quorum", ""),
                                    (control, "classic on node 1", "control: not replicated; ")):
            result.append(Row(f"cluster: {kind}: {versus} vs 1-node classic", "msg/s", ours=getattr(ours, attr),
                              baseline=getattr(classic, attr), note=f"{extra}{note}; no aim set"))
    return result


def all_rows(quick: bool, rounds: int, step: Callable[[str], None] = lambda _label: None) -> list[Row]:
    reason = unavailable()
    if reason is not None:
        print(f"skipping the cluster rows: {reason} (scripts/cluster.sh up starts the 3-node cluster, "
              "127.0.0.1:5681-5683)", file=sys.stderr)
        return []
    step("cluster: quorum vs classic")
    return rows(300 if quick else 2000, 2000 if quick else 10000, rounds)
