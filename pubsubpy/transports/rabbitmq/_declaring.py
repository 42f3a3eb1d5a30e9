"""Declaring a service's topology on RabbitMQ: additive, with pruning only on request.

``declare_topology`` creates what the service needs (exchanges, its queues,
its bindings) and records the bindings in the ledger (``_ledger.py``); it never
removes anything, so an older or newer version of the service running beside
this one keeps its bindings. ``prune_bindings`` removes the bindings it is
given that pubsubpy recorded; a binding made by hand is never in the ledger.

Some queue arguments came in later releases: at-least-once dead-lettering for
quorum queues that dead-letter (``AT_LEAST_ONCE_DEAD_LETTERING``), lazy mode
for classic queues that park messages (``LAZY``). A queue declared before
exists without them, and RabbitMQ cannot change a queue's arguments
(redeclaring is a 406): such a queue is kept as it is, with its messages, and
the log gives the policy that changes it in place (a warning for
at-least-once, which is about losing messages; a note for lazy, which is about
memory and speed on RabbitMQ before 3.12; a warning for a quorum dead-letter
queue still under RabbitMQ 4's default delivery limit, which drops letters).
Arguments are adapted to the broker's version first (``_broker.py``).
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

from pubsubpy.errors import ConfigurationError
from pubsubpy.topology import (
    AT_LEAST_ONCE_DEAD_LETTERING,
    LAZY,
    NO_DELIVERY_LIMIT,
    SHARD_EXCHANGE_ARGUMENTS,
    SHARD_WEIGHT,
    SHARDS_ARROW,
    Shards,
    at_least_once_policy,
    lazy_policy,
    ledger_queue,
    no_delivery_limit_policy,
    shard_binding,
)
from pubsubpy.transports.base import Topology
from pubsubpy.transports.rabbitmq._broker import Version, broker_arguments, broker_version
from pubsubpy.transports.rabbitmq._ledger import HeldRecords, append_records, held_records
from pubsubpy.transports.rabbitmq._publishing import ConfirmChannel

__all__ = ["QueueDeclarer", "declare_topology", "prune_bindings", "recorded_bindings", "report_kept_queues"]

BlockingChannel = pika.adapters.blocking_connection.BlockingChannel

log = logging.getLogger("pubsubpy.rabbitmq")

# Arguments added in later releases, by name: a queue declared before lacks them and is kept as it is.
_ADDED_LATER: dict[str, dict[str, Any]] = {"at-least-once": AT_LEAST_ONCE_DEAD_LETTERING, "lazy": LAZY,
                                           "no-delivery-limit": NO_DELIVERY_LIMIT}
_INEQUIVALENT = re.compile(r"inequivalent arg '([^']+)'")


_STARTING = "down or inaccessible"  # a queue that another declarer's declare is still starting
_STARTING_TRIES = 6                  # 0.05 s doubling: about 1.5 s in all


class QueueDeclarer:
    """Declares queues on a channel of its own, opened again after a refusal: a 406 closes the
    channel that asks."""

    def __init__(self, connection: pika.BlockingConnection) -> None:
        self._connection = connection
        self._channel: BlockingChannel | None = None

    def declare(self, name: str, arguments: dict[str, Any]) -> pika.exceptions.ChannelClosedByBroker | None:
        """None once declared; the broker's 406 when the queue exists with other arguments. A queue another
        declarer is creating at this moment can be "down or inaccessible" (404) for an instant on RabbitMQ
        4.x: asked again, a few times, with a growing pause."""
        for attempt in range(_STARTING_TRIES):
            if self._channel is None or not self._channel.is_open:
                self._channel = self._connection.channel()
            try:
                self._channel.queue_declare(name, durable=True, arguments=arguments or None)
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code == 404 and _STARTING in exc.reply_text and attempt + 1 < _STARTING_TRIES:
                    self._connection.sleep(0.05 * 2 ** attempt)  # pika's sleep: the connection stays serviced
                    continue
                if exc.reply_code != 406:
                    raise
                return exc
            return None
        return None  # (not reached: the last try returns or raises)

    def close(self) -> None:
        if self._channel is not None and self._channel.is_open:
            self._channel.close()


def _declare_queue(declarer: QueueDeclarer, name: str, arguments: dict[str, Any]) -> set[str]:
    """Declare queue ``name``; the names (in ``_ADDED_LATER``) of the arguments it existed without."""
    kept_without: set[str] = set()
    reconciled: set[str] = set()
    while (refused := declarer.declare(name, arguments)) is not None:
        differs = _INEQUIVALENT.search(refused.reply_text)
        group = next((group for group, keys in _ADDED_LATER.items() if differs and differs.group(1) in keys), None)
        if group is None or group in reconciled:  # any other difference is the user's to settle
            raise refused
        reconciled.add(group)
        added = _ADDED_LATER[group]
        if added.items() <= arguments.items():  # the queue is from before pubsubpy added them
            kept_without.add(group)
            arguments = {key: value for key, value in arguments.items() if key not in added}
        else:  # the queue has them (another queue type, say): take them, so the next 406 names what matters
            arguments = {**arguments, **added}
    return kept_without


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
    closes the channel that asks. From RabbitMQ 4.3.1 a passive declare needs configure permission
    on the name, so a user without it (the documented permissions, unless upgrading from 0.1) gets a
    403 whether or not the queue exists: then there is no old ledger to take over for this user."""
    old = f"{topology.queue.name}.bindings"
    probe = channel.connection.channel()
    try:
        probe.queue_declare(old, passive=True)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code == 404:
            return set()
        if exc.reply_code == 403:
            log.debug("no permission to look for a pubsubpy 0.1 ledger %r (%s); not taken over", old,
                      exc.reply_text)
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


def declare_topology(channel: BlockingChannel, confirm: ConfirmChannel, topology: Topology) -> set[str]:
    """Declare ``topology``; the names of the arguments added later that some of its queues exist
    without (see ``report_kept_queues``).

    A queue declared a moment ago can still be unknown to a binding (404 "no queue") on RabbitMQ 4.x
    when its name was deleted just before (a worker declaring its deleted queue again): the whole
    declare is made again on a fresh channel, a few times, with a growing pause."""
    connection, current = channel.connection, channel
    try:
        for attempt in range(1, _STARTING_TRIES + 1):
            try:
                return _declare_topology(current, confirm, topology)
            except pika.exceptions.ChannelClosedByBroker as exc:
                if exc.reply_code != 404 or "no queue" not in exc.reply_text or attempt == _STARTING_TRIES:
                    raise
                log.info("declaring the topology of %r: %s; declaring it again", topology.queue.name,
                         exc.reply_text)
                connection.sleep(0.05 * 2 ** attempt)  # pika's sleep: the connection stays serviced
                current = connection.channel()  # the 404 closed the one that asked
        raise AssertionError("unreachable")  # the last attempt returns or raises
    finally:
        if current is not channel and current.is_open:
            current.close()


def _declare_topology(channel: BlockingChannel, confirm: ConfirmChannel, topology: Topology) -> set[str]:
    channel.exchange_declare(topology.exchange, exchange_type="topic", durable=True)
    channel.exchange_declare(topology.dead_letter_exchange, exchange_type="fanout", durable=True)
    declarer = QueueDeclarer(channel.connection)
    version = broker_version(channel.connection)
    try:
        kept_without = set().union(*(
            _declare_queue(declarer, spec.name,
                           broker_arguments(spec.arguments, version, dead_letters=spec is topology.dead_letter_queue))
            for spec in (topology.dead_letter_queue, topology.queue, *topology.retry_queues,
                         *((topology.parked_queue,) if topology.parked_queue is not None else ()))))
    finally:
        declarer.close()
    channel.queue_bind(topology.dead_letter_queue.name, topology.dead_letter_exchange, routing_key="")
    for pattern in sorted(topology.bindings):
        channel.queue_bind(topology.queue.name, topology.exchange, routing_key=pattern)
    if topology.shards is not None:
        kept_without |= _declare_shards(channel, topology.exchange, topology.shards, version)
    ledger = _declare_ledger(channel, topology)
    bound_before = _take_old_ledger(channel, topology)
    with held_records(channel, ledger) as held:
        missing = (topology.bindings | bound_before) - held.patterns(topology.exchange)
        append_records(confirm, ledger, topology.exchange, missing)
        if topology.shards is not None:  # recorded as (model exchange -> shards exchange, pattern)
            via = _shards_key(topology.exchange, topology.shards.exchange)
            append_records(confirm, ledger, via, topology.shards.bindings - held.patterns(via))
    return kept_without


def _shards_key(exchange: str, shards_exchange: str) -> str:
    """The ledger's ``exchange`` field for a binding from ``exchange`` to a shards exchange."""
    return f"{exchange}{SHARDS_ARROW}{shards_exchange}"


def _recorded(held: HeldRecords, exchange: str) -> dict[str, tuple[str, str]]:
    """Every binding recorded from ``exchange``, by the name ``stale_bindings`` gives it: its record's key."""
    found: dict[str, tuple[str, str]] = {}
    for key, pattern in held.records():
        if key == exchange:
            found[pattern] = (key, pattern)
        elif key.startswith(exchange + SHARDS_ARROW):
            found[shard_binding(pattern, key[len(exchange + SHARDS_ARROW):])] = (key, pattern)
    return found


CONSISTENT_HASH_PLUGIN = "rabbitmq_consistent_hash_exchange"


def _declare_shards(channel: BlockingChannel, exchange: str, shards: Shards, version: Version) -> set[str]:
    """The shards exchange (refused with a ``ConfigurationError`` naming the command that enables its
    plugin), its queues bound with weight 1, the exchange-to-exchange bindings of the ordered patterns
    and the presence exchange."""
    connection = channel.connection
    probe = connection.channel()
    try:
        probe.exchange_declare(shards.exchange, exchange_type="x-consistent-hash", durable=True,
                               arguments=SHARD_EXCHANGE_ARGUMENTS)
    except (pika.exceptions.ChannelClosedByBroker, pika.exceptions.ConnectionClosedByBroker) as exc:
        # an unknown exchange type: 3.x closes the connection (503 COMMAND_INVALID), 4.x the channel (406)
        if exc.reply_code in (406, 503) and "unknown exchange type 'x-consistent-hash'" in exc.reply_text:
            raise ConfigurationError(
                f"shards={len(shards.queues)} needs RabbitMQ's consistent-hash exchange, which this broker does not "
                f"have enabled ({exc.reply_text}): run `rabbitmq-plugins enable {CONSISTENT_HASH_PLUGIN}` on every "
                "node (it ships with RabbitMQ), or set shards=0") from None
        raise
    finally:
        if probe.is_open:
            probe.close()
    declarer = QueueDeclarer(connection)
    try:
        kept_without = set().union(*(
            _declare_queue(declarer, spec.name, broker_arguments(spec.arguments, version, dead_letters=False))
            for spec in shards.queues))
    finally:
        declarer.close()
    for spec in shards.queues:
        channel.queue_bind(spec.name, shards.exchange, routing_key=SHARD_WEIGHT)
    for pattern in sorted(shards.bindings):
        channel.exchange_bind(shards.exchange, exchange, routing_key=pattern)
    if shards.previous is not None:
        _unbind_previous(connection, exchange, shards)
    channel.exchange_declare(shards.presence, exchange_type="fanout", durable=True)
    return kept_without


def _unbind_previous(connection: pika.BlockingConnection, exchange: str, shards: Shards) -> None:
    """New events of the ordered patterns go to this generation only: the previous one keeps what it holds
    until workers drain it (its bindings' records stay in the ledger, for ``declare --prune`` to drop)."""
    assert shards.previous is not None
    for pattern in sorted(shards.bindings):
        _unbind_exchange(connection, shards.previous, exchange, pattern)


def report_kept_queues(topology: Topology, vhost: str, kept_without: set[str]) -> None:
    """Say which of ``topology``'s queues exist from before an argument pubsubpy added, and the policy
    that changes them in place."""
    service = topology.queue.name.removesuffix(".events")
    if "at-least-once" in kept_without:
        log.warning("quorum queues of service %r exist from before pubsubpy declared at-least-once "
                    "dead-lettering; they keep their messages and dead-letter at most once until a policy turns "
                    "it on in place (see the documentation, 'Running on a cluster'):\n  %s",
                    service, at_least_once_policy(service, vhost))
    if "no-delivery-limit" in kept_without:
        log.warning("the quorum dead-letter queue of service %r exists from before pubsubpy lifted its delivery "
                    "limit; on RabbitMQ 4.0+ it drops letters that were given back 20 times (each listing gives "
                    "them back) until this policy lifts the limit in place, with its letters:\n  %s",
                    service, no_delivery_limit_policy(service, vhost))
    if "lazy" in kept_without:
        log.info("classic dead-letter and retry queues of service %r exist from before pubsubpy declared them "
                 "lazy; they work as they are. On RabbitMQ before 3.12 a lazy queue keeps parked messages on disk "
                 "only (less memory, faster dead-lettering); this policy makes them lazy in place, with their "
                 "messages (3.12 and later ignore the mode):\n  %s", service, lazy_policy(service, vhost))


def recorded_bindings(channel: BlockingChannel, topology: Topology) -> set[str]:
    """The bindings pubsubpy recorded from ``topology.exchange``: patterns to the service queue, and
    ``"<pattern> -> <shards exchange>"`` to a shards exchange of any generation."""
    ledger = _declare_ledger(channel, topology)
    with held_records(channel, ledger) as held:
        return set(_recorded(held, topology.exchange))


def prune_bindings(channel: BlockingChannel, topology: Topology, names: Iterable[str]) -> list[str]:
    """Unbind each of ``names`` (as ``recorded_bindings`` names them) that pubsubpy recorded; returns those it
    removed. A shards exchange deleted meanwhile is no error: its bindings went with it."""
    ledger = _declare_ledger(channel, topology)
    removed: list[str] = []
    with held_records(channel, ledger) as held:
        recorded = _recorded(held, topology.exchange)
        for name in sorted(set(names) & set(recorded)):
            key, pattern = recorded[name]
            if key == topology.exchange:
                channel.queue_unbind(topology.queue.name, topology.exchange, routing_key=pattern)
            else:
                _unbind_exchange(channel.connection, key[len(topology.exchange + SHARDS_ARROW):],
                                 topology.exchange, pattern)
            held.forget(key, pattern)
            removed.append(name)
    return removed


def _unbind_exchange(connection: pika.BlockingConnection, destination: str, source: str, pattern: str) -> None:
    channel = connection.channel()  # a missing exchange (404) closes the channel that asks
    try:
        channel.exchange_unbind(destination, source, routing_key=pattern)
    except pika.exceptions.ChannelClosedByBroker as exc:
        if exc.reply_code != 404:
            raise
    finally:
        if channel.is_open:
            channel.close()
