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

Tracing alone (``tracing``): the same drain against off, with only ``Tracing`` on
an SDK ``TracerProvider`` (``BatchSpanProcessor``, an exporter that drops the
spans, no metrics), at two samplers: full sampling (``ParentBased(ALWAYS_ON)``,
every message's parent sampled) and ``ParentBased(TraceIdRatioBased(0.01))``
with messages as a publisher sampling at that ratio sends them (each its own
trace id, the sampled flag set on the 1% the ratio picks). Each message carries
its own trace context; the off run drains the same messages.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import pika
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
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, Sampler, TraceIdRatioBased

from bench.common import BODY, MODEL, PAYLOAD, ROUTING_KEY, URL, Booking, Row, channel, fill, purge, rate, unique
from pubsubpy import PubSub
from pubsubpy.envelope import H_PUBLISHED_AT
from pubsubpy.middleware import Middleware
from pubsubpy.telemetry._metrics import Metrics
from pubsubpy.telemetry._tracing import Tracing

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
    """SDK providers of the app's own (never the global ones), with no-op exporters; ``metrics=False``:
    tracing alone."""

    def __init__(self, sampler: Sampler | None = None, metrics: bool = True) -> None:
        self.spans = CountingSpanExporter()
        self.expected = 0  # spans the measured work started
        self.tracer_provider = TracerProvider(sampler=sampler)
        self.tracer_provider.add_span_processor(BatchSpanProcessor(self.spans))
        self.meter_provider = MeterProvider(metric_readers=[PeriodicExportingMetricReader(
            NoopMetricExporter(), export_interval_millis=METRIC_INTERVAL_MS)]) if metrics else None

    def middleware(self, tracing: type[Tracing] = Tracing) -> list[Middleware]:
        if self.meter_provider is None:
            return [tracing(self.tracer_provider)]
        return [tracing(self.tracer_provider), Metrics(self.meter_provider)]

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
        if self.meter_provider is not None:
            self.meter_provider.shutdown()


def _declared_app(exchange: str, service: str, telemetry: bool, middleware: list[Middleware] | None) -> PubSub:
    """A declared app with a no-op ``Booking.*`` handler: every side of a telemetry row drains one."""
    app = PubSub(URL, schemas=[Booking], model_exchange=exchange, service_name=service, on_unroutable="ignore",
                 telemetry=telemetry, middleware=middleware)

    @app.subscribe("Booking.*")
    def on_booking(event: Booking) -> None:
        pass

    app.declare()
    return app


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
        return _declared_app(exchange, service, telemetry, middleware)

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


RATIO = 0.01


def _fill_traced(queue: str, exchange: str, count: int, ratio: float) -> int:
    """``count`` messages as a publisher sampling at ``ratio`` sends them: each a trace of its own (random
    ids), sampled when ``TraceIdRatioBased(ratio)`` picks its trace id; returns how many are sampled."""
    bound = TraceIdRatioBased.get_bound_for_rate(ratio)
    sampled = 0
    connection, ch = channel()
    for i in range(count):
        trace_id = random.getrandbits(128)
        picked = trace_id & TraceIdRatioBased.TRACE_ID_LIMIT < bound
        sampled += picked
        headers = {"traceparent": f"00-{trace_id:032x}-{random.getrandbits(64) or 1:016x}-{'01' if picked else '00'}",
                   H_PUBLISHED_AT: int(time.time() * 1000)}
        props = pika.BasicProperties(content_type="application/json", delivery_mode=2, message_id="m",
                                     type=f"{MODEL}.updated", headers=headers)
        if i == count - 1:  # as ``fill``: the last one confirmed, after the others on the same channel
            ch.confirm_delivery()
        ch.basic_publish(exchange, ROUTING_KEY, BODY, props)
    connection.close()
    return sampled


def tracing(count: int, rounds: int, tracing_class: type[Tracing] = Tracing) -> list[Row]:
    """Drains with ``Tracing`` alone on an SDK (full sampling; 1% ratio sampling) against off, in alternating
    rounds on three apps of one service. ``tracing_class``: another implementation to measure the same way."""
    exchange, service = unique("x"), unique("svc")
    full = _Sdk(ParentBased(ALWAYS_ON), metrics=False)
    ratio = _Sdk(ParentBased(TraceIdRatioBased(RATIO)), metrics=False)

    def make(middleware: list[Middleware] | None) -> PubSub:
        return _declared_app(exchange, service, False, middleware)

    off_app = make(None)
    full_app, ratio_app = make(full.middleware(tracing_class)), make(ratio.middleware(tracing_class))
    queue = f"{service}.events"

    def measure(app: PubSub, sdk: _Sdk | None, sampling: float) -> float:
        sampled = _fill_traced(queue, exchange, count, sampling)

        def work() -> None:
            result = app.drain(timeout=300)
            if result.handled != count:
                raise RuntimeError(f"tracing drain: {result.handled} of {count} handled ({result})")

        return rate(count, work if sdk is None else sdk.flushed(work, sampled))  # a process span per sampled one

    off: list[float] = []
    how = "Tracing only, BatchSpanProcessor, an exporter that drops spans; each message its own trace"
    full_row = Row("drain: tracing + SDK, full sampling vs off", "msg/s", baseline=off, target=">= 0.5",
                   note=f"{how}, every parent sampled")
    ratio_row = Row(f"drain: tracing + SDK, ParentBased(TraceIdRatioBased({RATIO:g})) vs off", "msg/s", baseline=off,
                    note=f"{how}, {RATIO:.0%} of parents sampled (as the ratio picks their trace ids); no aim set")
    try:
        for _ in range(rounds):
            off.append(measure(off_app, None, 1.0))
            full_row.ours.append(measure(full_app, full, 1.0))
            ratio_row.ours.append(measure(ratio_app, ratio, RATIO))
    finally:
        full_app.close()
        ratio_app.close()
        full.shutdown()
        ratio.shutdown()
        from pubsubpy.testing import delete_topology

        delete_topology(off_app)
    for row, sdk in ((full_row, full), (ratio_row, ratio)):
        row.note += f"; {count} msgs; timed through force_flush, {sdk.exported()}"
    return [full_row, ratio_row]


def all_rows(quick: bool, rounds: int, step: Callable[[str], None] = lambda _label: None) -> list[Row]:
    step("telemetry: publish")
    rows = publish(300 if quick else 2000, rounds)
    step("telemetry: drain")
    rows.extend(drain(3000 if quick else 30000, rounds))
    step("telemetry: tracing alone, two samplers")
    rows.extend(tracing(3000 if quick else 30000, rounds))
    return rows
