"""``PubSub``: settings + schemas + router + transport, wired together.

The module-level functions in ``pubsubpy`` use one default instance, created
unconfigured at import (it holds subscriptions made before ``init()``; it
never connects). Create more ``PubSub`` objects for more brokers or services.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import logging
import os
import threading
import traceback
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, TypeVar

from typing_extensions import Unpack

from pubsubpy._consume.executor import ChunkWork
from pubsubpy._consume.loop import LoopHandoff, LoopMode, LoopOptions, consume_queue
from pubsubpy._consume.shards import ShardWorkers, merged, previous_shard_queues
from pubsubpy._credentials import resolve_url
from pubsubpy._engine import Engine, Item, Verdict
from pubsubpy._replay.dry_run import AlreadyRun
from pubsubpy._replay.handover import Backfill, checkpoint_name
from pubsubpy._replay.rebuild import forget_for_rebuild, replay_warnings
from pubsubpy._replay.runner import LogReplay, Progress, ReplayOptions
from pubsubpy._replay.window import Point, parse_point
from pubsubpy._worker import handle_signals, worker_prefetch
from pubsubpy.deadletters import DeadLetter, DeadLetterFilter, DeadLetterStore, ShardedReplay
from pubsubpy.deadline import Deadline
from pubsubpy.errors import ConfigurationError, ReplayStopped, TransportError
from pubsubpy.health import WorkerHealth
from pubsubpy.inbox import Inbox, OrderedInbox, ReplayInbox
from pubsubpy.messages import DrainResult, ReplayResult
from pubsubpy.middleware import Middleware, MiddlewareChain, PublishContext
from pubsubpy.publisher import EventSpec, OutboxWriter, Publisher
from pubsubpy.router import ExceptionTypes, Router
from pubsubpy.schemas import ModelEvent, SchemaRegistry, default_catalog
from pubsubpy.settings import Settings, SettingsOptions
from pubsubpy.telemetry import telemetry_middleware
from pubsubpy.topology import SHARDS_ARROW, binding_names, build_topology, event_log, event_log_name, service_queue
from pubsubpy.transports import make_transport
from pubsubpy.transports.base import OutgoingMessage, Topology, Transport

__all__ = ["PubSub", "check_drain"]

F = TypeVar("F", bound=Callable[..., Any])

log = logging.getLogger("pubsubpy.worker")


def _caller() -> str:
    """Where the user called in from: the innermost frame outside this package."""
    package = os.path.dirname(os.path.abspath(__file__))
    for frame in reversed(traceback.extract_stack()):
        if not os.path.abspath(frame.filename).startswith(package + os.sep):
            return f"{frame.filename}:{frame.lineno}"
    return "<unknown>"


def check_drain(max_messages: int | None, timeout: float, concurrency: int) -> None:
    if max_messages is not None and max_messages < 1:
        raise ConfigurationError(f"max_messages must be >= 1, got {max_messages}")
    if timeout <= 0:
        raise ConfigurationError(f"timeout must be > 0 seconds, got {timeout}")
    if concurrency < 1:
        raise ConfigurationError(f"concurrency must be >= 1, got {concurrency}")


class PubSub:
    """One service's connection to one broker: its settings, schemas, subscriptions and transport.

    ```python
    app = PubSub("amqp://billing@rabbit:5672/%2F", service_name="billing", max_attempts=5)

    @app.subscribe("Booking.*")
    def on_booking(event: BookingUpdated) -> None: ...

    app.declare()                 # at deploy time
    app.run(concurrency=8)        # a worker; or app.drain() now and then
    ```

    Making one never connects: the first publish, drain or declare does. Several instances coexist (two
    services, two brokers); the module-level functions (``pubsubpy.init``, ``pubsubpy.subscribe``...) use
    one default instance with the same methods.

    Args:
        amqp_url: the broker: ``amqp://user:password@host:5672/vhost``, ``amqps://...`` (TLS), several
            comma-separated URLs (failover), or ``memory://`` / ``memory://NAME`` (the in-process broker,
            shared by every ``PubSub`` naming it). ``None``: ``$PUBSUBPY_URL``, else ``memory://``; a URL with
            a user but no password takes it from the file ``$PUBSUBPY_PASSWORD_FILE``.
        schemas: the event schemas this instance knows. ``None``: every ``ModelEvent`` subclass defined with
            ``register=True`` (the default catalogue).
        transport: a transport to use instead of the one the URL names (tests).
        inbox: what runs ``idempotent=True`` handlers once per message id (an ``Inbox``).
        publishes: the schemas this service publishes (AsyncAPI, the event catalogue, ``topology``).
        middleware: ``Middleware`` instances, the first the outermost.
        **options: the fields of ``pubsubpy.settings.Settings``, typed in ``SettingsOptions``.

    Raises:
        ConfigurationError: an unknown option or a bad value, naming the field and the value; a TLS or
            password file that cannot be read.
    """

    def __init__(
        self,
        amqp_url: str | None = None,
        *,
        schemas: Iterable[type[ModelEvent]] | None = None,
        transport: Transport | None = None,
        inbox: Inbox | None = None,
        publishes: Iterable[type[ModelEvent]] | None = None,
        middleware: Iterable[Middleware] | None = None,
        **options: Unpack[SettingsOptions],
    ) -> None:
        self._blank(default_catalog if schemas is None else SchemaRegistry(schemas), transport)
        self.configure(amqp_url, inbox=inbox, publishes=publishes, middleware=middleware, **options)

    @classmethod
    def unconfigured(cls) -> PubSub:
        """An instance that collects subscriptions until ``configure()`` (what the default instance is at
        import)."""
        self = cls.__new__(cls)
        self._blank(default_catalog, None)
        return self

    def _blank(self, registry: SchemaRegistry, transport: Transport | None) -> None:
        """Every attribute, as before ``configure()``."""
        self._router = Router()
        self._lock = threading.RLock()
        self._settings: Settings | None = None
        self._configured_at: str | None = None
        self._registry = registry
        self._transport: Transport | None = transport
        self._declared: Topology | None = None
        self._exchange_ready = False
        self._cached_publisher: Publisher | None = None
        self._inbox: Inbox | None = None
        self._outbox: OutboxWriter | None = None
        self._middleware: MiddlewareChain | None = None
        self.publishes: list[type[ModelEvent]] | None = None
        self.health = WorkerHealth()  # run() reports here; the worker's /healthz reads it
        self.async_view: object | None = None  # its AsyncPubSub.of(self), made on first use

    # -- configuration -------------------------------------------------------------
    def configure(
        self,
        amqp_url: str | None = None,
        *,
        schemas: Iterable[type[ModelEvent]] | None = None,
        transport: Transport | None = None,
        inbox: Inbox | None = None,
        publishes: Iterable[type[ModelEvent]] | None = None,
        middleware: Iterable[Middleware] | None = None,
        **options: Unpack[SettingsOptions],
    ) -> None:
        """Set the options of an unconfigured instance (``init()`` does this for the default one).

        Takes the constructor's arguments. ``amqp_url=None``: ``$PUBSUBPY_URL``, else ``memory://``; a URL
        with a user but no password takes it from the file ``$PUBSUBPY_PASSWORD_FILE``.

        Raises:
            ConfigurationError: the instance is already configured, or an option is bad.
        """
        with self._lock:
            if self._settings is not None:
                raise ConfigurationError(
                    f"pubsubpy is already initialised (first call at {self._configured_at}); call init() once, "
                    "or pubsubpy.testing.reset() between tests"
                )
            url = resolve_url(amqp_url, auth=options.get("auth", "plain"))
            self._settings = Settings.build(amqp_url=url, **options)
            if inbox is not None:
                self._inbox = inbox
            if publishes is not None:  # what this service sends (AsyncAPI, the catalogue, topology)
                self.publishes = list(publishes)
            if transport is not None:
                self._transport = transport
            if schemas is not None:
                self._registry = SchemaRegistry(schemas)
            chain = MiddlewareChain([*telemetry_middleware(self._settings), *(middleware or ())])
            self._middleware = chain if chain.middleware else None
            self._configured_at = _caller()

    @property
    def settings(self) -> Settings:
        """The validated ``Settings`` (read-only).

        Raises:
            ConfigurationError: the instance is not configured yet (``init()`` was not called).
        """
        if self._settings is None:
            raise ConfigurationError("pubsubpy is not initialised: call pubsubpy.init(amqp_url=..., ...) first")
        return self._settings

    @property
    def middleware(self) -> MiddlewareChain | None:
        """The middleware chain (the library's telemetry, then yours), or None when there is none."""
        return self._middleware

    @property
    def inbox(self) -> Inbox | None:
        """What runs ``idempotent=True`` handlers once per message id, or None (``use_inbox``)."""
        return self._inbox

    @property
    def outbox(self) -> OutboxWriter | None:
        """Where publishes go instead of the broker when an outbox is on (Django ``OUTBOX``), else None."""
        return self._outbox

    @property
    def configured(self) -> bool:
        """Whether the instance has its settings (made with arguments, or ``configure()``/``init()`` ran)."""
        return self._settings is not None

    @property
    def registry(self) -> SchemaRegistry:
        """The schemas this instance knows: the default catalogue, or ``schemas=`` given to it."""
        return self._registry

    @property
    def router(self) -> Router:
        """The subscriptions made with ``subscribe``."""
        return self._router

    @property
    def transport(self) -> Transport:
        """The transport the URL names (RabbitMQ or the memory broker), made on first use."""
        transport = self._transport
        if transport is not None:  # the hot path: no lock once it exists
            return transport
        with self._lock:
            if self._transport is None:
                self._transport = make_transport(self.settings)
            return self._transport

    def _service(self) -> str:
        service = self.settings.service_name
        if service is None:
            raise ConfigurationError("service_name is not set: init(service_name=...) names this service's queues")
        return service

    def __repr__(self) -> str:
        if self._settings is None:
            return "<PubSub unconfigured>"
        s = self._settings
        return f"<PubSub {s.display_url} exchange={s.model_exchange!r} service={s.service_name!r}>"

    # -- subscribing ---------------------------------------------------------------
    def subscribe(self, pattern: str, *, max_attempts: int | None = None,
                  idempotent: bool = False, ordered: bool = False, pause_on: ExceptionTypes = (),
                  retry_on: ExceptionTypes = (), dead_letter_on: ExceptionTypes = (),
                  time_limit: float | None = None) -> Callable[[F], F]:
        """Register the decorated function as a handler for routing keys matching ``pattern``.

        Works before ``configure()``, and does no I/O. The annotation of the handler's first parameter says which
        events it accepts: a ``ModelEvent`` subclass, a union of them, ``ModelEvent`` (all), or ``dict``
        (schema-less events). An optional second parameter (required, or annotated ``MessageInfo``) receives
        the message's metadata. A handler that raises ``Reject`` dead-letters the message at once; any other
        exception is a failed attempt, retried while attempts are left. ``async def`` handlers need
        ``pubsubpy.aio.AsyncPubSub`` or ``pubsubpy worker``.

        ```python
        @app.subscribe("Booking.*")
        def on_booking(event: BookingUpdated, info: MessageInfo) -> None: ...
        ```

        Args:
            pattern: a RabbitMQ topic pattern: words separated by ``.``, ``*`` for exactly one word, ``#`` for
                zero or more (``"Booking.*"``, ``"*.deleted"``, ``"#"``).
            max_attempts: runs of this handler per message before the message is dead-lettered as
                ``handler_error``. ``None``: the ``max_attempts`` setting.
            idempotent: run the handler once per message id, recorded by the inbox in the same transaction as
                the handler's effects (needs an inbox: the Django app, or ``PubSub(inbox=...)``).
            ordered: events of one ordering key (``MessageInfo.key``) run one at a time, in arrival order,
                different keys in parallel up to ``concurrency``; a failure is retried in the key's lane, holding
                only that key's later events. With ``idempotent=True`` the inbox also skips an event whose
                sequence is not newer than the key's last applied (``DrainResult.stale``). See the ordering page.
            pause_on: exception classes that mean the handler's dependency is down (``DownstreamUnavailable``):
                the message goes back unsettled, its attempt not counted, and the consumer pauses; a worker
                then probes with one message after ``pause_probe_delay`` (doubling) and consumes again once
                one succeeds; a drain stops. Matched first. See "When a dependency is down".
            retry_on: exception classes retried while attempts are left, as any exception not listed in
                ``dead_letter_on`` is (it says so where the reader looks).
            dead_letter_on: exception classes that dead-letter the message at once, reason ``rejected``, as
                ``Reject`` does (a bad payload a retry cannot fix). Matched with ``isinstance`` after
                ``pause_on`` and before ``retry_on``; a class in two lists is a ``ConfigurationError``.
            time_limit: seconds a run may take: one still going then fails with ``TimeLimitExceeded``
                (retried, or dead-lettered as ``time_limit``) and its message is settled. A ``def`` handler
                runs on a thread of its own, abandoned at the limit (Python cannot kill a thread: a late
                effect races the retry unless ``idempotent=True``); an ``async def`` one is cancelled.
                When more abandoned runs are still going than ``concurrency``, a worker stops and exits
                with code 75 for its supervisor to restart it.

        Returns:
            A decorator that registers the function and returns it unchanged.

        Raises:
            InvalidTopic: ``pattern`` is malformed: a partial wildcard (``Book*``), an empty word (``a..b``).
            ConfigurationError: ``max_attempts`` is not a positive int, ``time_limit`` is not a positive
                number of seconds, an exception list holds something other than exception classes or a class
                in two lists, or the function does not take
                ``(event)`` or ``(event, info)``. An annotation that does not accept a schema the pattern
                matches is reported when consuming starts, listing every conflict.
        """
        decorator = self._router.subscribe(pattern, max_attempts=max_attempts, idempotent=idempotent,
                                           ordered=ordered, pause_on=pause_on, retry_on=retry_on,
                                           dead_letter_on=dead_letter_on, time_limit=time_limit)
        with self._lock:
            self._declared = None
        return decorator

    # -- topology ------------------------------------------------------------------
    def topology(self) -> Topology:
        """What ``declare()`` would create for this service, computed without I/O.

        Raises:
            ConfigurationError: ``service_name`` is not set.
        """
        settings = self.settings
        subscriptions = self._router.subscriptions
        attempts = max([settings.max_attempts, *(s.max_attempts or 0 for s in subscriptions)])
        sharded = bool(settings.shards)
        patterns = frozenset(s.pattern for s in subscriptions if not (sharded and s.ordered))
        ordered = frozenset(s.pattern for s in subscriptions if s.ordered)
        return build_topology(settings, self._service(), patterns, attempts,
                              parking=any(s.pause_on for s in subscriptions), ordered=ordered)

    def declare(self, *, prune: bool | Collection[str] = False, deadline: Deadline | None = None) -> Topology:
        """Create the exchange, queues and this version's bindings now (at deploy time), so nothing
        published before the first drain is lost.

        Additive: bindings of other versions of the service, and ones made by hand, stay.
        ``prune=True`` also removes the bindings pubsubpy made that this version no longer
        subscribes (``stale_bindings()``); a collection of patterns removes just those of them
        that are stale. Prune after every instance runs the new version, never during a deploy.

        Args:
            prune: ``False``, ``True``, or a collection of patterns to remove if stale.
            deadline: a ``Deadline`` bounding the call.

        Returns:
            The ``Topology`` declared.

        Raises:
            ConfigurationError: ``service_name`` is not set, ``prune`` is a string, or a queue exists with
                other arguments (named). Arguments pubsubpy added in a later release are not an error: the
                log gives the ``rabbitmqctl set_policy`` command that upgrades such a queue in place.
            PermissionDenied: the broker user lacks a permission (the error names which and where).
            BrokerUnavailable: the broker could not be reached.
        """
        if isinstance(prune, str):
            raise ConfigurationError(f"prune takes True or a collection of patterns, not the string {prune!r}")
        topology = self.topology()
        self.transport.declare(topology, deadline=deadline)
        self._declare_log(deadline)
        with self._lock:
            self._declared = topology
            self._exchange_ready = True
        if prune is not False:
            stale = set(self._stale(topology, deadline))
            targets = stale if prune is True else stale & set(prune)
            for name in self.transport.prune_bindings(topology, targets, deadline=deadline):
                pattern, arrow, shards = name.partition(SHARDS_ARROW)
                log.warning("pruned binding %s -> %s (%s): no handler of this version subscribes it%s",
                            topology.exchange, shards or topology.queue.name, pattern,
                            " through these shards" if arrow else "")
        return topology

    def stale_bindings(self, *, timeout: float | None = None) -> list[str]:
        """The patterns pubsubpy bound for this service that this version no longer subscribes.

        What ``declare(prune=True)`` would remove; bindings made by hand are never listed. A binding to a shards
        exchange (``shards=N``) that this version no longer has is named ``"<pattern> -> <service>.shards"``
        (after shards were turned off, or the shards of an earlier ``shards_version``).

        Args:
            timeout: seconds bounding the call. ``None``: the transport's bound.

        Returns:
            The stale patterns, sorted.
        """
        return self._stale(self.topology(), None if timeout is None else Deadline.after(timeout))

    def _stale(self, topology: Topology, deadline: Deadline | None) -> list[str]:
        return sorted(self.transport.recorded_bindings(topology, deadline=deadline) - binding_names(topology))

    def _ensure_declared(self, deadline: Deadline | None = None) -> None:
        if self._declared is None or self._declared != self.topology():
            self.declare(deadline=deadline)

    # -- publishing ----------------------------------------------------------------
    @property
    def publisher(self) -> Publisher:
        """What encodes events (validation, envelope, size) and sends them; made at first use."""
        publisher = self._cached_publisher
        if publisher is None:
            publisher = self._cached_publisher = Publisher(self.settings, self._registry)
        return publisher

    def use_inbox(self, inbox: Inbox) -> None:
        """Run ``idempotent=True`` handlers through ``inbox`` (the Django app installs its own when the
        instance was configured without one)."""
        self._inbox = inbox

    def use_middleware(self, middleware: Iterable[Middleware]) -> None:
        """Replace the whole middleware chain, the library's telemetry included (``middleware.middleware``
        is the current list): ``pubsubpy.testing.capture`` adds its recorder this way."""
        chain = list(middleware)
        self._middleware = MiddlewareChain(chain) if chain else None

    def use_outbox(self, outbox: OutboxWriter | None) -> None:
        """Write publishes to ``outbox`` instead of sending them (Django's ``OUTBOX``); None: send again."""
        self._outbox = outbox

    def _ensure_exchange(self) -> None:
        """Before the first publish: the exchange, and this service's own queue and bindings
        when it has subscriptions, so an instance that publishes and drains never loses its
        own first events."""
        if self._exchange_ready:
            return
        if self._router.subscriptions and self.settings.service_name is not None:
            self._ensure_declared()
        elif not self._declare_log(None):
            self.transport.declare_exchange(self.settings.model_exchange)
        self._exchange_ready = True

    def _declare_log(self, deadline: Deadline | None) -> bool:
        """With ``event_log`` set: the exchange, and the event log bound from it (False: no log)."""
        stream = event_log(self.settings)
        if stream is not None:
            self.transport.declare_log(self.settings.model_exchange, stream, deadline=deadline)
        return stream is not None

    def publish_model_event(self, model: str, event: str, obj: Any, *, version: int | None = None,
                            headers: Mapping[str, str | int | bool] | None = None,
                            correlation_id: str | None = None, key: object | None = None) -> str:
        """Validate one event against its schema and publish it, confirmed by the broker.

        Nothing is sent unless the payload validates. The routing key is ``<last segment of model>.<event>``
        (``Booking.updated``); the message is persistent and carries a fresh message id.

        Args:
            model: the full path of the model the event is about (``"shop.models.Booking"``).
            event: what happened to it, one word (``"updated"``).
            obj: the payload: a mapping, an instance of the schema, or any object whose attributes fill the
                schema (a Django model instance).
            version: send this registered version of the event instead of the newest (an instance of a
                version names its own).
            headers: your own headers: names not starting with ``pubsubpy-`` or ``x-``; values text,
                integers or booleans. Handlers read them in ``MessageInfo.headers``.
            correlation_id: the AMQP ``correlation_id`` property (``MessageInfo.correlation_id``).
            key: the ordering key's value (``pubsubpy-key: <model>:<key>``) when the schema names no ``key=``
                field; Django model events pass the primary key. Must agree with the field when it does.

        Returns:
            The message id, once the broker has confirmed the message. With Django's ``OUTBOX`` on, once the
            row is written in the current transaction (a relay publishes it after the commit).

        Raises:
            UnknownEventType: no schema is registered for ``(model, event)`` (or that ``version``), unless
                ``require_schemas=False``.
            PayloadValidationError: the payload does not satisfy the schema (unknown fields, wrong types,
                NaN/Infinity, nested deeper than ``max_json_depth``), or a header is refused.
            MessageTooLarge: the encoded body is over ``max_message_size``.
            InvalidTopic: ``event`` is not one word.
            UnroutableMessage: no queue is bound for the routing key and ``on_unroutable="raise"``.
            PublishNacked: the broker refused the message until the publish deadline.
            ConfirmTimeout: no confirm within ``confirm_timeout``: the message may or may not be stored.
            BrokerUnavailable: the broker could not be reached within the connection attempts.
            PermissionDenied: the broker user may not publish to the exchange.
        """
        message = self.publisher.encode(model, event, obj, version, headers, correlation_id, key)
        return self.deliver([message], batch=False)[0]

    def deliver(self, messages: list[OutgoingMessage], *, batch: bool) -> list[str]:
        """Encoded messages (``publisher.encode``) to the outbox when one is on, else to the broker,
        confirmed, through the publishing middleware; their ids. ``AsyncPubSub`` publishes this way."""
        outbox = self._outbox
        if outbox is not None:
            send: Callable[[], list[str]] = functools.partial(outbox.write, messages)
            context = PublishContext(messages, "outbox", batch, self.settings.model_exchange)
        else:
            self._ensure_exchange()
            context = PublishContext(messages, "send", batch, self.settings.model_exchange)
            send = functools.partial(self.publisher.send, self.transport, messages, context.unroutable)
        active = self._middleware.publishers() if self._middleware is not None else None
        return MiddlewareChain.publish(active, context, send) if active else send()

    def send(self, messages: list[OutgoingMessage]) -> list[str]:
        """Encoded messages straight to the broker (never the outbox), confirmed, through the publishing
        middleware; the ids of mandatory ones no queue took. The outbox relay's way out."""
        self._ensure_exchange()
        active = self._middleware.publishers() if self._middleware is not None else None
        if not active:
            return self.transport.publish(messages)
        context = PublishContext(messages, "relay", True, self.settings.model_exchange)

        def send() -> list[str]:
            context.unroutable[:] = self.transport.publish(messages)
            return [m.properties.message_id or "" for m in messages]

        MiddlewareChain.publish(active, context, send)
        return list(context.unroutable)

    def publish_many(self, events: Iterable[EventSpec]) -> list[str]:
        """Validate every event first, then publish them all, each confirmed, in one round of confirms.

        ```python
        pubsubpy.publish_many([("shop.models.Booking", "updated", booking) for booking in bookings])
        ```

        Args:
            events: ``(model, event, obj)`` tuples, optionally with a fourth item, a dict of per-message options
                (``version``, ``headers``, ``correlation_id``: see ``publish_model_event``).

        Returns:
            The message ids, in order.

        Raises:
            PayloadValidationError: a payload is invalid (also ``UnknownEventType``, ``MessageTooLarge``):
                raised before anything is sent.
            PublishError: the broker did not take some messages (``PublishNacked``, ``UnroutableMessage``,
                ``ConfirmTimeout``); its ``message_ids`` name them, every other message was confirmed.
            BrokerUnavailable: the broker could not be reached.
        """
        messages = self.publisher.encode_many(events)
        if not messages:
            return []
        return self.deliver(messages, batch=True)

    # -- consuming -----------------------------------------------------------------
    def drain(
        self,
        *,
        max_messages: int | None = None,
        timeout: float = 60.0,
        concurrency: int = 1,
        on_message: Callable[[DrainResult], None] | None = None,
    ) -> DrainResult:
        """Consume what is outstanding in this service's queue, then return what happened.

        Runs the matching handlers of each message and settles it: acked when handled, a retry copy when a
        handler failed with attempts left, a dead letter otherwise (every copy confirmed before the original
        is acked). Stops when the queue is empty (asked of the broker), after ``max_messages``, or at
        ``timeout``.

        Args:
            max_messages: stop after this many messages. ``None``: until the queue is empty.
            timeout: seconds for the whole call, connecting and declaring included; a handler still running
                then gets ``shutdown_timeout`` to finish.
            concurrency: handlers running at once, on threads (for I/O-bound handlers); 1 runs them in queue
                order.
            on_message: called with the running ``DrainResult`` after each settled message (progress).

        Returns:
            A ``DrainResult``: counts of handled, retried, deferred and dead-lettered messages, and the reasons.

        Raises:
            ConfigurationError: ``service_name`` is not set, there are no subscriptions, an ``async def``
                handler (use ``AsyncPubSub``), ``idempotent=True`` without an inbox, or handler annotations that
                do not accept the schemas their patterns match.
            BrokerUnavailable: the broker could not be reached within the timeout.
            OperationTimeout: the broker did not answer in time.
        """
        check_drain(max_messages, timeout, concurrency)
        return self.drain_with(None, max_messages=max_messages, timeout=timeout, concurrency=concurrency,
                               on_message=on_message)

    def drain_with(self, handoff: LoopHandoff | None, *, max_messages: int | None = None, timeout: float = 60.0,
                   concurrency: int = 1, on_message: Callable[[DrainResult], None] | None = None,
                   stop: threading.Event | None = None) -> DrainResult:
        """``drain()`` for a runtime with an event loop for ``async def`` handlers (``handoff``, a
        ``pubsubpy.aio._handoff.LoopHandoff``; ``AsyncPubSub.drain`` is the way in for users). ``stop`` ends
        it early as ``run()``'s does. The arguments are not checked again (``check_drain``)."""
        deadline = Deadline.after(timeout)
        service, engine, work_chunk = self._prepare_consumer(handoff)
        options = LoopOptions(self.settings.prefetch, concurrency, max_messages, deadline=deadline,
                              on_message=on_message, middleware=self._middleware, stop=stop,
                              declare=self._ensure_declared, redeclare=self._redeclare, work_chunk=work_chunk)
        result = consume_queue(self.settings, service, self.transport, engine, options)
        shards = self.topology().shards if self._sharded() else None
        if shards is None:
            return result
        results = [result]
        queues = previous_shard_queues(self.transport, shards) + [spec.name for spec in shards.queues]
        for queue in queues:  # then each shard in turn, older generation first (one a worker holds gives nothing)
            left = None if max_messages is None else max_messages - sum(r.messages for r in results)
            if result.stopped_by not in ("empty", "max_messages") or left == 0 or deadline.expired:
                break
            engine, chunk = self._shard_engine(handoff, queue)
            result = consume_queue(self.settings, service, self.transport, engine, dataclasses.replace(
                options, queue=queue, max_messages=left, work_chunk=chunk, declare=None))
            results.append(result)
        total = merged(results)
        total.seconds = sum(r.seconds for r in results)
        return total

    def run(self, concurrency: int = 1, stop: threading.Event | None = None, *,
            backfill: Point | None = None) -> DrainResult:
        """Consume until ``stop`` is set (or SIGTERM/SIGINT, when called in the main thread).

        Up to ``concurrency`` handlers run at once, on threads. Unless ``prefetch`` was set, the
        worker prefetches ``4 * concurrency`` messages. Never gives up on the broker: it reconnects
        with capped backoff. Returns what it did; ``result.stopped_by == "forced"`` or
        ``result.abandoned`` mean handlers were cut short (their messages went back to the queue).

        A graceful stop (``stop`` set, SIGTERM or SIGINT): no new message starts, prefetched ones go back,
        running handlers finish and are acked. A handler still running after ``shutdown_timeout``, or a
        second signal, forces the stop: its message goes back unacked.

        ``backfill`` (a new service's first start): replay the event log from then first, and hand over to the
        live queue with no gap and no event run twice (see ``replay()`` and the replay how-to).

        Args:
            concurrency: handlers running at once, on threads.
            stop: set it to stop the worker.
            backfill: the forms of ``replay(since=...)``; None: no replay.

        Returns:
            A ``DrainResult`` of what the worker did (the backfill's events not counted).

        Raises:
            ConfigurationError: as ``drain()``, or ``concurrency`` below 1.
            LogGap, ReplayStopped: as ``replay()``, for the backfill (a stop during it returns, ``stopped_by``
                ``"stopped"``).
        """
        if concurrency < 1:
            raise ConfigurationError(f"concurrency must be >= 1, got {concurrency}")
        stop, force = stop if stop is not None else threading.Event(), threading.Event()
        with handle_signals(stop, force):  # a stop during the backfill too: it resumes from its checkpoint
            skip = None
            if backfill is not None:
                try:
                    skip = self._backfill(backfill, stop=stop)[1]
                except ReplayStopped:
                    if not stop.is_set():
                        raise
                    log.info("worker stopped during its backfill; the next start resumes it")
                    return DrainResult(stopped_by="stopped")
            return self.run_with(None, concurrency, stop, force, signals=False, skip_ids=skip)

    def _backfill(self, since: Point, *, progress: Progress | None = None, allow_gap: bool = False,
                 stop: threading.Event | None = None) -> tuple[ReplayResult, frozenset[str]]:
        """The replay before a worker's live loop (``run(backfill=...)``): its result, and the ids of the events it
        ran that the live queue also holds, for the loop to skip (``pubsubpy/_replay/handover.py``)."""
        service, engine, router = self._replay_engine(None)
        options = ReplayOptions(parse_point(since, dt.datetime.now(dt.timezone.utc)), allow_gap=allow_gap,
                                progress=progress, stop=stop, prefetch=self.settings.prefetch,
                                middleware=self._middleware)
        store = self._inbox if isinstance(self._inbox, ReplayInbox) else None
        return Backfill(self.transport, event_log_name(self.settings.model_exchange), service_queue(service),
                        self._ensure_declared, lambda made: LogReplay(self.settings, service, self.transport, engine,
                                                                      router, made),
                        store, checkpoint_name(service)).run(options)

    def run_with(self, handoff: LoopHandoff | None, concurrency: int, stop: threading.Event, force: threading.Event,
                 *, signals: bool, skip_ids: frozenset[str] | None = None) -> DrainResult:
        """``run()`` for a runtime with an event loop for ``async def`` handlers (``handoff``; ``AsyncPubSub.run``
        and ``pubsubpy worker`` are the ways in for users): ``force`` cuts the grace period short, and
        ``signals`` installs SIGTERM/SIGINT handlers (main thread only)."""
        service, engine, work_chunk = self._prepare_consumer(handoff)
        settings = self.settings
        explicit = settings.prefetch if "prefetch" in settings.model_fields_set else None
        prefetch = worker_prefetch(explicit, concurrency)
        with handle_signals(stop, force) if signals else contextlib.nullcontext():
            log.info("worker started: service %s, queue %s, patterns %s, concurrency %d, prefetch %d", service,
                     service_queue(service), ", ".join(sorted(self._router.patterns)), concurrency, prefetch)
            options = LoopOptions(prefetch, concurrency, mode=LoopMode.WORK, stop=stop, force=force,
                                  middleware=self._middleware, health=self.health, declare=self._ensure_declared,
                                  redeclare=self._redeclare, work_chunk=work_chunk, skip_ids=skip_ids)
            shards = self.topology().shards if self._sharded() else None
            workers = None if shards is None else ShardWorkers(
                settings, service, self.transport, shards, functools.partial(self._shard_engine, handoff), options)
            if workers is not None:
                workers.start()
            try:
                result = consume_queue(settings, service, self.transport, engine, options)
            finally:
                sharded = workers.close() if workers is not None else None  # (its loops stop with ``stop``)
            if sharded is not None:
                result = merged([result, sharded])
        log.info("worker stopped (%s): %s", result.stopped_by, result)
        return result

    def replay(self, since: Point, until: Point | None = None, patterns: Collection[str] | None = None, *,
               dry_run: bool = False, allow_gap: bool = False, rebuild: bool = False, force: bool = False,
               progress: Progress | None = None, stop: threading.Event | None = None) -> ReplayResult:
        """Run this service's handlers over the event log (``event_log``) from ``since``, in log order.

        For a service that starts late, a database restored from a backup, a read model rebuilt: the events
        published in ``[since, until]`` (by their publish time) go through the same engine as live ones
        (validation, upcasting, middleware, the inbox), one at a time. Events an idempotent subscription's inbox
        already holds are skipped (a late join, a resume); the same message id twice in the log runs once. A failed
        handler is retried in place after the retry delay, up to its attempts, then dead-lettered with
        ``pubsubpy-replayed`` (the replay's id). Nothing enters the live queue. Reads up to the moment it starts
        (a marker it writes into the log); what comes later is the live queue's.

        Args:
            since: a datetime (naive is UTC), a timedelta or a duration before now (``"7d"``, ``"12h"``), or an ISO
                8601 time (``"2026-12-01T00:00Z"``).
            until: the same forms; None: up to now.
            patterns: replay only the subscriptions of these patterns (each must be subscribed here).
            dry_run: run no handler; count what would run, dead-letter, or was outside the window, and what the
                idempotent handlers' inbox already holds.
            allow_gap: replay what is left when retention dropped the start of the window.
            rebuild: run every event again (a read model rebuilt from scratch): the inbox forgets the records and
                the stale guard of the idempotent handlers replayed first. Refused while the service's queues have
                consumers (stop the workers), unless ``force``.
            force: with ``rebuild``, even while workers consume.
            progress: called after each event with the running result and the share of the window read.
            stop: set it to stop the replay (``ReplayStopped``).

        Returns:
            A ``ReplayResult`` (a ``DrainResult`` with the window, what was read and skipped, and per-key counts).

        Raises:
            ConfigurationError: as ``drain()``; a bad ``since``/``until``/``patterns``; no event log on the broker;
                ``rebuild`` while workers consume, or with idempotent handlers whose inbox cannot forget
                (``ReplayInbox``).
            LogGap: retention dropped the start of the window (and not ``allow_gap``).
            ReplayStopped: a handler's dependency is down (``pause_on``), ``stop`` was set, or the log stopped
                delivering; ``resume_from`` says where to start again.
        """
        service, engine, router = self._replay_engine(patterns)
        now = dt.datetime.now(dt.timezone.utc)
        options = ReplayOptions(parse_point(since, now), None if until is None else parse_point(until, now, "until"),
                                dry_run=dry_run, allow_gap=allow_gap, progress=progress, stop=stop,
                                prefetch=self.settings.prefetch, middleware=self._middleware)
        inbox = self._inbox if isinstance(self._inbox, ReplayInbox) else None
        warnings = replay_warnings(self._inbox, options.since, now)
        if dry_run and inbox is not None:
            options.already_run = AlreadyRun(inbox, router)
        elif rebuild:
            forget_for_rebuild(self.transport, self.topology(), router, self._inbox, force=force)
        if not dry_run:
            self._ensure_declared()  # its dead-letter exchange; the queue buffers live events from now on
        result = LogReplay(self.settings, service, self.transport, engine, router, options).run()
        result.warnings.extend(warnings)
        return result

    def _replay_engine(self, patterns: Collection[str] | None) -> tuple[str, Engine, Router]:
        """The engine a replay runs: the subscriptions of ``patterns`` (all: None), a key no schema here knows
        dead-lettered at once (no other version will take it from the log)."""
        service = self._consumable(None)
        router = self._router
        if patterns is not None:
            if isinstance(patterns, str):
                raise ConfigurationError(f"patterns takes a collection of patterns, not the string {patterns!r}")
            unknown = sorted(set(patterns) - router.patterns)
            if unknown:
                raise ConfigurationError(f"pattern(s) {', '.join(unknown)} are not subscribed here; the subscribed "
                                         f"ones are {', '.join(sorted(router.patterns))}")
            wanted = frozenset(patterns)
            router = router.subset(lambda sub: sub.pattern in wanted)
        settings = self.settings.model_copy(update={"unknown_key_window": 0.0})
        engine = Engine(settings, router, self._registry, self._inbox, self._middleware, event_log_name(
            self.settings.model_exchange))
        return service, engine, router

    def _redeclare(self, deadline: Deadline | None) -> None:
        """The broker cancelled the consumer (its queue was deleted): declare everything again."""
        self.declare(deadline=deadline)

    def _prepare_consumer(self, handoff: LoopHandoff | None = None
                          ) -> tuple[str, Engine, ChunkWork[Item, Verdict] | None]:
        """The service, its engine, and with ``handoff`` how a chunk's ``async def`` handlers reach the loop."""
        service = self._consumable(handoff)
        if self._sharded():  # the ordered subscriptions are fed by the shards (``shard_engine``)
            engine = self._engine(service_queue(service), self._router.subset(lambda sub: not sub.ordered), handoff)
            engine.sharded = self._router.subset(lambda sub: sub.ordered)
        else:
            engine = self._engine(service_queue(service), self._router, handoff)
        return service, engine, handoff.chunk_work(engine) if handoff else None

    def _consumable(self, handoff: LoopHandoff | None) -> str:
        """The service, once its subscriptions are checked (async ones need ``handoff``) and resolved."""
        service = self._service()
        if not self._router.subscriptions:
            raise ConfigurationError(f"service {service!r} has no subscriptions: decorate a handler with @subscribe")
        asynchronous = [s.name for s in self._router.subscriptions if s.is_async]
        if asynchronous and handoff is None:
            raise ConfigurationError(
                f"handler(s) {', '.join(asynchronous)} are `async def`: a PubSub calls handlers on threads and "
                "cannot await them. Consume with pubsubpy.aio.AsyncPubSub (`await app.drain()` / `await app.run()`, "
                "the same arguments and subscriptions), or run `pubsubpy worker`, which runs an event loop for them")
        idempotent = [s.name for s in self._router.subscriptions if s.idempotent]
        if idempotent and self._inbox is None:
            raise ConfigurationError(
                f"handler(s) {', '.join(idempotent)} are idempotent=True but this PubSub has no inbox: pass "
                "PubSub(inbox=...) (an object with run_once(message_id, handler, call)), or use the Django app, "
                "which installs one")
        guarded = [s.name for s in self._router.subscriptions if s.idempotent and s.ordered]
        if guarded and not isinstance(self._inbox, OrderedInbox):
            raise ConfigurationError(
                f"handler(s) {', '.join(guarded)} are ordered=True, idempotent=True: their inbox keeps the last "
                f"sequence applied per key, but {type(self._inbox).__name__} has no run_in_order(message_id, "
                "handler, key, sequence, call) and reset_order(key, handler) (see pubsubpy.inbox.OrderedInbox; "
                "the Django app's inbox and pubsubpy.testing.MemoryInbox have them)")
        if not self._router.resolved:
            self._router.resolve(self._registry, require_schemas=self.settings.require_schemas)
        return service

    def _sharded(self) -> bool:
        return bool(self.settings.shards) and any(sub.ordered for sub in self._router.subscriptions)

    def _engine(self, queue: str, router: Router, handoff: LoopHandoff | None) -> Engine:
        return Engine(self.settings, router, self._registry, self._inbox, self._middleware, queue,
                      handoff.await_on_loop if handoff else None)

    def _shard_engine(self, handoff: LoopHandoff | None, queue: str) -> tuple[Engine, ChunkWork[Item, Verdict] | None]:
        """An engine of the ordered subscriptions alone, for the loop of shard queue ``queue``."""
        engine = self._engine(queue, self._router.subset(lambda sub: sub.ordered), handoff)
        return engine, handoff.chunk_work(engine) if handoff else None

    # -- dead letters --------------------------------------------------------------
    def _dead_letters(self, timeout: float | None) -> DeadLetterStore:
        if timeout is not None and timeout <= 0:
            raise ConfigurationError(f"timeout must be > 0 seconds, got {timeout}")
        deadline = None if timeout is None else Deadline.after(timeout)  # None: each call has the transport's bound
        self._ensure_declared(deadline)
        shards = self.topology().shards if self._sharded() else None
        replay = None if shards is None else ShardedReplay(
            shards.exchange, frozenset(sub.name for sub in self._router.subscriptions if sub.ordered),
            lambda key: any(sub.ordered for sub in self._router.match(key)))
        return DeadLetterStore(self.transport, self._service(), deadline, replay)

    def list_dead_letters(
        self, *, limit: int | None = None, reason: str | None = None, topic: str | None = None,
        handler: str | None = None, timeout: float | None = None,
    ) -> list[DeadLetter]:
        """Read this service's dead-letter queue without changing it.

        Every letter is given back, in the same order; the call returns once they are ready in the queue
        again, so a count or a listing straight after sees them.

        Args:
            limit: stop once this many letters matched. ``None``: read the queue to the end.
            reason: only letters with this reason (``"handler_error"``, ``"rejected"``...).
            topic: only letters whose routing key matches this topic pattern.
            handler: only letters that name this handler (``module.function``).
            timeout: seconds bounding the whole call, connecting included.

        Returns:
            The matching ``DeadLetter`` records, in queue order.

        Raises:
            OperationTimeout: ``timeout`` ran out.
            BrokerUnavailable: the broker could not be reached, or the connection was lost mid-walk (nothing
                was changed; run it again).
        """
        return self._dead_letters(timeout).list_letters(DeadLetterFilter(None, reason, topic, handler), limit)

    def replay_dead_letters(
        self, message_ids: Collection[str] | None = None, *, reason: str | None = None, topic: str | None = None,
        handler: str | None = None, progress: Callable[[DeadLetter], None] | None = None,
        timeout: float | None = None,
    ) -> list[str]:
        """Send dead letters back to this service's queue for another try.

        Each chosen letter is republished (original body, routing key and properties) aimed at the handlers that
        failed, with attempts reset, confirmed, and only then removed from the dead-letter queue: a connection
        lost midway loses nothing (at worst one duplicate; run it again to finish).

        Args:
            message_ids: the letters to replay. ``None`` with no filter: all of them.
            reason: only letters with this reason.
            topic: only letters whose routing key matches this topic pattern.
            handler: only letters that name this handler.
            progress: called with each letter as it is replayed.
            timeout: seconds bounding the whole call.

        Returns:
            The message ids replayed.

        Raises:
            BrokerUnavailable: the connection was lost mid-walk (what was replayed stays replayed).
            OperationTimeout: ``timeout`` ran out.
        """
        match = DeadLetterFilter(None if message_ids is None else set(message_ids), reason, topic, handler)
        return self._dead_letters(timeout).replay(match, progress)

    def purge_dead_letters(
        self, message_ids: Collection[str] | None = None, *, reason: str | None = None, topic: str | None = None,
        handler: str | None = None, progress: Callable[[DeadLetter], None] | None = None,
        timeout: float | None = None,
    ) -> list[str]:
        """Remove dead letters for good.

        Args:
            message_ids: the letters to remove. ``None`` with no filter: all of them.
            reason: only letters with this reason.
            topic: only letters whose routing key matches this topic pattern.
            handler: only letters that name this handler.
            progress: called with each letter as it is removed.
            timeout: seconds bounding the whole call.

        Returns:
            The message ids removed.

        Raises:
            BrokerUnavailable: the connection was lost mid-walk (what was removed stays removed).
            OperationTimeout: ``timeout`` ran out.
        """
        match = DeadLetterFilter(None if message_ids is None else set(message_ids), reason, topic, handler)
        return self._dead_letters(timeout).purge(match, progress)

    def dead_letter_count(self, *, timeout: float | None = None) -> int:
        """How many dead letters wait in this service's dead-letter queue.

        Args:
            timeout: seconds bounding the call.

        Returns:
            The queue's depth.
        """
        return self._dead_letters(timeout).depth()

    # -- lifecycle -----------------------------------------------------------------
    def close(self) -> None:
        """Close broker connections; the instance reconnects if used again."""
        with self._lock:
            transport = self._transport
            self._declared = None
            self._exchange_ready = False
        if transport is not None:
            with contextlib.suppress(TransportError):
                transport.close()
