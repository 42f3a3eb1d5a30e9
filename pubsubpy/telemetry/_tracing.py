"""Tracing middleware: producer spans on publish, a consumer span per handler run.

The message's creation context (the ``publish`` span of ``publish_model_event``,
or a ``create`` span per message of a batch or of the outbox) travels in its
headers; every handler run's ``process`` span is its child, on every attempt,
replay and relay, so one trace runs from the save in one service to the handler
in another. A message whose headers already hold a ``traceparent`` (set by the
caller) keeps it, as the conventions ask. See ``_conventions.py`` for names.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, ProxyTracerProvider, Span, SpanKind, Status, StatusCode, Tracer, TracerProvider

from pubsubpy._engine.verdict import describe
from pubsubpy.messages import Outcome
from pubsubpy.middleware import HandlerContext, HandlerResult, MessageContext, Middleware, PublishContext
from pubsubpy.telemetry import _conventions as c
from pubsubpy.telemetry._propagation import extract, has_context, inject
from pubsubpy.transports.base import OutgoingMessage

__all__ = ["Tracing"]

_NO_EXCEPTION_HANDLING: dict[str, Any] = {"record_exception": False, "set_status_on_exception": False}
_CACHED_DESTINATIONS = 1024  # (exchange, routing key, queue) triples whose span name and attributes are kept


def _version() -> str:
    from pubsubpy._version import __version__

    return __version__


def failed(span: Span, exc: BaseException | None, error_type: str | None = None, text: str | None = None) -> None:
    """Mark ``span`` failed: the exception recorded, ``error.type`` set, status ERROR."""
    if exc is not None:
        span.record_exception(exc)
    span.set_attribute(c.ERROR_TYPE, error_type or (type(exc).__qualname__ if exc is not None else "_OTHER"))
    span.set_status(Status(StatusCode.ERROR, text or (describe(exc) if exc is not None else None)))


class Tracing(Middleware):
    """Spans for publishing and handling. Uses the global tracer provider unless given one."""

    def __init__(self, tracer_provider: TracerProvider | None = None, *, system: str = "rabbitmq") -> None:
        self._tracer: Tracer = trace.get_tracer("pubsubpy", _version(), tracer_provider, schema_url=c.SCHEMA_URL)
        self._system = system
        self._active = tracer_provider is not None
        self._looked = 0.0
        # Per destination: the ``process`` span's name and the attributes every message to it shares.
        self._destinations: dict[tuple[str, str, str], tuple[str, dict[str, Any]]] = {}
        # The last message's headers and the context extracted from them: a message with several
        # handlers is read once (one tuple, replaced whole, so threads never see half of it).
        self._last: tuple[object, Context] | None = None

    def active(self) -> bool:
        """Until the application installs a tracer provider (the SDK), tracing would record nothing:
        skip it (looking again at most once a second: the lookup reads the environment). Once installed
        it stays (OpenTelemetry sets the global provider once)."""
        if not self._active:
            now = time.monotonic()
            if now - self._looked >= 1.0:
                self._looked = now
                provider = trace.get_tracer_provider()
                if not isinstance(provider, ProxyTracerProvider):
                    # The installed provider's own tracer, not the proxy that forwards every call to it.
                    self._tracer = provider.get_tracer("pubsubpy", _version(), schema_url=c.SCHEMA_URL)
                    self._active = True
        return self._active

    # -- publishing ----------------------------------------------------------------
    def _message_attributes(self, message: OutgoingMessage, operation: str, kind: str) -> dict[str, Any]:
        attributes: dict[str, Any] = {
            c.MESSAGING_SYSTEM: self._system,
            c.OPERATION_NAME: operation,
            c.OPERATION_TYPE: kind,
            c.DESTINATION_NAME: c.publish_destination(message.exchange, message.routing_key),
            c.MESSAGE_ID: message.properties.message_id or "",
        }
        if message.routing_key:
            attributes[c.ROUTING_KEY] = message.routing_key
        if message.properties.correlation_id:
            attributes[c.CONVERSATION_ID] = message.properties.correlation_id
        return attributes

    def publish(self, context: PublishContext, send: Callable[[], list[str]]) -> list[str]:
        if context.stage == "send" and not context.batch:
            return self._send_one(context, send)
        links = [self._create(message) for message in context.messages]
        if context.stage == "outbox":
            return send()  # the relay's span links these creation contexts when it sends them
        routing_keys = {message.routing_key for message in context.messages}
        destination = c.publish_destination(context.exchange, routing_keys.pop() if len(routing_keys) == 1 else "")
        attributes: dict[str, Any] = {c.MESSAGING_SYSTEM: self._system, c.OPERATION_NAME: "publish",
                                      c.OPERATION_TYPE: "send", c.DESTINATION_NAME: destination,
                                      c.BATCH_COUNT: len(context.messages)}
        with self._tracer.start_as_current_span(f"publish {destination}", kind=SpanKind.CLIENT, links=links,
                                                attributes=attributes, **_NO_EXCEPTION_HANDLING) as span:
            return self._sending(span, context, send)

    def _send_one(self, context: PublishContext, send: Callable[[], list[str]]) -> list[str]:
        message = context.messages[0]
        headers = message.properties.headers
        custom = has_context(headers)  # the caller's own creation context: keep it, link it
        attributes = self._message_attributes(message, "publish", "send")
        links = [Link(trace.get_current_span(extract(headers)).get_span_context())] if custom else None
        with self._tracer.start_as_current_span(f"publish {attributes[c.DESTINATION_NAME]}",
                                                kind=SpanKind.CLIENT if custom else SpanKind.PRODUCER,
                                                links=links, attributes=attributes, **_NO_EXCEPTION_HANDLING) as span:
            if not custom:
                inject(headers)
            return self._sending(span, context, send)

    @staticmethod
    def _sending(span: Span, context: PublishContext, send: Callable[[], list[str]]) -> list[str]:
        try:
            ids = send()
        except Exception as exc:
            failed(span, exc)
            raise
        if context.unroutable:
            span.set_attribute("pubsubpy.unroutable", len(context.unroutable))
        return ids

    def _create(self, message: OutgoingMessage) -> Link:
        """A ``create`` span for one message of a batch, injected as its creation context (or the caller's
        own, kept); the link the batch's ``publish`` span makes to it."""
        headers = message.properties.headers
        if has_context(headers):
            return Link(trace.get_current_span(extract(headers)).get_span_context())
        attributes = self._message_attributes(message, "create", "create")
        span = self._tracer.start_span(f"create {attributes[c.DESTINATION_NAME]}", kind=SpanKind.PRODUCER,
                                       attributes=attributes)
        inject(headers, trace.set_span_in_context(span))
        span.end()
        return Link(span.get_span_context())

    # -- consuming -----------------------------------------------------------------
    def _destination(self, exchange: str, routing_key: str, queue: str) -> tuple[str, dict[str, Any]]:
        """The ``process`` span's name and the attributes shared by every message to one destination,
        formatted once (the dict is copied into each span's attributes, never changed)."""
        key = (exchange, routing_key, queue)
        found = self._destinations.get(key)
        if found is None:
            destination = c.process_destination(exchange, routing_key, queue)
            found = (f"process {destination}", {
                c.MESSAGING_SYSTEM: self._system,
                c.OPERATION_NAME: "process",
                c.OPERATION_TYPE: "process",
                c.DESTINATION_NAME: destination,
                c.ROUTING_KEY: routing_key,
            })
            if len(self._destinations) >= _CACHED_DESTINATIONS:  # routing keys that never repeat: start over
                self._destinations.clear()
            self._destinations[key] = found
        return found

    def _parent(self, headers: Any) -> Context:
        """The context ``headers`` carry, extracted once per message however many handlers it has."""
        last = self._last
        if last is not None and last[0] is headers:
            return last[1]
        parent = extract(headers)
        self._last = (headers, parent)
        return parent

    def handle(self, context: HandlerContext, run: Callable[[], HandlerResult]) -> HandlerResult:
        message = context.message
        name, shared = self._destination(context.exchange, message.routing_key, context.queue)
        attributes = {**shared, c.DELIVERY_TAG: context.delivery_tag, c.HANDLER: context.handler,
                      c.ATTEMPT: message.attempt}
        if message.message_id:
            attributes[c.MESSAGE_ID] = message.message_id
        if message.correlation_id:
            attributes[c.CONVERSATION_ID] = message.correlation_id
        # What ``start_as_current_span`` does, without its two generator context managers per message.
        span = self._tracer.start_span(name, self._parent(message.headers), SpanKind.CONSUMER, attributes,
                                       **_NO_EXCEPTION_HANDLING)
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            result = run()
            if span.is_recording():  # a span the sampler dropped records nothing: skip the work
                if result.reason is None:
                    span.set_attribute(c.OUTCOME, result.outcome.value)
                else:
                    span.set_attributes({c.OUTCOME: result.outcome.value, c.REASON: result.reason.value})
                if result.exception is not None:
                    failed(span, result.exception)
            return result
        finally:
            otel_context.detach(token)
            span.end()

    def after_message(self, context: MessageContext) -> None:
        """A message that ended before any handler ran (bad payload, unknown key...) gets a ``process``
        span of its own, so the trace shows where it ended and why."""
        if context.handlers_ran:
            return
        message = context.message
        name, shared = self._destination(context.exchange, message.routing_key, context.queue)
        attributes = {**shared, c.ATTEMPT: message.attempt, c.OUTCOME: context.outcome.value}
        if message.message_id:
            attributes[c.MESSAGE_ID] = message.message_id
        if message.correlation_id:
            attributes[c.CONVERSATION_ID] = message.correlation_id
        span = self._tracer.start_span(name, extract(message.headers), SpanKind.CONSUMER, attributes)
        if span.is_recording():
            if context.reason is not None:
                span.set_attribute(c.REASON, context.reason.value)
            if context.outcome is Outcome.DEAD_LETTERED:
                failed(span, None, context.reason.value if context.reason else "_OTHER", context.error)
        span.end()
