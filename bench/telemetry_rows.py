"""What instrumentation costs: pubsubpy with telemetry on against the same pubsubpy with it off.

Three ``PubSub`` apps on one service (the same exchange, the same bound durable
queue, confirms, the same payload), measured in alternating rounds:

- off: ``telemetry=False`` and no middleware (the core; no middleware chain at all);
- API only: ``telemetry=True`` with ``opentelemetry-api`` and no SDK installed, so
  the global providers are the API's no-op proxies (what a service gets by
  installing ``pubsubpy[otel]`` without configuring OpenTelemetry);
- SDK: ``telemetry=False`` with ``Tracing`` and ``Metrics`` given SDK providers
  explicitly (no globals are set): a ``TracerProvider`` whose
  ``BatchSpanProcessor`` (what production uses) feeds an exporter that only counts
  the spans, and a ``MeterProvider`` whose ``PeriodicExportingMetricReader``
  collects every second into an exporter that does nothing. Every span is
  sampled (the default ``ParentBased(ALWAYS_ON)``).

Drain: each run drains ``count`` messages that carry what an instrumented
publisher sends (a sampled W3C ``traceparent`` and ``pubsubpy-published-at``), so
the consumer spans are children of a remote parent and the end-to-end latency is
recorded. Publish: ``count`` single ``publish_model_event`` calls, each
confirmed (as the ``single publish`` row); the queue is emptied after every
run, untimed.

SDK runs are timed until ``force_flush`` returns (every span handed to the
exporter); the row's note says how many of the spans started reached it (the
batch processor drops spans when its queue of 2048 is full).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import (
    MetricExporter,
    MetricExportResult,
    MetricsData,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from bench.common import MODEL, PAYLOAD, URL, Booking, Row, fill, purge, rate, unique
from pubsubpy import PubSub
from pubsubpy.envelope import H_PUBLISHED_AT
from pubsubpy.middleware import Middleware
from pubsubpy.telemetry.metrics import Metrics
from pubsubpy.telemetry.tracing import Tracing

METRIC_INTERVAL_MS = 1000  # the SDK's default is 60 s: collecting every second is the costlier side
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"  # sampled


class CountingSpanExporter(SpanExporter):
    """Exports nowhere; counts what it was given (to tell whether the batch processor dropped spans)."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


class NoopMetricExporter(MetricExporter):
    def export(self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any) -> MetricExportResult:
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        return None


class _Sdk:
    """SDK providers of the app's own (never the global ones), with no-op exporters."""

    def __init__(self) -> None:
        self.spans = CountingSpanExporter()
        self.expected = 0  # spans the measured work started
        self.tracer_provider = TracerProvider()
        self.tracer_provider.add_span_processor(BatchSpanProcessor(self.spans))
        reader = PeriodicExportingMetricReader(NoopMetricExporter(), export_interval_millis=METRIC_INTERVAL_MS)
        self.meter_provider = MeterProvider(metric_readers=[reader])

    def middleware(self) -> list[Middleware]:
        return [Tracing(self.tracer_provider), Metrics(self.meter_provider)]

    def flushed(self, work: Callable[[], object], spans: int) -> Callable[[], None]:
        """``work``, then every span it started (``spans``) handed to the exporter."""

        def run() -> None:
            work()
            if not self.tracer_provider.force_flush(timeout_millis=60_000):
                raise RuntimeError("the span processor did not flush within 60 s")
            self.expected += spans

        return run

    def exported(self) -> str:
        """What reached the exporter: the batch processor drops spans when its queue (2048) is full."""
        return f"spans exported {self.spans.spans:,} of {self.expected:,}"

    def shutdown(self) -> None:
        self.tracer_provider.shutdown()
        self.meter_provider.shutdown()


def _no_global_sdk() -> None:
    """The API-only rows need the API's proxies as the global providers: no SDK installed."""
    from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider

    if isinstance(trace.get_tracer_provider(), SdkTracerProvider) or isinstance(
            metrics.get_meter_provider(), SdkMeterProvider):
        raise RuntimeError("an OpenTelemetry SDK provider is installed globally: the API-only rows would not be")


def _compare(kind: str, rounds: int, measure: Callable[[PubSub, _Sdk | None], float]) -> tuple[Row, Row]:
    """Rounds of off, API only, SDK (in that order) on three apps of one service, so one topology;
    ``measure(app, sdk)`` gets the ``_Sdk`` for the SDK app, None for the others."""
    _no_global_sdk()
    exchange, service = unique("x"), unique("svc")
    sdk = _Sdk()

    def make(telemetry: bool, middleware: list[Middleware] | None = None) -> PubSub:
        app = PubSub(URL, schemas=[Booking], model_exchange=exchange, service_name=service, on_unroutable="ignore",
                     telemetry=telemetry, middleware=middleware)

        @app.subscribe("Booking.*")
        def on_booking(event: Booking) -> None:
            pass

        app.declare()
        return app

    off_app, api_app, sdk_app = make(False), make(True), make(False, sdk.middleware())
    off: list[float] = []
    api_row = Row(f"{kind}: telemetry on, API only (no SDK) vs off", "msg/s", baseline=off,
                  note="global providers are the API's no-op proxies; no aim set")
    sdk_row = Row(f"{kind}: telemetry on + SDK (BatchSpanProcessor) vs off", "msg/s", baseline=off,
                  target=">= 0.7" if kind == "drain" else "",
                  note=f"tracing + metrics, no-op exporters, metrics read every {METRIC_INTERVAL_MS / 1000:g} s"
                       + ("" if kind == "drain" else "; no aim set"))
    try:
        for _ in range(rounds):
            off.append(measure(off_app, None))
            api_row.ours.append(measure(api_app, None))
            sdk_row.ours.append(measure(sdk_app, sdk))
    finally:
        api_app.close()
        sdk_app.close()
        sdk.shutdown()
        from pubsubpy.testing import delete_topology

        delete_topology(off_app)
    sdk_row.note += f"; timed through force_flush, {sdk.exported()}"
    return api_row, sdk_row


def drain(count: int, rounds: int) -> list[Row]:
    headers: dict[str, object] = {"traceparent": TRACEPARENT}

    def measure(app: PubSub, sdk: _Sdk | None) -> float:
        headers[H_PUBLISHED_AT] = int(time.time() * 1000)
        fill(f"{app.settings.service_name}.events", count, app.settings.model_exchange, headers=headers)

        def work() -> None:
            result = app.drain(timeout=300)
            if result.handled != count:
                raise RuntimeError(f"telemetry drain: {result.handled} of {count} handled ({result})")

        return rate(count, work if sdk is None else sdk.flushed(work, count))  # one process span each

    api_row, sdk_row = _compare("drain", rounds, measure)
    for row in (api_row, sdk_row):
        row.note += f"; {count} msgs with traceparent"
    return [api_row, sdk_row]


def publish(count: int, rounds: int) -> list[Row]:
    def measure(app: PubSub, sdk: _Sdk | None) -> float:
        def work() -> None:
            for _ in range(count):
                app.publish_model_event(MODEL, "updated", PAYLOAD)

        measured = rate(count, work if sdk is None else sdk.flushed(work, count))  # one publish span each
        purge(f"{app.settings.service_name}.events")
        return measured

    api_row, sdk_row = _compare("publish", rounds, measure)
    api_row.note += "; each confirmed"
    sdk_row.note += "; each confirmed, +traceparent header"
    return [api_row, sdk_row]


def all_rows(quick: bool, rounds: int, step: Callable[[str], None] = lambda _label: None) -> list[Row]:
    step("telemetry: publish")
    rows = publish(300 if quick else 2000, rounds)
    step("telemetry: drain")
    rows.extend(drain(3000 if quick else 30000, rounds))
    return rows
