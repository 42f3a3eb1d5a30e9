"""Queue and exchange names, and the ``Topology`` one service needs: small pure functions.

For ``service_name="billing"``:

- ``billing.events``        the service queue; one binding per subscribed pattern
- ``billing.dlx``           fanout exchange: the service queue's broker-side DLX,
                            and where pubsubpy publishes its own dead letters
- ``billing.dead-letters``  the dead-letter queue (no TTL, no length limit: never expires)
- ``billing.events.ledger`` RabbitMQ only: one message per binding pubsubpy made
- ``billing.retry.<ms>``    one queue per backoff step; a per-queue TTL returns
                            each message to ``billing.events`` when it runs out.
                            Retries of failed handlers and deferrals (keys no
                            handler of this version subscribes) share them.
- with ``shards=N`` and ordered subscriptions:
  ``billing.shards``        an ``x-consistent-hash`` exchange hashing ``pubsubpy-key``, bound from the
                            model exchange once per ordered pattern (exchange to exchange), so
                            routing keys never change
  ``billing.shard.<n>``     N queues (weight 1 each), single-active-consumer: one worker at a time
  ``billing.presence``      fanout: live workers announce themselves (``_consume/shards.py``)

And, with ``event_log`` set (by publishers; not per service): ``<exchange>.log``, a stream bound from the
model exchange with ``#``, which keeps every event for replay (``pubsubpy/_replay``).

Classic dead-letter and retry queues are lazy (``x-queue-mode: lazy``): they
park messages that nobody consumes for a while, which RabbitMQ before 3.12
would otherwise keep in memory as well as on disk (3.12 and later ignore the
mode: their classic queues always behave so): the queue's process no longer
holds, and garbage-collects, every parked message, so a drain dead-letters and
retries faster into them (docs/performance.md) and a long dead-letter queue
costs no memory.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pubsubpy.settings import Settings

__all__ = [
    "AT_LEAST_ONCE_DEAD_LETTERING",
    "HASH_HEADER",
    "LAZY",
    "NO_DELIVERY_LIMIT",
    "SHARDS_ARROW",
    "SHARD_EXCHANGE_ARGUMENTS",
    "SHARD_WEIGHT",
    "QueueSpec",
    "Shards",
    "Topology",
    "at_least_once_policy",
    "binding_names",
    "build_topology",
    "dead_letter_exchange",
    "dead_letter_queue",
    "deferral_delay_ms",
    "event_log",
    "event_log_name",
    "event_log_policy",
    "lazy_policy",
    "ledger_queue",
    "no_delivery_limit_policy",
    "parked_queue",
    "presence_exchange",
    "retry_delay_ms",
    "retry_delays_ms",
    "retry_queue",
    "service_queue",
    "shard_binding",
    "shard_exchange",
    "shard_queue",
]


@dataclass(frozen=True, slots=True)
class QueueSpec:
    """A queue's name and its declare arguments."""

    name: str
    arguments: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Topology:
    """What one service needs on the broker.

    ``bindings`` are the patterns this version of the service subscribes.
    Declaring adds them and never removes another binding (an older or newer
    version's, or one made by hand); only ``prune_bindings`` removes any.
    """

    exchange: str
    queue: QueueSpec
    bindings: frozenset[str]
    dead_letter_exchange: str
    dead_letter_queue: QueueSpec
    retry_queues: tuple[QueueSpec, ...] = ()
    parked_queue: QueueSpec | None = None  # with pause_on: a paused subscription's share of the queue waits here
    shards: Shards | None = None  # with ``shards=N``: where ordered subscriptions' events go instead


@dataclass(frozen=True, slots=True)
class Shards:
    """Ordered subscriptions across processes: the model exchange routes their patterns (``bindings``) to
    ``exchange`` (``x-consistent-hash`` on ``pubsubpy-key``), which spreads keys over ``queues``."""

    exchange: str
    queues: tuple[QueueSpec, ...]
    bindings: frozenset[str]
    presence: str  # the fanout exchange workers announce themselves on
    service: str = ""
    version: int = 1
    previous: str | None = None  # the previous generation's exchange (``shards_version`` raised): unbound, drained

    def previous_queue(self, shard: int) -> str:
        """A queue of the previous generation (how many it has is read from the broker)."""
        return shard_queue(self.service, shard, self.version - 1)


HASH_HEADER = "pubsubpy-key"  # what the shards exchange hashes: the ordering key (envelope.H_KEY)
SHARD_EXCHANGE_ARGUMENTS: dict[str, Any] = {"hash-header": HASH_HEADER}
SHARD_WEIGHT = "1"  # each shard queue's binding key: its weight on the hash ring (a string: 3.12 and 3.13+ agree)


SHARDS_ARROW = " -> "  # a binding name "<pattern> -> <shards exchange>": the model exchange's to that exchange


def shard_binding(pattern: str, shards_exchange: str) -> str:
    """The name ``stale_bindings`` and ``declare(prune=...)`` give a binding of ``pattern`` from the model
    exchange to a shards exchange (a plain pattern names one to the service queue)."""
    return f"{pattern}{SHARDS_ARROW}{shards_exchange}"


def binding_names(topology: Topology) -> frozenset[str]:
    """The bindings this topology wants, named as ``stale_bindings`` names them."""
    if topology.shards is None:
        return topology.bindings
    return topology.bindings | {shard_binding(p, topology.shards.exchange) for p in topology.shards.bindings}


def service_queue(service: str) -> str:
    return f"{service}.events"


def dead_letter_exchange(service: str) -> str:
    return f"{service}.dlx"


def dead_letter_queue(service: str) -> str:
    return f"{service}.dead-letters"


def ledger_queue(service_queue: str) -> str:
    """RabbitMQ only: the bindings pubsubpy made (``transports/rabbitmq/_ledger.py``)."""
    return f"{service_queue}.ledger"  # topology_queues() in transports/base.py lists it too


def shard_exchange(service: str, version: int = 1) -> str:
    return f"{service}.shards" if version == 1 else f"{service}.shards.v{version}"


def shard_queue(service: str, shard: int, version: int = 1) -> str:
    return f"{service}.shard.{shard}" if version == 1 else f"{service}.shard.v{version}.{shard}"


def presence_exchange(service: str) -> str:
    return f"{service}.presence"


def parked_queue(service: str) -> str:
    """Where a paused subscription's share of the service queue waits while the others go on (``pause_on``)."""
    return f"{service}.parked"


def retry_queue(service: str, delay_ms: int) -> str:
    return f"{service}.retry.{delay_ms}ms"


def retry_delay_ms(settings: Settings, failed_attempt: int) -> int:
    """Exponential backoff: ``retry_delay * 2**(attempt-1)``, capped at ``retry_delay_max``."""
    seconds = min(settings.retry_delay * (2 ** max(failed_attempt - 1, 0)), settings.retry_delay_max)
    return int(seconds * 1000)


JITTER_STEPS = 4  # delays per backoff step: a burst of failures comes back spread over them


def retry_delays_ms(settings: Settings, failed_attempt: int) -> tuple[int, ...]:
    """The delays a retry after ``failed_attempt`` draws from: the backoff step ``d`` and, with
    ``retry_jitter``, ``d * (1 - k/8)`` for ``k`` in 1..3 (down to 5/8 of it, so ``retry_delay_max`` still
    bounds every pause). A fixed set, each delay a declared retry queue: a per-message TTL would only
    expire at the head of its queue."""
    step = retry_delay_ms(settings, failed_attempt)
    if not settings.retry_jitter:
        return (step,)
    return tuple(sorted({step * (8 - k) // 8 for k in range(JITTER_STEPS)}, reverse=True))


_DEFER_MAX = 60.0  # seconds: a deferred message is looked at again at least once a minute


def deferral_delay_ms(settings: Settings, deferral: int) -> int:
    """How long the ``deferral``-th deferral waits: from ``max(retry_delay, 0.1s)``, doubling, capped at
    the shortest of ``retry_delay_max``, a minute and ``unknown_key_window`` (never below the first step)."""
    first = max(settings.retry_delay, 0.1)
    cap = max(first, min(settings.retry_delay_max, _DEFER_MAX, settings.unknown_key_window))
    return int(min(first * 2 ** min(max(deferral - 1, 0), 30), cap) * 1000)


def _deferral_delays(settings: Settings) -> set[int]:
    if settings.unknown_key_window <= 0:
        return set()
    delays: set[int] = set()
    deferral = 1
    while (ms := deferral_delay_ms(settings, deferral)) not in delays:
        delays.add(ms)
        deferral += 1
    return delays


AT_LEAST_ONCE_DEAD_LETTERING: dict[str, Any] = {
    "x-dead-letter-strategy": "at-least-once",  # quorum queues dead-letter at most once without it
    "x-overflow": "reject-publish",             # which at-least-once requires
}


def _policy(service: str, vhost: str, purpose: str, queues: str, definition: dict[str, object]) -> str:
    name, pattern = f"pubsubpy-{service}-{purpose}", f"^{re.escape(service)}\\.({queues})$"
    return (f"rabbitmqctl set_policy -p {shlex.quote(vhost)} --apply-to queues "
            f"{shlex.quote(name)} {shlex.quote(pattern)} {shlex.quote(json.dumps(definition))}")


def at_least_once_policy(service: str, vhost: str = "/") -> str:
    """The ``rabbitmqctl`` command that gives a service's existing quorum queues (declared before
    pubsubpy declared ``AT_LEAST_ONCE_DEAD_LETTERING``) at-least-once dead-lettering, in place."""
    return _policy(service, vhost, "at-least-once", "events|retry\\.[0-9]+ms",
                   {"dead-letter-strategy": "at-least-once", "overflow": "reject-publish"})


LAZY: dict[str, Any] = {"x-queue-mode": "lazy"}  # classic queues that park messages; quorum queues refuse it


def lazy_policy(service: str, vhost: str = "/") -> str:
    """The ``rabbitmqctl`` command that makes a service's existing classic dead-letter and retry queues
    (declared before pubsubpy declared them ``LAZY``) lazy in place, with their messages."""
    return _policy(service, vhost, "lazy", "dead-letters|retry\\.[0-9]+ms", {"queue-mode": "lazy"})


NO_DELIVERY_LIMIT: dict[str, Any] = {"x-delivery-limit": -1}
"""RabbitMQ 4.0+ only, on the quorum dead-letter queue: 4.0 gave quorum queues a delivery limit of 20 by
default, a dead-letter queue has no dead-letter exchange of its own, and every reader that gives letters
back (a listing closing its consumer) counts as a delivery: the 21st listing dropped them all, silently.
RabbitMQ 3.x has no default limit and refuses -1 in a policy, so the transport adds it on 4.0+ only."""


def no_delivery_limit_policy(service: str, vhost: str = "/") -> str:
    """The ``rabbitmqctl`` command that lifts the delivery limit of a service's existing quorum dead-letter
    queue (declared before pubsubpy declared ``NO_DELIVERY_LIMIT``), in place, on RabbitMQ 4.0+."""
    return _policy(service, vhost, "no-delivery-limit", "dead-letters", {"delivery-limit": -1})


def event_log(settings: Settings) -> QueueSpec | None:
    """The stream ``<exchange>.log`` with ``event_log`` set: its retention as arguments, which a policy named
    ``pubsubpy-<exchange>-log`` overrides in place (``event_log_policy``; a stream's arguments never change)."""
    if settings.event_log is None:
        return None
    arguments: dict[str, Any] = {"x-queue-type": "stream", "x-max-age": settings.event_log}
    if settings.event_log_bytes is not None:
        arguments["x-max-length-bytes"] = settings.event_log_bytes
    return QueueSpec(event_log_name(settings.model_exchange), arguments)


def event_log_name(exchange: str) -> str:
    return f"{exchange}.log"


def event_log_policy(exchange: str, max_age: str, max_bytes: int | None = None, vhost: str = "/") -> str:
    """The ``rabbitmqctl`` command that sets the event log's retention in place (a policy wins over the
    arguments the stream was declared with)."""
    definition: dict[str, object] = {"max-age": max_age}
    if max_bytes is not None:
        definition["max-length-bytes"] = max_bytes
    name, pattern = f"pubsubpy-{exchange}-log", f"^{re.escape(event_log_name(exchange))}$"
    return (f"rabbitmqctl set_policy -p {shlex.quote(vhost)} --apply-to queues "
            f"{shlex.quote(name)} {shlex.quote(pattern)} {shlex.quote(json.dumps(definition))}")


def _queue_arguments(settings: Settings, extra: dict[str, Any] | None = None, *, parks: bool = False) -> dict[str, Any]:
    """``parks``: the queue holds messages nobody consumes for a while (dead letters, retries)."""
    arguments: dict[str, Any] = {}
    if settings.queue_type == "quorum":
        arguments["x-queue-type"] = "quorum"
        if extra and "x-dead-letter-exchange" in extra:
            arguments.update(AT_LEAST_ONCE_DEAD_LETTERING)
    elif parks:
        arguments.update(LAZY)
    arguments.update(extra or {})
    return arguments


def build_topology(settings: Settings, service: str, patterns: Iterable[str], max_attempts: int,
                   parking: bool = False, ordered: Iterable[str] = ()) -> Topology:
    """``patterns``: what the service queue is bound with; ``ordered``: the ordered subscriptions' patterns,
    bound to the shards instead when ``settings.shards`` is set (a pattern may be in both)."""
    dlx = dead_letter_exchange(service)
    main_args = _queue_arguments(settings, {"x-dead-letter-exchange": dlx})
    if settings.queue_type == "quorum":
        main_args["x-delivery-limit"] = settings.delivery_limit
    attempts = {ms for attempt in range(1, max_attempts) for ms in retry_delays_ms(settings, attempt)}
    delays = sorted((attempts | _deferral_delays(settings)) - {0})
    retry_queues = tuple(
        QueueSpec(retry_queue(service, ms), _queue_arguments(
            settings, {"x-message-ttl": ms, "x-dead-letter-exchange": "",
                       "x-dead-letter-routing-key": service_queue(service)}, parks=True))
        for ms in delays
    )
    return Topology(
        exchange=settings.model_exchange,
        queue=QueueSpec(service_queue(service), main_args),
        bindings=frozenset(patterns),
        dead_letter_exchange=dlx,
        dead_letter_queue=QueueSpec(dead_letter_queue(service), _queue_arguments(settings, parks=True)),
        retry_queues=retry_queues,
        parked_queue=QueueSpec(parked_queue(service), _queue_arguments(settings, parks=True)) if parking else None,
        shards=_shards(settings, service, frozenset(ordered), main_args),
    )


def _shards(settings: Settings, service: str, ordered: frozenset[str], main_args: dict[str, Any]) -> Shards | None:
    if not settings.shards or not ordered:
        return None
    arguments = {**main_args, "x-single-active-consumer": True}
    version = settings.shards_version
    queues = tuple(QueueSpec(shard_queue(service, n, version), arguments) for n in range(settings.shards))
    previous = shard_exchange(service, version - 1) if version > 1 else None
    return Shards(shard_exchange(service, version), queues, ordered, presence_exchange(service), service, version,
                  previous)
