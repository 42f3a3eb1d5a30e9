"""What a service looks like on the broker, for operators: ``pubsubpy topology`` (text, JSON, Mermaid).

``describe`` reads what only the broker knows (each queue's depth and consumer
count, the bindings pubsubpy recorded) and joins it with what only the code
knows (queue types from the settings, since AMQP cannot read them back; which
handler subscribes which pattern; the events the service publishes).
Bindings made by hand are not listed: AMQP cannot list bindings, and pubsubpy
only knows the ones it recorded.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

from pubsubpy._consume.presence import shard_owners
from pubsubpy.app import PubSub
from pubsubpy.deadline import Deadline
from pubsubpy.schemas import ModelEvent
from pubsubpy.topology import HASH_HEADER, Shards, binding_names, event_log_name, ledger_queue
from pubsubpy.transports.base import QueueSpec

__all__ = ["EventLogView", "TopologyView", "describe", "to_json", "to_mermaid", "to_text"]


@dataclass
class QueueView:
    name: str
    role: str                # "events", "dead letters", "retry", "ledger"
    type: str                # from the settings: "classic" or "quorum"
    messages: int | None     # None: the queue does not exist (not declared yet)
    consumers: int | None
    ttl_ms: int | None = None
    owners: list[str] = field(default_factory=list)  # a shard: the workers that say they consume it now


@dataclass
class BindingView:
    pattern: str
    handlers: list[str]      # empty for a stale binding
    stale: bool = False      # recorded by pubsubpy, no handler of this version subscribes it


@dataclass
class TopologyView:
    service: str
    exchange: str
    dead_letter_exchange: str
    events: list[dict[str, str]] = field(default_factory=list)  # event_type, routing_key
    events_from: str = "registered schemas"  # or "published": the events the service says it sends
    bindings: list[BindingView] = field(default_factory=list)
    queues: list[QueueView] = field(default_factory=list)
    shards_exchange: str | None = None  # with shards=N: <service>.shards, bound with the ordered patterns
    shard_bindings: list[BindingView] = field(default_factory=list)
    event_log: EventLogView | None = None  # the exchange's stream (event_log), when it exists


@dataclass
class EventLogView:
    name: str                # <exchange>.log, bound from the exchange with '#'
    retention: str | None    # this app's event_log (the stream keeps what it was created with; a policy wins)
    readers: int             # consumers attached now (replays, backfills)


def _queue(app: PubSub, spec: QueueSpec, role: str, deadline: Deadline | None) -> QueueView:
    info = app.transport.queue_info(spec.name, deadline=deadline)
    ttl = spec.arguments.get("x-message-ttl")
    return QueueView(spec.name, role, str(spec.arguments.get("x-queue-type", "classic")),
                     None if info is None else info.messages, None if info is None else info.consumers,
                     int(ttl) if ttl is not None else None)


def describe(app: PubSub, publishes: Iterable[type[ModelEvent]] | None = None, *,
             timeout: float | None = 30.0) -> TopologyView:
    """The service of ``app`` as the broker holds it now. ``publishes``: the events it sends
    (default: every registered schema)."""
    deadline = None if timeout is None else Deadline.after(timeout)
    topology = app.topology()
    handlers: dict[str, list[str]] = {}
    for sub in app.router.subscriptions:
        handlers.setdefault(sub.pattern, []).append(sub.name)
    main = topology.queue
    queues = [_queue(app, main, "events", deadline), _queue(app, topology.dead_letter_queue, "dead letters", deadline)]
    queues += [_queue(app, spec, "retry", deadline) for spec in topology.retry_queues]
    if topology.parked_queue is not None:
        queues.append(_queue(app, topology.parked_queue, "parked", deadline))
    if app.settings.scheme != "memory":
        queues.append(_queue(app, QueueSpec(ledger_queue(main.name), main.arguments), "ledger", deadline))
    stale = app.transport.recorded_bindings(topology, deadline=deadline) - binding_names(topology)
    ordered = {sub.name for sub in app.router.subscriptions if sub.ordered} if topology.shards is not None else set()
    bindings = [BindingView(p, sorted(set(handlers.get(p, [])) - ordered)) for p in sorted(topology.bindings)]
    bindings += [BindingView(p, [], stale=True) for p in sorted(stale)]
    sent = list(app.registry) if publishes is None else list(publishes)
    events = [{"event_type": s.event_type(), "routing_key": s.routing_key()}
              for s in sorted(sent, key=lambda s: s.routing_key())]
    view = TopologyView(app.settings.service_name or "", topology.exchange, topology.dead_letter_exchange,
                        events, "registered schemas" if publishes is None else "published", bindings, queues)
    if topology.shards is not None:
        _add_shards(app, topology.shards, view, {p: sorted(set(h) & ordered) for p, h in handlers.items()}, deadline)
    log = app.transport.queue_info(event_log_name(topology.exchange), deadline=deadline)
    if log is not None:
        view.event_log = EventLogView(log.name, app.settings.event_log, log.consumers)
    return view


def _add_shards(app: PubSub, shards: Shards, view: TopologyView, handlers: dict[str, list[str]],
                deadline: Deadline | None) -> None:
    """The shards exchange's bindings (``handlers``: the ordered ones per pattern), the shard queues and the
    workers that say they consume them (heard for one announcement round; not on ``memory://``)."""
    view.shards_exchange = shards.exchange
    view.shard_bindings = [BindingView(p, handlers.get(p, [])) for p in sorted(shards.bindings)]
    claims = shard_owners(app.transport, shards.presence) if app.settings.scheme != "memory" else {}
    for spec in shards.queues:
        queue = _queue(app, spec, "shard", deadline)
        queue.owners = sorted(worker for worker, owned in claims.items() if spec.name in owned)
        view.queues.append(queue)


def to_json(view: TopologyView) -> str:
    return json.dumps(asdict(view), indent=2)


def _count(value: int | None, what: str) -> str:
    if value is None:
        return "missing"
    return f"{value} {what}" + ("" if value == 1 else "s")


def to_text(view: TopologyView) -> str:
    lines = [f"service {view.service}", f"  exchange {view.exchange} (topic)"]
    for binding in view.bindings:
        target = "STALE: no handler subscribes it (pubsubpy declare --prune)" if binding.stale \
            else ", ".join(binding.handlers)
        lines.append(f"    {binding.pattern:<24} -> {view.queues[0].name}: {target}")
    if view.shards_exchange is not None:
        for binding in view.shard_bindings:
            lines.append(f"    {binding.pattern:<24} -> {view.shards_exchange}: {', '.join(binding.handlers)}")
        lines.append(f"  shards exchange {view.shards_exchange} (x-consistent-hash on {HASH_HEADER}) -> "
                     f"{sum(1 for q in view.queues if q.role == 'shard')} shard queues")
    if view.event_log is not None:
        log = view.event_log
        lines.append(f"    {'#':<24} -> {log.name}: the event log (stream, retention "
                     f"{log.retention or 'as its publishers declared it'}; {_count(log.readers, 'reader')})")
    lines.append(f"  dead-letter exchange {view.dead_letter_exchange} (fanout) -> {view.queues[1].name}")
    lines.append("  queues")
    for queue in view.queues:
        ttl = f", TTL {queue.ttl_ms} ms, then back to {view.queues[0].name}" if queue.ttl_ms is not None else ""
        owner = (f", owner {', '.join(queue.owners)}" if queue.owners else ", no owner heard") \
            if queue.role == "shard" else ""
        lines.append(f"    {queue.name:<40} {queue.role:<12} {queue.type:<8} "
                     f"{_count(queue.messages, 'message')}, {_count(queue.consumers, 'consumer')}{ttl}{owner}")
    if view.events:
        lines.append(f"  events ({view.events_from})")
        lines += [f"    {e['routing_key']:<24} {e['event_type']}" for e in view.events]
    return "\n".join(lines)


def _id(prefix: str, text: str) -> str:
    return prefix + re.sub(r"[^A-Za-z0-9]", "_", text)


def _label(text: str) -> str:
    """Mermaid label text: quotes and angle brackets as entities (labels are quoted)."""
    return text.replace("&", "#amp;").replace('"', "#quot;").replace("<", "#lt;").replace(">", "#gt;")


def _seconds(ms: int) -> str:
    return f"{ms / 1000:g} s"


def to_mermaid(view: TopologyView) -> str:
    """A flowchart: events -> exchange -> bindings -> queues -> handlers, with dead letters and retries."""
    main, dlq = view.queues[0], view.queues[1]
    exchange = _id("x_", view.exchange)
    lines = ["flowchart LR"]
    if view.events:
        lines.append(f'  subgraph events["events ({view.events_from})"]')
        lines += [f'    {_id("e_", e["routing_key"])}["{_label(e["routing_key"])}"]' for e in view.events]
        lines.append("  end")
        lines += [f'  {_id("e_", e["routing_key"])} --> {exchange}' for e in view.events]
    lines.append(f'  {exchange}{{{{"{_label(view.exchange)}<br/>topic exchange"}}}}')
    queue_id = _id("q_", main.name)
    lines.append(f'  {queue_id}[("{_label(main.name)}<br/>{main.type}, {_count(main.messages, "message")}, '
                 f'{_count(main.consumers, "consumer")}")]')
    for binding in view.bindings:
        style = "-. " if binding.stale else "-- "
        arrow = " .->" if binding.stale else " -->"
        note = " (stale)" if binding.stale else ""
        lines.append(f'  {exchange} {style}"{_label(binding.pattern + note)}"{arrow} {queue_id}')
    handlers: dict[str, list[str]] = {}
    for binding in view.bindings:
        for handler in binding.handlers:
            handlers.setdefault(handler, []).append(binding.pattern)
    for handler, patterns in handlers.items():
        node = _id("h_", handler)
        lines.append(f'  {node}["{_label(handler.rsplit(".", 1)[-1])}()<br/>{_label(", ".join(patterns))}"]')
        lines.append(f"  {queue_id} --> {node}")
    if view.event_log is not None:
        log_id = _id("q_", view.event_log.name)
        lines.append(f'  {log_id}[("{_label(view.event_log.name)}<br/>stream: the event log")]')
        lines.append(f'  {exchange} -- "#" --> {log_id}')
    dlx, dlq_id = _id("x_", view.dead_letter_exchange), _id("q_", dlq.name)
    lines.append(f'  {dlx}{{{{"{_label(view.dead_letter_exchange)}<br/>fanout"}}}}')
    lines.append(f'  {dlq_id}[("{_label(dlq.name)}<br/>{_count(dlq.messages, "message")}")]')
    lines.append(f'  {queue_id} -. "dead letters" .-> {dlx} --> {dlq_id}')
    retries = [q for q in view.queues if q.role == "retry"]
    if retries:
        waiting = sum(q.messages or 0 for q in retries)
        delays = ", ".join(_seconds(q.ttl_ms or 0) for q in retries)
        node = _id("q_", f"{view.service}.retry")
        lines.append(f'  {node}[("{_label(view.service)}.retry.*<br/>{len(retries)} TTL queues: {delays}<br/>'
                     f'{_count(waiting, "message")}")]')
        lines.append(f'  {queue_id} -. "retry / defer" .-> {node} -. "TTL expires" .-> {queue_id}')
    return "\n".join(lines) + "\n"


def render(view: TopologyView, fmt: str) -> str:
    formats: dict[str, Any] = {"text": to_text, "json": to_json, "mermaid": to_mermaid}
    return str(formats[fmt](view))
