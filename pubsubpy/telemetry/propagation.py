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
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter

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


def extract(headers: Mapping[str, Any]) -> Context:
    """The context a message's headers carry; an empty one when they carry none, or garbage."""
    try:
        return propagate.extract(headers, getter=_GETTER, context=Context())
    except Exception as exc:  # a propagator that chokes on a foreign header must not fail the message
        log.debug("ignoring an unreadable trace context (%s)", exc)
        return Context()


def inject(headers: MutableMapping[str, Any], context: Context | None = None) -> None:
    propagate.inject(headers, context=context)
