"""Metrics middleware, through the OpenTelemetry metrics API (names in ``_conventions.py``).

- ``messaging.client.sent.messages`` (counter): every message handed to the broker;
  ``error.type`` tells the ones it did not take (``PublishNacked``,
  ``ConfirmTimeout``, ``BrokerUnavailable``...) and ``unroutable`` ones; the rest
  were confirmed. Outbox writes are counted when the relay sends them.
- ``messaging.client.operation.duration`` (histogram, s): a publish call, confirms included.
- ``messaging.client.consumed.messages`` (counter): settled messages, by
  ``pubsubpy.outcome`` and ``pubsubpy.reason``.
- ``messaging.process.duration`` (histogram, s): one handler run, by ``pubsubpy.handler``.
- ``pubsubpy.message.end_to_end.duration`` (histogram, s): from publishing (the
  ``pubsubpy-published-at`` header, milliseconds) until the message was settled.
- ``pubsubpy.queue.messages`` (observable gauge): ready messages in a service's queue,
  dead-letter queue and shard queues (``shards=N``), read on a connection of its own
  (``observe_queue_depth``). The message counters carry the queue too: a shard's
  messages are counted under its shard queue.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics
from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

try:
    from opentelemetry.metrics._internal import _ProxyMeterProvider as _Proxy
except ImportError:  # pragma: no cover - an API without the proxy: always measure
    _Proxy = ()  # type: ignore[assignment,misc]

from pubsubpy.deadline import Deadline
from pubsubpy.envelope import published_at
from pubsubpy.errors import PublishError, PublishNacked, TransportError
from pubsubpy.middleware import HandlerContext, HandlerResult, MessageContext, Middleware, PublishContext
from pubsubpy.telemetry import _conventions as c
from pubsubpy.topology import dead_letter_queue, service_queue

if TYPE_CHECKING:
    from pubsubpy.app import PubSub

__all__ = ["Metrics", "observe_pausing", "observe_queue_depth"]

log = logging.getLogger("pubsubpy.telemetry")


def _meter(meter_provider: MeterProvider | None) -> metrics.Meter:
    from pubsubpy._version import __version__

    return metrics.get_meter("pubsubpy", __version__, meter_provider, schema_url=c.SCHEMA_URL)


class _Tally:
    """A counter kept in a dict and reported at collection time (an observable counter): adding costs a
    dict update instead of the SDK's per-measurement attribute work, which dominated a drain's cost."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[tuple[tuple[str, Any], ...], int] = {}

    def add(self, count: int, attributes: tuple[tuple[str, Any], ...]) -> None:
        with self._lock:
            self._counts[attributes] = self._counts.get(attributes, 0) + count

    def observe(self, _options: CallbackOptions) -> Iterable[Observation]:
        with self._lock:
            counts = list(self._counts.items())
        return [Observation(total, dict(attributes)) for attributes, total in counts]


class _GlobalProvider:
    """The key of the global meter provider's tallies (weakly referenceable, unlike ``object()``)."""


_GLOBAL = _GlobalProvider()
_TALLIES: weakref.WeakKeyDictionary[object, tuple[_Tally, _Tally]] = weakref.WeakKeyDictionary()
_TALLIES_LOCK = threading.Lock()


def _tallies(meter_provider: MeterProvider | None, meter: metrics.Meter) -> tuple[_Tally, _Tally]:
    """The sent and consumed tallies of one meter provider, shared by every ``Metrics`` on it: an
    observable counter registers once per name and meter (as the SDK does for its own instruments);
    a second registration would be dropped, and with it that instance's counts."""
    key: object = _GLOBAL if meter_provider is None else meter_provider
    with _TALLIES_LOCK:
        found = _TALLIES.get(key)
        if found is None:
            found = _TALLIES[key] = (_Tally(), _Tally())
            meter.create_observable_counter(c.SENT_MESSAGES, [found[0].observe], unit="{message}",
                                            description="Messages handed to the broker (error.type: not taken)")
            meter.create_observable_counter(c.CONSUMED_MESSAGES, [found[1].observe], unit="{message}",
                                            description="Messages settled, by pubsubpy.outcome")
    return found


class Metrics(Middleware):
    """Counters and histograms for publishing and handling. Uses the global meter provider unless given one."""

    def __init__(self, meter_provider: MeterProvider | None = None, *, system: str = "rabbitmq") -> None:
        meter = _meter(meter_provider)
        self._system = system
        self._active = meter_provider is not None
        self._looked = 0.0
        self._sent, self._consumed = _tallies(meter_provider, meter)
        self._publish_duration = meter.create_histogram(
            c.OPERATION_DURATION, unit="s", description="Duration of a publish, confirms included",
            explicit_bucket_boundaries_advisory=c.DURATION_BUCKETS)
        self._process_duration = meter.create_histogram(
            c.PROCESS_DURATION, unit="s", description="Duration of one handler run",
            explicit_bucket_boundaries_advisory=c.DURATION_BUCKETS)
        # Attributes per (destination, handler, outcome...), built once: the SDK only reads them.
        self._run_attributes: dict[tuple[Any, ...], dict[str, Any]] = {}
        self._settled_attributes: dict[tuple[Any, ...], tuple[tuple[tuple[str, Any], ...], dict[str, Any]]] = {}
        self._latency = meter.create_histogram(
            c.END_TO_END_DURATION, unit="s", description="From publishing to settling the message",
            explicit_bucket_boundaries_advisory=c.DURATION_BUCKETS)

    def active(self) -> bool:
        """Until the application installs a meter provider (the SDK), skip: nothing would be recorded
        (looked up at most once a second; once installed it stays)."""
        if not self._active:
            now = time.monotonic()
            if now - self._looked >= 1.0:
                self._looked = now
                self._active = not isinstance(metrics.get_meter_provider(), _Proxy)
        return self._active

    def publish(self, context: PublishContext, send: Callable[[], list[str]]) -> list[str]:
        if context.stage == "outbox":
            return send()
        started = time.perf_counter()
        errors: dict[str, str] = {}
        try:
            return send()
        except PublishError as exc:
            failed = exc.message_ids or [m.properties.message_id or "" for m in context.messages]
            errors = dict.fromkeys(failed, type(exc).__qualname__)
            if isinstance(exc, PublishNacked):
                errors.update(dict.fromkeys(exc.unroutable, "unroutable"))
            raise
        except Exception as exc:
            errors = {m.properties.message_id or "": type(exc).__qualname__ for m in context.messages}
            raise
        finally:
            errors.update(dict.fromkeys(context.unroutable, "unroutable"))
            self._count_sent(context, errors, time.perf_counter() - started)

    def _count_sent(self, context: PublishContext, errors: dict[str, str], seconds: float) -> None:
        groups: Counter[tuple[str, str | None]] = Counter(
            (c.publish_destination(m.exchange, m.routing_key), errors.get(m.properties.message_id or ""))
            for m in context.messages)
        for (destination, error), count in groups.items():
            attributes: tuple[tuple[str, Any], ...] = (
                (c.MESSAGING_SYSTEM, self._system), (c.OPERATION_NAME, "publish"), (c.DESTINATION_NAME, destination))
            if error is not None:
                attributes += ((c.ERROR_TYPE, error),)
            self._sent.add(count, attributes)
        duration: dict[str, Any] = {c.MESSAGING_SYSTEM: self._system, c.OPERATION_NAME: "publish",
                                    c.OPERATION_TYPE: "send", c.DESTINATION_NAME: context.exchange}
        if errors and any(e != "unroutable" for e in errors.values()):
            duration[c.ERROR_TYPE] = next(e for e in errors.values() if e != "unroutable")
        self._publish_duration.record(seconds, duration)

    def handle(self, context: HandlerContext, run: Callable[[], HandlerResult]) -> HandlerResult:
        started = time.perf_counter()
        result = run()
        error = type(result.exception).__qualname__ if result.exception is not None else None
        key = (context.exchange, context.message.routing_key, context.queue, context.handler, result.outcome, error)
        attributes = self._run_attributes.get(key)
        if attributes is None:
            attributes = {
                c.MESSAGING_SYSTEM: self._system, c.OPERATION_NAME: "process",
                c.DESTINATION_NAME: c.process_destination(context.exchange, context.message.routing_key,
                                                          context.queue),
                c.HANDLER: context.handler, c.OUTCOME: result.outcome.value,
            }
            if error is not None:
                attributes[c.ERROR_TYPE] = error
            _remember(self._run_attributes, key, attributes)
        self._process_duration.record(time.perf_counter() - started, attributes)
        return result

    def after_message(self, context: MessageContext) -> None:
        message = context.message
        key = (context.exchange, message.routing_key, context.queue, context.outcome, context.reason)
        found = self._settled_attributes.get(key)
        if found is None:
            destination = c.process_destination(context.exchange, message.routing_key, context.queue)
            tally: tuple[tuple[str, Any], ...] = (
                (c.MESSAGING_SYSTEM, self._system), (c.OPERATION_NAME, "process"), (c.DESTINATION_NAME, destination),
                (c.OUTCOME, context.outcome.value))
            if context.reason is not None:
                tally += ((c.REASON, context.reason.value),)
            found = (tally, {c.MESSAGING_SYSTEM: self._system, c.DESTINATION_NAME: destination,
                             c.OUTCOME: context.outcome.value})
            _remember(self._settled_attributes, key, found)
        self._consumed.add(1, found[0])
        sent = published_at(message.headers)
        if sent is not None:
            latency = time.time() - sent
            if 0 <= latency < 86_400 * 365:  # a clock far off, or a forged header, is not a latency
                self._latency.record(latency, found[1])


_CACHED_ATTRIBUTES = 1024  # attribute sets kept per ``Metrics``: past that, the cache starts over


def _remember(cache: dict[Any, Any], key: object, value: object) -> None:
    """Keep ``value`` (never changed afterwards) for ``key``; a cache that keeps growing starts over."""
    if len(cache) >= _CACHED_ATTRIBUTES:
        cache.clear()
    cache[key] = value


def observe_queue_depth(app: PubSub, meter_provider: MeterProvider | None = None,
                        timeout: float = 2.0) -> Callable[[], None]:
    """Register ``pubsubpy.queue.messages`` for ``app``'s service queue, dead-letter queue and shards. Read at
    collection time, on a transport of its own (never the worker's connection), each read bounded by
    ``timeout``; a broker that does not answer yields no observation, not a stale one. Returns a
    function that closes that transport."""
    from pubsubpy.transports import make_transport

    service = app.settings.service_name
    if service is None:
        raise ValueError("queue depth needs service_name")
    own = app.settings.scheme != "memory"  # memory:// has no broker to ask from outside: read the app's own
    transport = make_transport(app.settings) if own else app.transport
    lock = threading.Lock()
    queues = [service_queue(service), dead_letter_queue(service)]
    shards = app.topology().shards if app.router.subscriptions else None
    if shards is not None:  # shards=N: each shard queue too (what a worker leaves behind shows per shard)
        queues += [spec.name for spec in shards.queues]
    system = "rabbitmq" if own else "pubsubpy-memory"

    def observe(_options: CallbackOptions) -> Iterable[Observation]:
        observations = []
        with lock:
            deadline = Deadline.after(timeout)
            for queue in queues:
                try:
                    info = transport.queue_info(queue, deadline=deadline)
                except TransportError as exc:
                    log.debug("queue depth of %s not read: %s", queue, exc)
                    continue
                if info is not None:
                    observations.append(Observation(info.messages, {c.MESSAGING_SYSTEM: system, c.QUEUE: queue}))
        return observations

    _meter(meter_provider).create_observable_gauge(
        c.QUEUE_DEPTH, callbacks=[observe], unit="{message}",
        description="Messages ready in the service's queue and its dead-letter queue")

    def close() -> None:
        if own:
            with lock:
                transport.close()

    return close


def observe_pausing(app: PubSub, meter_provider: MeterProvider | None = None) -> None:
    """Register ``pubsubpy.consumer.paused`` (1 per subscription whose dependency is down, pausing the
    worker's consumer) and ``pubsubpy.consumer.pauses`` (how many times it paused), read from ``app.health``."""
    health = app.health
    service = app.settings.service_name or ""

    def paused(_options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(1, {c.HANDLER: name, c.QUEUE: service_queue(service)}) for name in health.paused()]

    def pauses(_options: CallbackOptions) -> Iterable[Observation]:
        return [Observation(health.pauses(), {c.QUEUE: service_queue(service)})]

    meter = _meter(meter_provider)
    meter.create_observable_gauge(c.PAUSED, callbacks=[paused], unit="{subscription}",
                                  description="Subscriptions whose dependency is down (pause_on), pausing the consumer")
    meter.create_observable_counter(c.PAUSES, callbacks=[pauses], unit="{pause}",
                                    description="Times the consumer paused because a dependency was down")
