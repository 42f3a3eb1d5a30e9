"""shards=N (issue 29): ordered subscriptions fed by shard queues, spread between live workers, handed over
without reordering. The memory broker's side here; the worker processes on RabbitMQ in test_shards_rabbitmq."""

from __future__ import annotations

import collections
import itertools

import pytest

from pubsubpy import ModelEvent, PubSub
from pubsubpy._consume.presence import assign
from pubsubpy.cli._pruning import declare_and_prune
from pubsubpy.envelope import Properties
from pubsubpy.testing import MemoryInbox
from pubsubpy.transports.base import OutgoingMessage
from pubsubpy.transports.memory import MemoryBroker, MemoryTransport

ORDER = "shop.models.Order"


class OrderUpdated(ModelEvent, model=ORDER, event="updated", key="id", sequence="version", register=False):
    id: int
    version: int


def _ignore(event: OrderUpdated) -> None:
    pass


def _app(broker: MemoryBroker, **options: object) -> PubSub:
    return PubSub("memory://", transport=MemoryTransport(broker), schemas=[OrderUpdated], model_exchange="shop",
                  service_name="billing", **options)  # type: ignore[arg-type]


def test_the_topology_sends_ordered_patterns_through_the_shards_and_the_rest_to_the_service_queue() -> None:
    app = _app(MemoryBroker(), shards=4)
    app.subscribe("Order.*", ordered=True)(_ignore)
    app.subscribe("Order.updated")(_ignore)
    app.subscribe("Invoice.*")(_ignore)
    topology = app.topology()
    assert topology.bindings == {"Order.updated", "Invoice.*"}
    assert topology.shards is not None
    assert topology.shards.exchange == "billing.shards" and topology.shards.bindings == {"Order.*"}
    assert [q.name for q in topology.shards.queues] == [f"billing.shard.{n}" for n in range(4)]
    assert all(q.arguments["x-single-active-consumer"] is True for q in topology.shards.queues)
    assert _app(MemoryBroker(), shards=0).topology().shards is None


def test_without_ordered_subscriptions_shards_change_nothing() -> None:
    app = _app(MemoryBroker(), shards=4)
    app.subscribe("Order.*")(_ignore)
    assert app.topology().shards is None and app.topology().bindings == {"Order.*"}


def test_each_handler_runs_once_per_event_and_one_key_always_lands_in_one_shard() -> None:
    broker = MemoryBroker()
    app = _app(broker, shards=4)
    ordered: list[tuple[int, int]] = []
    plain: list[tuple[int, int]] = []

    @app.subscribe("Order.updated", ordered=True)
    def on_ordered(event: OrderUpdated) -> None:
        ordered.append((event.id, event.version))

    @app.subscribe("Order.*")
    def on_plain(event: OrderUpdated) -> None:
        plain.append((event.id, event.version))

    app.declare()
    for version, key in itertools.product(range(1, 6), range(20)):
        app.publish_model_event(ORDER, "updated", {"id": key, "version": version})
    depths = {f"billing.shard.{n}": broker.depth(f"billing.shard.{n}") for n in range(4)}
    assert sum(depths.values()) == 100 and sum(1 for d in depths.values() if d) > 1, depths
    assert broker.depth("billing.events") == 100
    result = app.drain(timeout=10)
    assert result.handled == 200 and result.dead_lettered == 0 and result.deferred == 0, result
    assert sorted(ordered) == sorted(plain) == sorted(itertools.product(range(20), range(1, 6)))
    for key in range(20):
        assert [v for k, v in ordered if k == key] == [1, 2, 3, 4, 5]


def test_a_key_only_the_shards_subscribe_is_acked_from_the_service_queue_without_running() -> None:
    """A service switched to shards keeps its old binding on the service queue until `declare --prune`:
    those copies are acked there, never deferred or dead-lettered, and the shard's copy runs once."""
    broker = MemoryBroker()
    before = _app(broker)
    before.subscribe("Order.updated", ordered=True)(_ignore)
    before.declare()
    app = _app(broker, shards=2)
    runs: list[int] = []

    @app.subscribe("Order.updated", ordered=True, idempotent=True)
    def on_order(event: OrderUpdated) -> None:
        runs.append(event.id)

    app.use_inbox(MemoryInbox())
    app.declare()
    app.publish_model_event(ORDER, "updated", {"id": 7, "version": 1})
    assert broker.depth("billing.events") == 1
    result = app.drain(timeout=10)
    assert runs == [7] and result.dead_lettered == 0 and result.deferred == 0, result
    assert app.stale_bindings() == ["Order.updated"]


def test_a_single_active_consumer_queue_feeds_one_consumer_and_a_release_returns_what_it_held_in_order() -> None:
    broker = MemoryBroker()
    transport = MemoryTransport(broker)
    broker.declare_queue("q", {"x-single-active-consumer": True})
    for n in range(6):
        broker.publish(OutgoingMessage("", "q", str(n).encode(), Properties()))
    first = transport.consume("q", 3)
    standby = transport.consume("q", 10)
    taken = [first.get(0) for _ in range(3)]
    assert [d.body for d in taken if d is not None] == [b"0", b"1", b"2"]
    assert standby.get(0) is None  # not active while the first one is
    first.ack(taken[0].tag)  # type: ignore[union-attr]
    first.release()
    got = [standby.get(0) for _ in range(5)]
    assert [d.body for d in got if d is not None] == [b"1", b"2", b"3", b"4", b"5"]


@pytest.mark.parametrize("workers", [1, 2, 3, 5, 8])
def test_assign_gives_every_shard_one_owner_and_no_worker_more_than_its_fair_share(workers: int) -> None:
    live = [f"host:{n}:abc" for n in range(workers)]
    owners = assign(8, live)
    assert sorted(owners) == list(range(8)) and set(owners.values()) <= set(live)
    load = collections.Counter(owners.values())
    assert max(load.values()) <= -(-8 // workers)
    assert assign(8, list(reversed(live))) == owners  # the same answer from any worker's view


def test_assign_moves_few_shards_when_a_worker_joins() -> None:
    live = [f"host:{n}:abc" for n in range(3)]
    before = assign(16, live)
    after = assign(16, [*live, "host:9:new"])
    moved = [shard for shard in before if before[shard] != after[shard]]
    assert {after[shard] for shard in moved} - {"host:9:new"} <= set(live)
    assert len(moved) <= 8, moved  # the newcomer's share (4) and a few knock-on moves, not a reshuffle


def test_a_worker_on_memory_takes_every_shard_and_its_health_covers_them() -> None:
    from pubsubpy.health import WorkerHealth
    from tests.conftest import running_worker, wait_for

    broker = MemoryBroker()
    app = _app(broker, shards=3)
    applied: list[tuple[int, int]] = []

    @app.subscribe("Order.updated", ordered=True)
    def on_order(event: OrderUpdated) -> None:
        applied.append((event.id, event.version))

    app.declare()
    with running_worker(app, concurrency=2):
        for version, key in itertools.product(range(1, 4), range(9)):
            app.publish_model_event(ORDER, "updated", {"id": key, "version": version})
        wait_for(lambda: len(applied) == 27, timeout=20, what="the worker taking its shards")
        ready, why = app.health.ready()
        assert ready and "3 shard queue(s)" in why, why
    for key in range(9):
        assert [v for k, v in applied if k == key] == [1, 2, 3]
    assert broker.depth("billing.shard.0") == broker.depth("billing.shard.1") == 0

    health = WorkerHealth()
    health.part("billing.shard.0")
    assert health.ready() == (False, "no consumer: starting, reconnecting or stopped")


@pytest.mark.parametrize("consume", ["drain", "worker"])
def test_raising_shards_version_finishes_the_previous_generation_first(consume: str) -> None:
    """Re-sharding (4 shards to 3): declare moves the ordered bindings to generation 2; what generation 1
    holds is consumed before generation 2, so each key's events stay in order."""
    from tests.conftest import running_worker, wait_for

    broker = MemoryBroker()
    before = _app(broker, shards=4)
    before.subscribe("Order.updated", ordered=True)(_ignore)
    before.declare()
    for version, key in itertools.product(range(1, 6), range(12)):
        before.publish_model_event(ORDER, "updated", {"id": key, "version": version})
    app = _app(broker, shards=3, shards_version=2)
    applied: list[tuple[int, int]] = []

    @app.subscribe("Order.updated", ordered=True)
    def on_order(event: OrderUpdated) -> None:
        applied.append((event.id, event.version))

    app.declare()
    for version, key in itertools.product(range(6, 11), range(12)):
        app.publish_model_event(ORDER, "updated", {"id": key, "version": version})
    old = [f"billing.shard.{n}" for n in range(4)]
    new = [f"billing.shard.v2.{n}" for n in range(3)]
    assert sum(broker.depth(q) for q in old) == 60 and sum(broker.depth(q) for q in new) == 60
    if consume == "drain":
        assert app.drain(timeout=10).handled == 120
    else:
        with running_worker(app, concurrency=4):
            wait_for(lambda: len(applied) == 120, timeout=30, what="both generations consumed")
    for key in range(12):
        assert [v for k, v in applied if k == key] == list(range(1, 11))
    assert all(broker.depth(q) == 0 for q in old + new)


def test_turning_shards_off_leaves_a_stale_binding_that_prune_removes() -> None:
    broker = MemoryBroker()
    sharded = _app(broker, shards=2)
    sharded.subscribe("Order.updated", ordered=True)(_ignore)
    sharded.declare()
    app = _app(broker)  # the next version: shards=0
    app.subscribe("Order.updated", ordered=True)(_ignore)
    assert app.stale_bindings() == ["Order.updated -> billing.shards"]
    lines: list[str] = []
    assert declare_and_prune(app, prune=True, dry_run=False, yes=True, echo=lines.append,
                             confirm=lambda _question: False) == 0
    assert "  shop --[Order.updated]--> billing.shards" in lines and "removed 1 binding(s)" in lines, lines
    assert app.stale_bindings() == []
    app.publish_model_event(ORDER, "updated", {"id": 1, "version": 1})
    assert broker.depth("billing.events") == 1
    assert broker.depth("billing.shard.0") + broker.depth("billing.shard.1") == 0, "nothing goes to the shards"


def test_a_letter_replayed_through_shards_that_route_nowhere_names_the_shards_exchange() -> None:
    from pubsubpy import PublishError, Reject

    broker = MemoryBroker()
    app = _app(broker, shards=2, max_attempts=1)

    @app.subscribe("Order.updated", ordered=True)
    def on_order(event: OrderUpdated) -> None:
        raise Reject("dead-lettered at once")

    app.declare()
    app.publish_model_event(ORDER, "updated", {"id": 1, "version": 1})
    assert app.drain(timeout=5).dead_lettered == 1
    broker.delete(["billing.shard.0", "billing.shard.1"], [])  # the shards exchange now routes nowhere
    with pytest.raises(PublishError, match=r"exchange 'billing\.shards' routed it nowhere"):
        app.replay_dead_letters()
