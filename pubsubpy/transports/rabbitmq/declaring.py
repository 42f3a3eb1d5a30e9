"""Declaring a service's topology on RabbitMQ: additive, with pruning only on request.

``declare_topology`` creates what the service needs (exchanges, its queues,
its bindings) and records the bindings in the ledger (``ledger.py``); it never
removes anything, so an older or newer version of the service running beside
this one keeps its bindings. ``prune_bindings`` removes the bindings it is
given that pubsubpy recorded; a binding made by hand is never in the ledger.

Quorum queues that dead-letter are declared with at-least-once dead-lettering
(``AT_LEAST_ONCE_DEAD_LETTERING``). A queue declared before pubsubpy did so
exists without those arguments, and RabbitMQ cannot change a queue's arguments
(redeclaring is a 406): such a queue is kept as it is, with its messages, and a
warning gives the policy that turns at-least-once on for it in place.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable
from typing import Any

import pika
import pika.adapters.blocking_connection
import pika.exceptions

from pubsubpy.topology import AT_LEAST_ONCE_DEAD_LETTERING, at_least_once_policy, ledger_queue
from pubsubpy.transports.base import QueueSpec, Topology
from pubsubpy.transports.rabbitmq.ledger import append_records, held_records
from pubsubpy.transports.rabbitmq.publishing import ConfirmChannel

__all__ = ["declare_topology", "prune_bindings", "recorded_bindings", "warn_at_most_once"]

BlockingChannel = pika.adapters.blocking_connection.BlockingChannel

log = logging.getLogger("pubsubpy.rabbitmq")

_STRATEGY_MISMATCH = re.compile(r"inequivalent arg '(x-dead-letter-strategy|x-overflow)'")


def _declare_queue(channel: BlockingChannel, spec: QueueSpec) -> bool:
    """Declare ``spec``; False when it already existed without at-least-once dead-lettering (kept as it is)."""
    arguments = dict(spec.arguments)
    if not AT_LEAST_ONCE_DEAD_LETTERING.items() <= arguments.items():
        channel.queue_declare(spec.name, durable=True, arguments=arguments or None)
        return True
    probe = channel.connection.channel()  # a 406 closes the channel that asks
    try:
        probe.queue_declare(spec.name, durable=True, arguments=arguments)
        return True
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code != 406 or not _STRATEGY_MISMATCH.search(exc.reply_text):
            raise
    finally:
        if probe.is_open:
            probe.close()
    for key in AT_LEAST_ONCE_DEAD_LETTERING:
        del arguments[key]
    channel.queue_declare(spec.name, durable=True, arguments=arguments)  # any other difference is a 406 still
    return False


def _declare_ledger(channel: BlockingChannel, topology: Topology) -> str:
    arguments: dict[str, Any] = {}
    if topology.queue.arguments.get("x-queue-type") == "quorum":
        arguments["x-queue-type"] = "quorum"
    name = ledger_queue(topology.queue.name)
    channel.queue_declare(name, durable=True, arguments=arguments or None)
    return name


def _take_old_ledger(channel: BlockingChannel, topology: Topology) -> set[str]:
    """The patterns in a ledger of pubsubpy 0.1 (``<queue>.bindings``: one JSON list, x-max-length 1),
    which is then deleted; empty when there is none. Read on a channel of its own: a missing queue
    closes the channel that asks."""
    old = f"{topology.queue.name}.bindings"
    probe = channel.connection.channel()
    try:
        probe.queue_declare(old, passive=True)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == 404:
            return set()
        raise
    try:
        _method, _props, body = probe.basic_get(old, auto_ack=False)
        try:
            recorded: Any = json.loads(body or b"[]")
        except ValueError:
            recorded = []
        patterns = {p for p in recorded if isinstance(p, str)} if isinstance(recorded, list) else set()
        probe.queue_delete(old)
        return patterns
    finally:
        if probe.is_open:
            probe.close()


def declare_topology(channel: BlockingChannel, confirm: ConfirmChannel, topology: Topology) -> bool:
    """Declare ``topology``; False when its quorum queues exist without at-least-once dead-lettering."""
    channel.exchange_declare(topology.exchange, exchange_type="topic", durable=True)
    channel.exchange_declare(topology.dead_letter_exchange, exchange_type="fanout", durable=True)
    _declare_queue(channel, topology.dead_letter_queue)
    channel.queue_bind(topology.dead_letter_queue.name, topology.dead_letter_exchange, routing_key="")
    as_declared = [_declare_queue(channel, spec) for spec in (topology.queue, *topology.retry_queues)]
    for pattern in sorted(topology.bindings):
        channel.queue_bind(topology.queue.name, topology.exchange, routing_key=pattern)
    ledger = _declare_ledger(channel, topology)
    bound_before = _take_old_ledger(channel, topology)
    with held_records(channel, ledger) as held:
        missing = (topology.bindings | bound_before) - held.patterns(topology.exchange)
        append_records(confirm, ledger, topology.exchange, missing)
    return all(as_declared)


def warn_at_most_once(topology: Topology, vhost: str) -> None:
    service = topology.queue.name.removesuffix(".events")
    log.warning("quorum queues of service %r exist from before pubsubpy declared at-least-once dead-lettering; "
                "they keep their messages and dead-letter at most once until a policy turns it on in place "
                "(see the README, 'Running on a cluster'):\n  %s", service, at_least_once_policy(service, vhost))


def recorded_bindings(channel: BlockingChannel, topology: Topology) -> set[str]:
    """The patterns pubsubpy recorded binding from ``topology.exchange`` to the service queue."""
    ledger = _declare_ledger(channel, topology)
    with held_records(channel, ledger) as held:
        return held.patterns(topology.exchange)


def prune_bindings(channel: BlockingChannel, topology: Topology, patterns: Iterable[str]) -> list[str]:
    """Unbind each of ``patterns`` that pubsubpy recorded; returns those it removed."""
    ledger = _declare_ledger(channel, topology)
    removed: list[str] = []
    with held_records(channel, ledger) as held:
        recorded = held.patterns(topology.exchange)
        for pattern in sorted(set(patterns) & recorded):
            channel.queue_unbind(topology.queue.name, topology.exchange, routing_key=pattern)
            held.forget(topology.exchange, pattern)
            removed.append(pattern)
    return removed
