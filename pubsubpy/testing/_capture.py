"""``capture(*apps)``: what the apps published and what their handlers received, as typed records, for
assertions (see ``pubsubpy.testing``)."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar, overload

from pubsubpy.app import PubSub
from pubsubpy.envelope import H_VERSION
from pubsubpy.errors import ConfigurationError
from pubsubpy.messages import MessageInfo, Outcome, Reason
from pubsubpy.middleware import HandlerContext, HandlerResult, Middleware, PublishContext
from pubsubpy.schemas import ModelEvent, SchemaRegistry
from pubsubpy.transports.base import OutgoingMessage

__all__ = ["Capture", "HandledEvent", "PublishedEvent", "capture"]


E = TypeVar("E", bound=ModelEvent | dict[str, Any])
Payload = ModelEvent | dict[str, Any]


@dataclass(frozen=True, slots=True)
class PublishedEvent(Generic[E]):
    """An event an app published (to the broker, confirmed; an outbox row counts once its relay sends it)."""

    event: E                          # the validated instance (a dict for events without a schema)
    routing_key: str
    message_id: str
    service: str | None               # the publishing app's service_name
    headers: Mapping[str, Any]
    correlation_id: str | None
    routed: bool                      # False: no queue took it (known unless on_unroutable="ignore")


@dataclass(frozen=True, slots=True)
class HandledEvent(Generic[E]):
    """One handler run on one message: ``outcome`` is ``handled``, or ``retried`` / ``dead_lettered``
    (with ``reason`` and the ``exception``) when it raised."""

    event: E                          # what the handler received
    handler: str                      # module.qualname of the handler function
    service: str | None               # the consuming app's service_name
    info: MessageInfo                 # message id, routing key, attempt, headers...
    outcome: Outcome
    reason: Reason | None
    exception: BaseException | None

    @property
    def ok(self) -> bool:
        return self.outcome is Outcome.HANDLED

    @property
    def message_id(self) -> str | None:
        return self.info.message_id

    @property
    def routing_key(self) -> str:
        return self.info.routing_key

    @property
    def attempt(self) -> int:
        return self.info.attempt


def _decode(registry: SchemaRegistry, message: OutgoingMessage) -> Payload:
    model, _, event = (message.properties.type or "").rpartition(".")
    version = message.properties.headers.get(H_VERSION)
    schema = registry.get(model, event, version if isinstance(version, int) else None)
    if schema is None:
        data: dict[str, Any] = json.loads(message.body)
        return data
    return schema.model_validate_json(message.body)


def _handler_name(handler: str | Callable[..., Any]) -> str:
    if isinstance(handler, str):
        return handler
    module = getattr(handler, "__module__", None) or "?"  # as the router names it
    qualname = getattr(handler, "__qualname__", None) or repr(handler)
    return f"{module}.{qualname}"


class _Recorder(Middleware):
    """The middleware ``capture`` puts into one app: it reports to the ``Capture``."""

    def __init__(self, owner: Capture, app: PubSub) -> None:
        self.owner = owner
        self.app = app
        self.service = app.settings.service_name

    def publish(self, context: PublishContext, send: Callable[[], list[str]]) -> list[str]:
        ids = send()
        if context.stage != "outbox":  # an outbox row is recorded when its relay sends it ("relay")
            lost = set(context.unroutable)
            for message in context.messages:
                message_id = message.properties.message_id or ""
                self.owner._record(self.app, PublishedEvent(
                    _decode(self.app.registry, message), message.routing_key, message_id, self.service,
                    dict(message.properties.headers), message.properties.correlation_id, message_id not in lost))
        return ids

    def handle(self, context: HandlerContext, run: Callable[[], HandlerResult]) -> HandlerResult:
        result = run()
        self.owner._record(self.app, HandledEvent(context.payload, context.handler, self.service, context.message,
                                                  result.outcome, result.reason, result.exception))
        return result


class Capture:
    """What ``capture(*apps)`` saw, in order: ``published()`` and ``handled()``, each optionally filtered by
    schema (typed accordingly), by app, and (``handled``) by handler."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._records: list[tuple[PubSub, PublishedEvent[Any] | HandledEvent[Any]]] = []

    def _record(self, app: PubSub, record: PublishedEvent[Any] | HandledEvent[Any]) -> None:
        with self._lock:
            self._records.append((app, record))

    def _select(self, kind: type[Any], schema: type[Any] | None, app: PubSub | None) -> list[Any]:
        with self._lock:
            records = list(self._records)
        return [record for source, record in records
                if isinstance(record, kind) and (app is None or source is app)
                and (schema is None or isinstance(record.event, schema))]

    @overload
    def published(self, *, app: PubSub | None = None) -> list[PublishedEvent[Payload]]: ...

    @overload
    def published(self, schema: type[E], *, app: PubSub | None = None) -> list[PublishedEvent[E]]: ...

    def published(self, schema: type[Any] | None = None, *, app: PubSub | None = None) -> list[Any]:
        """The events published (``schema``: only instances of it; ``app``: only that app's)."""
        return self._select(PublishedEvent, schema, app)

    @overload
    def handled(self, *, app: PubSub | None = None,
                handler: str | Callable[..., Any] | None = None) -> list[HandledEvent[Payload]]: ...

    @overload
    def handled(self, schema: type[E], *, app: PubSub | None = None,
                handler: str | Callable[..., Any] | None = None) -> list[HandledEvent[E]]: ...

    def handled(self, schema: type[Any] | None = None, *, app: PubSub | None = None,
                handler: str | Callable[..., Any] | None = None) -> list[Any]:
        """Every handler run (failed ones too: see ``HandledEvent.outcome``), filtered like ``published``;
        ``handler``: a handler function or its ``module.qualname``."""
        runs = self._select(HandledEvent, schema, app)
        if handler is None:
            return runs
        name = _handler_name(handler)
        return [run for run in runs if run.handler == name]


def _install(app: PubSub, recorder: _Recorder) -> None:
    # PubSub reads its chain at each publish and each drain's start (app.py).
    chain = app.middleware
    app.use_middleware([*(chain.middleware if chain is not None else ()), recorder])


def _uninstall(app: PubSub, recorder: _Recorder) -> None:
    chain = app.middleware
    app.use_middleware([m for m in (chain.middleware if chain is not None else ()) if m is not recorder])


@contextlib.contextmanager
def capture(*apps: PubSub) -> Iterator[Capture]:
    """Record what ``apps`` publish and what their handlers receive while the block runs (innermost of their
    middleware); the records stay readable after it. Enter it before the drains whose handlers you want to
    see (a worker already running keeps the middleware it started with)."""
    if not apps:
        raise ConfigurationError("capture() needs the apps to watch: capture(shop, billing, ...)")
    seen = Capture()
    recorders = [(app, _Recorder(seen, app)) for app in apps]
    for app, recorder in recorders:
        _install(app, recorder)
    try:
        yield seen
    finally:
        for app, recorder in recorders:
            _uninstall(app, recorder)
