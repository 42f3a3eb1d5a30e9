"""Traces printed to the console, for both example projects: run them with ``TRACES_TO_CONSOLE=1``.

pubsubpy traces through OpenTelemetry's global tracer provider, which records
nothing until the application installs an SDK. With ``TRACES_TO_CONSOLE=1`` (and
``opentelemetry-sdk`` installed) each project's settings install one that prints
every span as JSON on stdout, its resource naming the service (``shop``,
``billing``). Unset (or ``0``), nothing is installed. A real deployment would add a
``BatchSpanProcessor`` with an OTLP exporter here instead; the simple processor
prints each span as it ends, so nothing waits for a flush at exit, and it has no
thread to lose when Celery forks its workers.
"""

from __future__ import annotations

import os
import warnings

VARIABLE = "TRACES_TO_CONSOLE"


def install(service_name: str) -> bool:
    """Print this process's spans when ``TRACES_TO_CONSOLE`` is set; True if a tracer provider was installed."""
    if os.environ.get(VARIABLE, "") in ("", "0"):
        return False
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor
    except ImportError:
        warnings.warn(f"{VARIABLE} is set, but opentelemetry-sdk is not installed: no traces", stacklevel=2)
        return False
    provider = TracerProvider(resource=Resource.create({SERVICE_NAME: service_name}))
    provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    trace.set_tracer_provider(provider)
    return True
