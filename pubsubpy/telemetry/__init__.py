"""OpenTelemetry tracing and metrics, as middleware (``pip install 'pubsubpy-events[otel]'``).

With ``opentelemetry-api`` installed and ``telemetry=True`` (the default), every
``PubSub`` traces and measures through the global tracer and meter providers:
nothing is recorded until the application installs an SDK (as with any
OpenTelemetry-instrumented library). Without the package, nothing here is
imported and nothing runs. ``_conventions.py`` pins the semantic conventions'
version the spans and metrics follow.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pubsubpy.middleware import Middleware
    from pubsubpy.settings import Settings

__all__ = ["available", "telemetry_middleware"]


def available() -> bool:
    """Is ``opentelemetry-api`` installed? (Looked up without importing it.)"""
    try:
        return importlib.util.find_spec("opentelemetry.trace") is not None
    except ModuleNotFoundError:
        return False


def telemetry_middleware(settings: Settings) -> list[Middleware]:
    """The library's own middleware for ``settings``: tracing and metrics, or nothing."""
    if not settings.telemetry or not available():
        return []
    from pubsubpy.telemetry._metrics import Metrics
    from pubsubpy.telemetry._tracing import Tracing

    system = "rabbitmq" if settings.scheme in ("amqp", "amqps") else "pubsubpy-memory"
    return [Tracing(system=system), Metrics(system=system)]
