"""The telemetry middleware's own paths, without a broker: the ``process`` span tracing makes around a
handler run (sampled or not), the context extracted once per message, the default propagators'
shortcut, the global tracer provider picked up once installed; the attributes metrics keep per
destination and outcome."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from typing import Any

import pytest
from opentelemetry import baggage, propagate, trace
from opentelemetry.baggage.propagation import W3CBaggagePropagator
from opentelemetry.context import Context
from opentelemetry.propagators.composite import CompositePropagator
from opentelemetry.propagators.textmap import TextMapPropagator
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from opentelemetry.trace import SpanKind, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from pubsubpy.messages import HANDLED, HandlerResult, MessageInfo, Outcome, Reason
from pubsubpy.middleware import HandlerContext, MessageContext
from pubsubpy.telemetry import _metrics as metrics_module
from pubsubpy.telemetry import _propagation as propagation
from pubsubpy.telemetry import _tracing as tracing_module
from pubsubpy.telemetry._metrics import Metrics
from pubsubpy.telemetry._tracing import Tracing

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT_ID = "00f067aa0ba902b7"


def traceparent(sampled: bool) -> str:
    return f"00-{TRACE_ID}-{PARENT_ID}-{'01' if sampled else '00'}"


def handler_context(headers: dict[str, Any], *, tag: int = 7, routing_key: str = "Booking.updated",
                    correlation_id: str | None = None) -> HandlerContext:
    info = MessageInfo("m-1", routing_key, 1, False, headers, dt.datetime.now(dt.timezone.utc),
                       "shop.models.Booking.updated", "shop", 1, correlation_id)
    return HandlerContext("billing.on_booking", info, None, "events", "billing.events", tag)


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


def traced(exporter: InMemorySpanExporter, ratio: float | None = None) -> Tracing:
    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(ratio)) if ratio is not None else None)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return Tracing(provider)


def test_a_sampled_parent_gets_a_process_span_with_every_attribute_and_the_run_inside_it(
        exporter: InMemorySpanExporter) -> None:
    tracing = traced(exporter)
    inside: list[trace.Span] = []

    def run() -> HandlerResult:
        inside.append(trace.get_current_span())
        return HANDLED

    before = trace.get_current_span()
    assert tracing.handle(handler_context({"traceparent": traceparent(True)}, correlation_id="order-7"), run) is HANDLED
    assert trace.get_current_span() is before  # the span's context is detached again

    [span] = exporter.get_finished_spans()
    assert inside[0].get_span_context() == span.get_span_context()
    assert span.name == "process events:Booking.updated:billing.events"
    assert span.kind is SpanKind.CONSUMER
    assert span.parent is not None and span.parent.is_remote and format(span.parent.span_id, "016x") == PARENT_ID
    assert dict(span.attributes or {}) == {
        "messaging.system": "rabbitmq", "messaging.operation.name": "process", "messaging.operation.type": "process",
        "messaging.destination.name": "events:Booking.updated:billing.events",
        "messaging.rabbitmq.destination.routing_key": "Booking.updated", "messaging.message.id": "m-1",
        "messaging.message.conversation_id": "order-7", "messaging.rabbitmq.message.delivery_tag": 7,
        "pubsubpy.handler": "billing.on_booking", "pubsubpy.attempt": 1, "pubsubpy.outcome": "handled"}


def test_a_failed_run_marks_its_span_and_a_parent_the_sampler_dropped_records_nothing(
        exporter: InMemorySpanExporter) -> None:
    tracing = traced(exporter, ratio=0.0)  # only parents' decisions count
    failure = HandlerResult(Outcome.DEAD_LETTERED, Reason.HANDLER_ERROR, RuntimeError("card declined"))
    inside: list[trace.SpanContext] = []

    def run() -> HandlerResult:
        inside.append(trace.get_current_span().get_span_context())
        return failure

    assert tracing.handle(handler_context({"traceparent": traceparent(False)}), run) is failure
    assert exporter.get_finished_spans() == ()
    assert format(inside[0].trace_id, "032x") == TRACE_ID  # the trace still travels on, unsampled
    assert not inside[0].trace_flags.sampled

    assert tracing.handle(handler_context({"traceparent": traceparent(True)}), lambda: failure) is failure
    [span] = exporter.get_finished_spans()
    assert span.attributes is not None
    assert span.attributes["pubsubpy.outcome"] == "dead_lettered"
    assert span.attributes["pubsubpy.reason"] == "handler_error"
    assert span.attributes["error.type"] == "RuntimeError"
    assert span.status.status_code is StatusCode.ERROR
    assert [event.name for event in span.events] == ["exception"]


def test_an_exception_inside_ends_the_span_and_restores_the_context(exporter: InMemorySpanExporter) -> None:
    tracing = traced(exporter)
    before = trace.get_current_span()

    def run() -> HandlerResult:
        raise ValueError("a middleware inside failed")

    with pytest.raises(ValueError, match="middleware inside"):
        tracing.handle(handler_context({"traceparent": traceparent(True)}), run)
    assert trace.get_current_span() is before
    assert len(exporter.get_finished_spans()) == 1


def test_a_message_with_several_handlers_is_read_once(exporter: InMemorySpanExporter,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    tracing = traced(exporter)
    reads: list[object] = []

    def counting(headers: Any) -> Context:
        reads.append(headers)
        return propagation.extract(headers)

    monkeypatch.setattr(tracing_module, "extract", counting)
    first = handler_context({"traceparent": traceparent(True)}, tag=1)
    second = HandlerContext("billing.on_any", first.message, None, first.exchange, first.queue, 1)
    tracing.handle(first, lambda: HANDLED)
    tracing.handle(second, lambda: HANDLED)
    tracing.handle(handler_context({"traceparent": traceparent(True)}, tag=2), lambda: HANDLED)
    assert len(reads) == 2
    spans = exporter.get_finished_spans()
    assert len(spans) == 3 and all(s.parent is not None and format(s.parent.span_id, "016x") == PARENT_ID
                                   for s in spans)


def test_the_span_names_kept_per_destination_are_bounded(exporter: InMemorySpanExporter) -> None:
    tracing = traced(exporter)
    for i in range(tracing_module._CACHED_DESTINATIONS + 10):
        tracing.handle(handler_context({}, routing_key=f"Booking.k{i}"), lambda: HANDLED)
    assert len(tracing._destinations) <= tracing_module._CACHED_DESTINATIONS
    assert exporter.get_finished_spans()[-1].name.startswith("process events:Booking.k")


@pytest.mark.parametrize("headers", [
    {"traceparent": traceparent(True)},
    {"traceparent": traceparent(False), "tracestate": "vendor=1,other=x"},
    {"traceparent": traceparent(True).encode(), "baggage": "tenant=acme,plan=gold"},
    {"baggage": "tenant=acme"},
    {"tracestate": "vendor=1"},
    {},
    {"traceparent": "00-zzzz-not-a-context-01", "baggage": b"\xff\xfe"},
    {"traceparent": 12345},
])
def test_the_default_propagators_shortcut_reads_what_they_would(headers: dict[str, Any]) -> None:
    composite = CompositePropagator([TraceContextTextMapPropagator(), W3CBaggagePropagator()])
    expected = composite.extract(headers, Context(), getter=propagation._GETTER)
    found = propagation.extract(headers)
    assert trace.get_current_span(found).get_span_context() == trace.get_current_span(expected).get_span_context()
    assert baggage.get_all(found) == baggage.get_all(expected)


@pytest.fixture
def custom_propagator() -> Iterator[None]:
    class Custom(TextMapPropagator):
        def extract(self, carrier: Any, context: Context | None = None, getter: Any = None) -> Context:
            return baggage.set_baggage("seen-by", "custom", context)

        def inject(self, carrier: Any, context: Context | None = None, setter: Any = None) -> None:
            pass

        @property
        def fields(self) -> set[str]:
            return set()

    previous = propagate.get_global_textmap()
    propagate.set_global_textmap(Custom())
    yield
    propagate.set_global_textmap(previous)


@pytest.mark.usefixtures("custom_propagator")
def test_a_propagator_the_application_chose_is_the_one_that_reads() -> None:
    found = propagation.extract({"traceparent": traceparent(True)})
    assert baggage.get_baggage("seen-by", found) == "custom"
    assert not trace.get_current_span(found).get_span_context().is_valid


def test_once_a_global_provider_is_installed_its_own_tracer_is_used(exporter: InMemorySpanExporter,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    tracing = Tracing()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        pytest.skip("a global tracer provider is already installed in this process")
    assert not tracing.active()
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    tracing._looked = 0.0  # look again now, not in a second
    assert tracing.active()
    tracing.handle(handler_context({}), lambda: HANDLED)
    assert [s.name for s in exporter.get_finished_spans()] == ["process events:Booking.updated:billing.events"]


def _points(reader: InMemoryMetricReader, name: str) -> list[tuple[dict[str, Any], Any]]:
    data = reader.get_metrics_data()
    assert data is not None
    return sorted(((dict(point.attributes or {}), getattr(point, "count", None) or getattr(point, "value", 0))
                   for resource in data.resource_metrics for scope in resource.scope_metrics
                   for metric in scope.metrics if metric.name == name for point in metric.data.data_points),
                  key=repr)


def test_metrics_attributes_kept_per_destination_and_outcome_stay_apart() -> None:
    reader = InMemoryMetricReader()
    metrics = Metrics(MeterProvider(metric_readers=[reader]))
    failure = HandlerResult(Outcome.RETRIED, None, RuntimeError("later"))
    for routing_key, result in (("Booking.updated", HANDLED), ("Booking.updated", HANDLED),
                                ("Booking.updated", failure), ("Booking.created", HANDLED)):
        context = handler_context({"pubsubpy-published-at": int(time.time() * 1000)}, routing_key=routing_key)
        metrics.handle(context, lambda result=result: result)  # type: ignore[misc]
        metrics.after_message(MessageContext(context.message, result.outcome, None, None, context.exchange,
                                             context.queue, True))
    destination = "events:Booking.{}:billing.events"
    base = {"messaging.system": "rabbitmq", "messaging.operation.name": "process",
            "pubsubpy.handler": "billing.on_booking"}
    assert _points(reader, "messaging.process.duration") == sorted([
        ({**base, "messaging.destination.name": destination.format("updated"), "pubsubpy.outcome": "handled"}, 2),
        ({**base, "messaging.destination.name": destination.format("updated"), "pubsubpy.outcome": "retried",
          "error.type": "RuntimeError"}, 1),
        ({**base, "messaging.destination.name": destination.format("created"), "pubsubpy.outcome": "handled"}, 1),
    ], key=repr)
    consumed = {(a["messaging.destination.name"], a["pubsubpy.outcome"]): n
                for a, n in _points(reader, "messaging.client.consumed.messages")}
    assert consumed == {(destination.format("updated"), "handled"): 2, (destination.format("updated"), "retried"): 1,
                        (destination.format("created"), "handled"): 1}
    assert sum(n for _, n in _points(reader, "pubsubpy.message.end_to_end.duration")) == 4


def test_metrics_attribute_caches_are_bounded() -> None:
    metrics = Metrics(MeterProvider(metric_readers=[InMemoryMetricReader()]))
    for i in range(metrics_module._CACHED_ATTRIBUTES + 10):
        context = handler_context({}, routing_key=f"Booking.k{i}")
        metrics.handle(context, lambda: HANDLED)
        metrics.after_message(MessageContext(context.message, Outcome.HANDLED, None, None, context.exchange,
                                             context.queue, True))
    assert len(metrics._run_attributes) <= metrics_module._CACHED_ATTRIBUTES
    assert len(metrics._settled_attributes) <= metrics_module._CACHED_ATTRIBUTES
