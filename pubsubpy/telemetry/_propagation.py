"""The W3C trace context in AMQP headers: ``traceparent``, ``tracestate``, ``baggage``.

Written through the global propagator (W3C trace context and baggage unless the
application chose others). Read defensively: a message from outside may carry
these headers as bytes, as numbers, oversized or malformed; anything that is not
a valid context is ignored, never an error.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, MutableMapping
from typing import Any

from opentelemetry import propagate
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import Getter, TextMapPropagator
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

__all__ = ["TRACE_HEADERS", "extract", "has_context", "inject"]

log = logging.getLogger("pubsubpy.telemetry")

TRACE_HEADERS = ("traceparent", "tracestate", "baggage")
_LIMIT = 8192  # W3C baggage's own limit; traceparent and tracestate are far shorter


class _HeaderGetter(Getter[Mapping[str, Any]]):
    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get(key)
        if isinstance(value, (bytes, bytearray)):
            value = bytes(value).decode("utf-8", "replace")
        if not isinstance(value, str) or len(value) > _LIMIT:
            return None
        return [value]

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return [key for key in carrier if isinstance(key, str)]


_GETTER = _HeaderGetter()


def has_context(headers: Mapping[str, Any]) -> bool:
    return "traceparent" in headers


_W3C = (TraceContextTextMapPropagator, W3CBaggagePropagator)  # OpenTelemetry's default propagators, in order
_TRACE_CONTEXT = TraceContextTextMapPropagator()
_BAGGAGE = W3CBaggagePropagator()
_seen: tuple[TextMapPropagator | None, bool] = (None, False)  # the global propagator last looked at: is it W3C's?


def _is_w3c_default(propagator: TextMapPropagator) -> bool:
    """Is ``propagator`` OpenTelemetry's default: W3C trace context then W3C baggage, nothing else?"""
    global _seen
    seen = _seen
    if seen[0] is not propagator:
        inner = getattr(propagator, "_propagators", None) if type(propagator) is CompositePropagator else None
        default = inner is not None and tuple(type(p) for p in inner) == _W3C
        _seen = seen = (propagator, default)
    return seen[1]


def extract(headers: Mapping[str, Any]) -> Context:
    """The context a message's headers carry; an empty one when they carry none, or garbage."""
    try:
        propagator = propagate.get_global_textmap()
        if not _is_w3c_default(propagator):
            return propagator.extract(headers, Context(), getter=_GETTER)
        # The default propagators, run only for the headers they read (each returns the context it was
        # given when its header is absent): what the composite would return, minus its lookups.
        context = Context()
        if "traceparent" in headers:
            context = _TRACE_CONTEXT.extract(headers, context, _GETTER)
        if "baggage" in headers:
            context = _BAGGAGE.extract(headers, context, _GETTER)
        return context
    except Exception as exc:  # a propagator that chokes on a foreign header must not fail the message
        log.debug("ignoring an unreadable trace context (%s)", exc)
        return Context()


def inject(headers: MutableMapping[str, Any], context: Context | None = None) -> None:
    propagate.inject(headers, context=context)
