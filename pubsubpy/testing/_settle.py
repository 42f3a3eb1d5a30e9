"""``settle(*apps)``: drain every app until nothing moves, moving the memory brokers' clocks to each retry
instead of sleeping it (see ``pubsubpy.testing``)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from pubsubpy.app import PubSub
from pubsubpy.errors import ConfigurationError
from pubsubpy.messages import DrainResult
from pubsubpy.transports.memory import MemoryBroker, MemoryTransport

__all__ = ["NotSettled", "Settled", "settle"]


class NotSettled(AssertionError):
    """``settle()`` ran out of time with messages still moving (a cascade that loops). ``queues`` maps each
    queue still moving to what it holds; ``settled`` is what the drains did meanwhile."""

    def __init__(self, message: str, queues: Mapping[str, str], settled: Settled) -> None:
        super().__init__(message)
        self.queues = dict(queues)
        self.settled = settled


@dataclass
class Settled:
    """What ``settle()`` did: a ``DrainResult`` per service (every drain of it added up), the passes over
    the apps, and how far it moved the memory clocks (the retry delays it did not sleep)."""

    results: dict[str, DrainResult] = field(default_factory=dict)
    passes: int = 0
    advanced: float = 0.0  # seconds the memory brokers' clocks were moved forward
    seconds: float = 0.0   # wall time

    def __getitem__(self, app: PubSub | str) -> DrainResult:
        service = app if isinstance(app, str) else app.settings.service_name
        try:
            return self.results[service or ""]
        except KeyError:
            raise KeyError(f"settle() drained no service {service!r} (it drained: "
                           f"{', '.join(self.results) or 'none'})") from None

    @property
    def total(self) -> DrainResult:
        total = DrainResult()
        for result in self.results.values():
            _add(total, result)
        return total

    def __str__(self) -> str:
        each = "; ".join(f"{service}: {result}" for service, result in self.results.items())
        return (f"settled in {self.passes} passes, {self.seconds:.2f}s (clock moved {self.advanced:g}s)"
                + (f": {each}" if each else ""))


def _add(into: DrainResult, result: DrainResult) -> None:
    into.handled += result.handled
    into.retried += result.retried
    into.dead_lettered += result.dead_lettered
    into.deferred += result.deferred
    for reason, count in result.reasons.items():
        into.reasons[reason] = into.reasons.get(reason, 0) + count
    into.redelivered += result.redelivered
    into.duplicates += result.duplicates
    into.stale += result.stale
    into.abandoned += result.abandoned
    into.seconds += result.seconds
    if result.stopped_by != "empty":
        into.stopped_by = result.stopped_by


@dataclass
class _Member:
    app: PubSub
    broker: MemoryBroker
    service: str | None

    @property
    def drains(self) -> bool:
        return self.service is not None and bool(self.app.router.subscriptions)

    def queues(self) -> tuple[str, list[str]]:
        """The service queue and the retry queues (the dead-letter queue is where messages rest)."""
        topology = self.app.topology()
        return topology.queue.name, [spec.name for spec in topology.retry_queues]


def _member(app: PubSub) -> _Member:
    if not isinstance(app, PubSub):
        raise ConfigurationError(f"settle() takes PubSub apps, not {app!r}")
    transport = app.transport
    if not isinstance(transport, MemoryTransport):
        raise ConfigurationError(
            f"settle() drives memory:// apps only (it moves the in-process broker's clock), and {app!r} is not "
            "one: give the services of a test one URL from pubsubpy.testing.memory_broker(), or drain each "
            "app in turn against RabbitMQ")
    return _Member(app, transport.broker, app.settings.service_name)


def _moving(members: Sequence[_Member], delivered: Mapping[str, int]) -> tuple[dict[str, str], bool, bool]:
    """Each queue of the apps still moving, described; whether any holds a ready or unacked message; whether
    any retry queue holds one waiting for its TTL."""
    found: dict[str, list[str]] = {}
    ready = waiting = False
    seen: set[tuple[int, str]] = set()
    for member in members:
        if not member.drains:
            continue
        main, retries = member.queues()
        for name in (main, *retries):
            if (id(member.broker), name) in seen:
                continue
            seen.add((id(member.broker), name))
            notes = found.setdefault(name, [])
            if delivered.get(name):
                notes.append(f"{delivered[name]} delivered in the last pass")
            info = member.broker.info(name)
            unacked = member.broker.unacked(name)
            if info is not None and info[0]:
                if name == main:
                    notes.append(f"{info[0]} ready")
                    ready = True
                else:
                    notes.append(f"{info[0]} waiting for the queue's TTL")
                    waiting = True
            if unacked:
                notes.append(f"{unacked} unacked (held by another consumer: a worker running this app?)")
                ready = True
    return {name: ", ".join(notes) for name, notes in found.items() if notes}, ready, waiting


def _advance(members: Sequence[_Member]) -> float:
    """Move each broker's clock just past the next expiry among the apps' retry queues on it."""
    by_broker: dict[int, tuple[MemoryBroker, list[str]]] = {}
    for member in members:
        if member.drains:
            by_broker.setdefault(id(member.broker), (member.broker, []))[1].extend(member.queues()[1])
    return max([broker.advance_to_next_expiry(queues) for broker, queues in by_broker.values()], default=0.0)


def _pass(members: Sequence[_Member], settled: Settled, deadline: float) -> dict[str, int]:
    """Drain each app once (within ``deadline``); what each service queue delivered, by queue."""
    delivered: dict[str, int] = {}
    for member in members:
        remaining = deadline - time.monotonic()
        if not member.drains or remaining <= 0:
            continue
        result = member.app.drain(timeout=remaining)
        _add(settled.results[member.service or ""], result)
        if result.messages or result.duplicates:
            queue = member.queues()[0]
            delivered[queue] = delivered.get(queue, 0) + result.messages + result.duplicates
    return delivered


def settle(*apps: PubSub, timeout: float = 5.0) -> Settled:
    """Drain every app, over and over, until nothing moves: two passes in a row in which no app took a
    message and none of their queues holds a ready, unacked or TTL-waiting message.

    A retry waits in its retry queue for ``retry_delay`` (doubling per attempt) as on RabbitMQ; when
    nothing else is ready, settle moves the memory broker's clock just past the next such expiry instead
    of sleeping, so retries run in order with the production settings (an ``ordered=True`` handler's
    retries wait in its lane, in real time: give such apps a small ``retry_delay`` in tests). Apps without
    subscriptions (pure publishers) are not drained. memory:// apps only (a ``ConfigurationError`` otherwise).

    Returns a ``Settled``: ``settled[app]`` (or ``settled["billing"]``) is that service's ``DrainResult``
    summed over every drain. Past ``timeout`` seconds raises ``NotSettled``, an ``AssertionError`` naming
    the queues still moving (a cascade that loops). A handler still running at the timeout gets the app's
    ``shutdown_timeout`` first, as in ``drain()``.
    """
    if not apps:
        raise ConfigurationError("settle() needs the apps to drain: settle(shop, billing, ...)")
    if timeout <= 0:
        raise ConfigurationError(f"timeout must be > 0 seconds, got {timeout}")
    members = [_member(app) for app in apps]
    started = time.monotonic()
    deadline = started + timeout
    settled = Settled({m.service: DrainResult() for m in members if m.service is not None})
    quiet = 0
    while True:
        delivered = _pass(members, settled, deadline)
        settled.passes += 1
        moving, ready, waiting = _moving(members, delivered)
        if delivered or ready:
            quiet = 0
        elif waiting:
            quiet = 0
            settled.advanced += _advance(members)
        else:
            quiet += 1
            if quiet >= 2:
                settled.seconds = time.monotonic() - started
                return settled
        if time.monotonic() >= deadline:
            settled.seconds = time.monotonic() - started
            listed = "; ".join(f"{name} ({notes})" for name, notes in moving.items()) or "none left"
            raise NotSettled(
                f"settle() gave up after {timeout:g}s and {settled.passes} passes with messages still moving: "
                f"{listed}. A handler that publishes what it (or a service downstream) handles again loops "
                "forever; a key no handler here subscribes keeps coming back for unknown_key_window (wall-clock "
                "time: set unknown_key_window=0 in tests). So far: " + str(settled), moving, settled)
        if ready and not delivered:
            time.sleep(0.005)  # what is held elsewhere (a running worker) needs that thread to move
