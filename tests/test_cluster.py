"""A 3-node RabbitMQ cluster (``scripts/cluster.sh up``): quorum queues lose nothing when a node goes away.

The node leading the service queue is stopped (``stop_app``) or killed (SIGKILL) while 5,000 messages are
published one confirmed publish at a time, while a drain or a worker consumes, and while messages wait in a
retry queue. Afterwards every confirmed message has been handled at least once and nothing unexpected was;
each test prints published / confirmed / handled / duplicates. Locally these tests skip when the cluster is
not up; under CI=true they fail (the test command brings it up).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pika
import pika.exceptions
import pytest

from pubsubpy import PubSub, PubSubError, Reject
from tests.conftest import IN_CI, wait_for
from tests.contract.events import ALL, BOOKING, BookingCreated

pytestmark = [pytest.mark.cluster, pytest.mark.slow]

NODES = ("pubsubpy1", "pubsubpy2", "pubsubpy3")
ROOT = Path(__file__).resolve().parent.parent
BASE = Path(os.environ.get("PUBSUBPY_CLUSTER_DIR", "/tmp/pubsubpy-cluster"))


def _port(node: str) -> int:
    return 5680 + int(node.removeprefix("pubsubpy"))


def _url(node: str) -> str:
    return f"amqp://guest:guest@127.0.0.1:{_port(node)}/%2F"


def _answers(node: str) -> bool:
    params = pika.URLParameters(_url(node))
    params.socket_timeout = params.stack_timeout = 3
    params.connection_attempts = 1
    try:
        pika.BlockingConnection(params).close()
        return True
    except (pika.exceptions.AMQPError, OSError):
        return False


def _ctl(node: str, *args: str, timeout: float = 60) -> str:
    return subprocess.run(["rabbitmqctl", "-q", "-n", f"{node}@localhost", *args], check=True,
                          capture_output=True, text=True, timeout=timeout).stdout


class Cluster:
    """The three local nodes, and what the tests do to them."""

    def urls(self, first: str) -> str:
        """All three URLs, ``first`` first: the client connects there and must fail over when it goes."""
        return ",".join(_url(node) for node in (first, *(n for n in NODES if n != first)))

    def leader(self, queue: str) -> str:
        for node in NODES:
            if not _answers(node):
                continue
            for line in _ctl(node, "list_queues", "--no-table-headers", "name", "leader").splitlines():
                name, _, leader = line.partition("\t")
                if name == queue and leader.strip():
                    return leader.strip().removesuffix("@localhost")
        raise AssertionError(f"no node reports a leader for {queue}")

    def stop(self, node: str) -> None:
        _ctl(node, "stop_app")

    def kill(self, node: str) -> None:
        pid = int((BASE / node / "pid").read_text().strip())
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not _answers(node), timeout=20, what=f"{node} to die")

    def heal(self) -> None:
        """All three nodes running and clustered again (after a stop or a kill)."""
        for node in NODES:
            if not _answers(node):
                try:
                    _ctl(node, "start_app", timeout=60)
                except subprocess.SubprocessError:  # the node itself is gone (killed): start it again
                    subprocess.run(["bash", str(ROOT / "scripts" / "cluster.sh"), "up"], check=True,
                                   capture_output=True, timeout=300)
        wait_for(lambda: all(_answers(node) for node in NODES), timeout=120, step=0.5, what="three nodes")


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    if not all(_answers(node) for node in NODES):
        message = "the 3-node cluster is not up (scripts/cluster.sh up)"
        if IN_CI:
            pytest.fail(f"{message} and CI=true: cluster tests must run in CI")
        pytest.skip(message)
    yield Cluster()


@dataclass
class Tally:
    """What happened to each message id: the figures every test here prints."""

    published: int = 0
    confirmed: set[int] = field(default_factory=set)
    failed: dict[int, str] = field(default_factory=dict)
    handled: Counter[int] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, event: BookingCreated) -> None:
        with self.lock:
            self.handled[event.id] += 1

    def distinct(self) -> int:
        with self.lock:
            return len(self.handled)

    def report(self, what: str) -> None:
        duplicates = sum(self.handled.values()) - len(self.handled)
        lost = len(self.confirmed - set(self.handled))
        if self.failed:
            print("first failures:", sorted(self.failed.items())[:2], sorted(self.failed.items())[-1:])
        print(f"\n{what}: published={self.published} confirmed={len(self.confirmed)} "
              f"raised={len(self.failed)} handled={len(self.handled)} duplicates={duplicates} lost={lost}")

    def check(self, attempted: set[int]) -> None:
        assert self.confirmed - set(self.handled) == set(), "a confirmed message was never handled"
        assert set(self.handled) <= attempted, "a message nobody published was handled"
        assert self.confirmed | set(self.failed) == attempted, "every publish either confirmed or raised"


def _app(urls: str, service: str, tally: Tally, **options: object) -> PubSub:
    app = PubSub(urls, schemas=ALL, service_name=service, model_exchange=f"{service}-models",  # type: ignore[arg-type]
                 queue_type="quorum", connect_timeout=5, confirm_timeout=30, retry_connect_delay=0.2,
                 **options)

    @app.subscribe("Booking.created")
    def on_created(event: BookingCreated) -> None:
        tally.record(event)

    return app


def _service(label: str) -> str:
    return f"cl-{label}-{os.getpid()}-{time.monotonic_ns() % 10**8}"


def _cleanup(app: PubSub) -> None:
    from pubsubpy.testing import delete_topology
    try:
        delete_topology(app)
    finally:
        app.close()


def _lose(cluster: Cluster, how: str, node: str) -> None:
    (cluster.kill if how == "kill" else cluster.stop)(node)


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_confirmed_publishes_survive_losing_the_queue_leader(cluster: Cluster, how: str) -> None:
    service = _service(f"pub-{how}")
    tally = Tally()
    probe = _app(cluster.urls(NODES[0]), service, tally)
    probe.declare()
    leader = cluster.leader(f"{service}.events")
    probe.close()
    app = _app(cluster.urls(leader), service, tally)  # connected to the leader: it must fail over
    total = 5000

    def publish() -> None:
        for i in range(total):
            tally.published += 1
            try:
                app.publish_model_event(BOOKING, "created", {"id": i, "guest": "g"})
                tally.confirmed.add(i)
            except PubSubError as exc:  # never silent: counted, and its message may or may not be there
                tally.failed[i] = repr(exc)

    publisher = threading.Thread(target=publish)
    publisher.start()
    try:
        wait_for(lambda: len(tally.confirmed) >= total // 2, timeout=120, what="half the publishes")
        _lose(cluster, how, leader)
        publisher.join(timeout=240)
        assert not publisher.is_alive(), "publishing hung after the leader went away"
        assert cluster.leader(f"{service}.events") != leader, "a new leader took over"
        result = app.drain(timeout=120)
        tally.report(f"publish, leader {how}")
        assert result.dead_lettered == 0
        tally.check(set(range(total)))
        recovered = set(range(total - 1000, total))
        assert recovered <= tally.confirmed, "publishing recovers after the failover (the last 1,000 all confirm)"
    finally:
        cluster.heal()
        _cleanup(app)


@pytest.mark.parametrize("how", ["stop", "kill"])
def test_consuming_survives_losing_the_queue_leader(cluster: Cluster, how: str) -> None:
    """``stop``: a drain is running when the leader stops; ``kill``: a worker (``run``) when it is killed."""
    service = _service(f"con-{how}")
    tally = Tally()
    probe = _app(cluster.urls(NODES[0]), service, tally)
    probe.declare()
    leader = cluster.leader(f"{service}.events")
    total = 2000
    probe.publish_many([(BOOKING, "created", {"id": i, "guest": "g"}) for i in range(total)])
    tally.published = total
    tally.confirmed = set(range(total))
    probe.close()
    app = _app(cluster.urls(leader), service, tally, prefetch=50)
    done: list[object] = []
    drains: list[str] = []
    stop = threading.Event()

    def consume() -> None:
        try:
            if how == "stop":
                while tally.distinct() < total and not stop.is_set():  # a drain ends when the queue looks
                    drains.append(app.drain(timeout=60).stopped_by)  # empty, which a failover can make it
            else:
                app.run(stop=stop)
            done.append("ok")
        except BaseException as exc:  # reported by the assertion below
            done.append(exc)

    consumer = threading.Thread(target=consume)
    slow = _slowing(tally, 0.001)
    consumer.start()
    try:
        wait_for(lambda: tally.distinct() >= total // 4, timeout=120, what="a quarter handled")
        _lose(cluster, how, leader)
        wait_for(lambda: tally.distinct() >= total, timeout=180, step=0.2, what="every message handled")
        stop.set()
        consumer.join(timeout=90)
        assert not consumer.is_alive() and done == ["ok"], done
        consumer_kind = f"drain ({len(drains)} calls: {drains})" if how == "stop" else "worker"
        tally.report(f"{consumer_kind}, leader {how}")
        tally.check(set(range(total)))
    finally:
        stop.set()
        slow()
        cluster.heal()
        _cleanup(app)


def _slowing(tally: Tally, seconds: float) -> Callable[[], None]:
    """Make each handler run take ``seconds`` so consuming is still going when the node goes; returns undo."""
    original = tally.record

    def record(event: BookingCreated) -> None:
        time.sleep(seconds)  # handler work, not a wait for a condition
        original(event)

    tally.record = record  # type: ignore[method-assign]
    return lambda: setattr(tally, "record", original)


def test_messages_in_a_retry_queue_survive_losing_its_leader(cluster: Cluster) -> None:
    service = _service("retry")
    tally = Tally()
    attempts: Counter[int] = Counter()
    lock = threading.Lock()
    app = PubSub(cluster.urls(NODES[0]), schemas=ALL, service_name=service,  # type: ignore[arg-type]
                 model_exchange=f"{service}-models", queue_type="quorum", connect_timeout=5,
                 retry_connect_delay=0.2, retry_delay=3.0, max_attempts=3, retry_jitter=False)

    @app.subscribe("Booking.created")
    def fails_first(event: BookingCreated) -> None:
        with lock:
            attempts[event.id] += 1
            first = attempts[event.id] == 1
        if event.id % 50 == 0:
            raise Reject("every 50th goes to the dead-letter queue, which must keep it too")
        if first:
            raise RuntimeError("first attempt fails: the message waits 3 s in the retry queue")
        tally.record(event)

    app.declare()
    retry = f"{service}.retry.3000ms"
    total = 500
    app.publish_many([(BOOKING, "created", {"id": i, "guest": "g"}) for i in range(total)])
    tally.published = total
    tally.confirmed = set(range(total))
    leader = cluster.leader(retry)
    stop = threading.Event()
    worker = threading.Thread(target=app.run, kwargs={"stop": stop})
    worker.start()
    try:
        wait_for(lambda: len(attempts) >= total, timeout=60, what="every first attempt to fail into the retry queue")
        assert app.transport.queue_depth(retry) > 0, "messages are waiting in the retry queue"
        cluster.kill(leader)  # while messages sit in the retry queue and start moving back
        rejected = set(range(0, total, 50))
        wait_for(lambda: tally.distinct() >= total - len(rejected), timeout=180, step=0.2,
                 what="every message handled on retry")
        stop.set()
        worker.join(timeout=90)
        assert not worker.is_alive()
        tally.confirmed -= rejected  # confirmed, and dead-lettered on purpose: checked below
        tally.report("retry queue, its leader killed")
        tally.check(set(range(total)) - rejected)
        assert {int(letter.payload["id"]) for letter in app.list_dead_letters()} == rejected
    finally:
        stop.set()
        cluster.heal()
        _cleanup(app)


def test_a_worker_keeps_consuming_while_its_quorum_queue_changes_leader(cluster: Cluster) -> None:
    """The queue's leader moves (``rabbitmq-queues delete_member`` of the leader, then ``add_member``) under a
    running worker connected to that node: it keeps consuming, and stays ready."""
    service = _service("leader-move")
    tally = Tally()
    probe = _app(cluster.urls(NODES[0]), service, tally)
    probe.declare()
    queue = f"{service}.events"
    leader = cluster.leader(queue)
    app = _app(cluster.urls(leader), service, tally, prefetch=50)
    stop = threading.Event()
    results: list[object] = []
    worker = threading.Thread(target=lambda: results.append(app.run(stop=stop)))
    worker.start()
    try:
        wait_for(lambda: app.health.ready()[0], timeout=60, what="the worker to be ready")
        probe.publish_many([(BOOKING, "created", {"id": i, "guest": "g"}) for i in range(500)])
        wait_for(lambda: tally.distinct() >= 100, timeout=60, what="some handled")
        other = next(node for node in NODES if node != leader)
        subprocess.run(["rabbitmq-queues", "-q", "-n", f"{other}@localhost", "delete_member", "--vhost", "/",
                        queue, f"{leader}@localhost"], check=True, capture_output=True, timeout=60)
        wait_for(lambda: cluster.leader(queue) != leader, timeout=60, what="another leader")
        wait_for(lambda: tally.distinct() >= 500, timeout=120, what="the first 500 handled")
        subprocess.run(["rabbitmq-queues", "-q", "-n", f"{other}@localhost", "add_member", "--vhost", "/",
                        queue, f"{leader}@localhost"], check=True, capture_output=True, timeout=60)
        probe.publish_many([(BOOKING, "created", {"id": i, "guest": "g"}) for i in range(500, 1000)])
        wait_for(lambda: tally.distinct() >= 1000, timeout=120, what="the 500 published after the move")
        assert app.health.ready()[0], app.health.ready()
        assert worker.is_alive(), "the worker gave up"
        tally.published = 1000
        tally.confirmed = set(range(1000))
        tally.report(f"worker, the leader moved from {leader}")
        tally.check(set(range(1000)))
    finally:
        stop.set()
        worker.join(60)
        probe.close()
        _cleanup(app)


@pytest.mark.parametrize("down", NODES)
def test_declare_publish_and_drain_with_any_one_node_down(cluster: Cluster, down: str) -> None:
    service = _service(f"down-{down}")
    tally = Tally()
    app = _app(cluster.urls(down), service, tally)  # the first URL is the node that is down
    cluster.stop(down)
    try:
        app.declare()
        app.publish_model_event(BOOKING, "created", {"id": 1, "guest": "g"})
        assert app.drain(timeout=60).handled == 1
        assert dict(tally.handled) == {1: 1}
    finally:
        cluster.heal()
        _cleanup(app)


def test_the_script_starts_a_cluster_whose_nodes_all_died_without_down(cluster: Cluster) -> None:
    """CI of session 5 failed here: all three nodes SIGKILLed (a reboot, a killed session) leave their data behind,
    and the first node restarted on it waited minutes for peers that were not coming ("did not start" after 120 s).
    ``cluster.sh up`` now starts them afresh, and the cluster works again for the tests after this one."""
    for node in NODES:
        cluster.kill(node)
    began = time.monotonic()
    up = subprocess.run(["bash", str(ROOT / "scripts" / "cluster.sh"), "up"], capture_output=True, text=True,
                        timeout=300)
    took = time.monotonic() - began
    assert up.returncode == 0, up.stderr[-2000:]
    assert all(_answers(node) for node in NODES)
    assert took < 100, f"took {took:.0f}s: a node waited for its old peers"
    print(f"\n[stale cluster] all three nodes killed; scripts/cluster.sh up: a fresh cluster in {took:.0f}s")


def test_the_event_log_keeps_every_confirmed_publish_when_its_leader_stops(cluster: Cluster) -> None:
    """event_log on a cluster: the stream is replicated; its leader stops while 2,000 events are published one
    confirmed publish at a time, and a replay afterwards finds every confirmed one."""
    service = _service("log-leader")
    tally = Tally()
    publisher = _log_publisher(cluster.urls(NODES[0]), service)
    publisher.publish_model_event(BOOKING, "created", {"id": -1, "guest": "first"})  # declares the log
    leader = cluster.leader(f"{service}-models.log")
    publisher.close()
    publisher = _log_publisher(cluster.urls(leader), service)
    total = 2000

    def publish() -> None:
        for i in range(total):
            tally.published += 1
            try:
                publisher.publish_model_event(BOOKING, "created", {"id": i, "guest": "g"})
                tally.confirmed.add(i)
            except PubSubError as exc:
                tally.failed[i] = repr(exc)

    writer = threading.Thread(target=publish)
    writer.start()
    reader = _app(cluster.urls(NODES[0] if leader != NODES[0] else NODES[1]), service, tally)
    try:
        wait_for(lambda: len(tally.confirmed) >= total // 2, timeout=120, what="half the publishes")
        cluster.stop(leader)
        writer.join(timeout=240)
        assert not writer.is_alive(), "publishing hung after the log's leader went away"
        result = reader.replay(since="1h")
        tally.report("event log, leader stopped")
        assert result.dead_lettered == 0
        assert tally.confirmed - set(tally.handled) == set(), "a confirmed publish is missing from the log"
        assert set(range(total - 500, total)) <= tally.confirmed, "publishing recovers after the failover"
    finally:
        cluster.heal()
        _cleanup(reader)
        publisher.close()
        _delete_queue(cluster, f"{service}-models.log")


def test_with_the_event_log_on_a_publish_the_log_cannot_store_fails(cluster: Cluster) -> None:
    """The log is a dependency of every publisher of its exchange (whatever their own event_log says): with two of
    three nodes stopped the stream has no majority, and a publish that only the log would take is not confirmed:
    it raises, as any unconfirmed publish does. On an exchange without a log the same publish, routed nowhere, is
    confirmed at once."""
    service = _service("log-quorum")
    with_log = _log_publisher(cluster.urls(NODES[0]), service, confirm_timeout=5, connection_attempts=1)
    with_log.publish_model_event(BOOKING, "created", {"id": 0, "guest": "g"})
    without = _log_publisher(cluster.urls(NODES[0]), f"{service}-nolog", event_log=None, on_unroutable="ignore",
                             confirm_timeout=5, connection_attempts=1)
    without.publish_model_event(BOOKING, "created", {"id": 0, "guest": "g"})  # declares its exchange
    try:
        cluster.stop(NODES[1])
        cluster.stop(NODES[2])
        started = time.monotonic()
        with pytest.raises(PubSubError) as refused:
            with_log.publish_model_event(BOOKING, "created", {"id": 1, "guest": "g"})
        print(f"\nwith the log and no majority: {type(refused.value).__name__} after "
              f"{time.monotonic() - started:.1f}s: {refused.value}")
        without.publish_model_event(BOOKING, "created", {"id": 2, "guest": "g"})  # confirmed (routed nowhere)
    finally:
        cluster.heal()
        with_log.close()
        without.close()
        _delete_queue(cluster, f"{service}-models.log")
        _delete_exchange(cluster, f"{service}-nolog-models")


def _log_publisher(urls: str, service: str, **options: object) -> PubSub:
    """A publish-only app on ``<service>-models`` with the event log on (``event_log=None`` in ``options``: off)."""
    options.setdefault("event_log", "1D")
    return PubSub(urls, schemas=ALL, model_exchange=f"{service}-models", connect_timeout=5,  # type: ignore[arg-type]
                  retry_connect_delay=0.2, **options)


def _delete_queue(cluster: Cluster, name: str, exchange: bool = False) -> None:
    for node in NODES:
        if _answers(node):
            connection = pika.BlockingConnection(pika.URLParameters(_url(node)))
            try:
                channel = connection.channel()
                channel.exchange_delete(name) if exchange else channel.queue_delete(name)
            finally:
                connection.close()
            return


def _delete_exchange(cluster: Cluster, name: str) -> None:
    _delete_queue(cluster, name, exchange=True)
