"""The public middleware API on ``memory://`` (same semantics as RabbitMQ; the broker tests are in
test_tracing.py and test_metrics.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from pubsubpy import (
    ConfigurationError,
    HandlerContext,
    HandlerResult,
    MessageContext,
    MessageInfo,
    Middleware,
    PublishContext,
    PubSub,
    Reject,
)
from pubsubpy.messages import Outcome, Reason
from tests.contract.events import ALL, BOOKING, BookingCreated


class Recorder(Middleware):
    def __init__(self, name: str, calls: list[str]) -> None:
        self.name, self.calls = name, calls
        self.results: list[HandlerResult] = []
        self.settled: list[MessageContext] = []

    def publish(self, context: PublishContext, send: Callable[[], list[str]]) -> list[str]:
        self.calls.append(f"{self.name}:publish:{context.stage}:{len(context.messages)}")
        for message in context.messages:
            message.properties.headers["tenant"] = "acme"
        return send()

    def handle(self, context: HandlerContext, run: Callable[[], HandlerResult]) -> HandlerResult:
        self.calls.append(f"{self.name}:before:{context.handler.rsplit('.', 1)[-1]}:{context.message.attempt}")
        result = run()
        self.results.append(result)
        self.calls.append(f"{self.name}:after:{result.outcome.value}")
        return result

    def after_message(self, context: MessageContext) -> None:
        self.settled.append(context)


def _app(middleware: list[Middleware], **options: object) -> PubSub:
    return PubSub("memory://", schemas=ALL, service_name="billing", middleware=middleware, telemetry=False,
                  retry_delay=0, **options)  # type: ignore[arg-type]


def test_middleware_runs_in_order_around_publish_and_each_handler_and_sees_every_outcome() -> None:
    calls: list[str] = []
    outer, inner = Recorder("outer", calls), Recorder("inner", calls)
    app = _app([outer, inner])
    tenants: list[object] = []

    @app.subscribe("Booking.created")
    def bill(event: BookingCreated, info: MessageInfo) -> None:
        tenants.append(info.headers.get("tenant"))
        if event.id == 2:
            raise Reject("no")

    app.declare()
    app.publish_model_event(BOOKING, "created", {"id": 1, "guest": "a"})
    app.publish_many([(BOOKING, "created", {"id": 2, "guest": "b"})])
    result = app.drain(timeout=5)
    assert (result.handled, result.dead_lettered) == (1, 1)
    assert tenants == ["acme", "acme"]  # a header a middleware added travelled with the message
    assert calls == [
        "outer:publish:send:1", "inner:publish:send:1",
        "outer:publish:send:1", "inner:publish:send:1",
        "outer:before:bill:1", "inner:before:bill:1", "inner:after:handled", "outer:after:handled",
        "outer:before:bill:1", "inner:before:bill:1", "inner:after:dead_lettered", "outer:after:dead_lettered",
    ]
    rejected = outer.results[1]
    assert rejected.reason is Reason.REJECTED and isinstance(rejected.exception, Reject)
    assert [(c.outcome, c.reason, c.handlers_ran) for c in outer.settled] == \
        [(Outcome.HANDLED, None, True), (Outcome.DEAD_LETTERED, Reason.REJECTED, True)]
    assert outer.settled[1].error == "Reject: no"


def test_a_handler_failure_is_retried_and_each_run_reports_it() -> None:
    calls: list[str] = []
    recorder = Recorder("m", calls)
    app = _app([recorder], max_attempts=2)

    @app.subscribe("Booking.created")
    def flaky(event: BookingCreated) -> None:
        raise RuntimeError("down")

    app.declare()
    app.publish_model_event(BOOKING, "created", {"id": 1, "guest": "a"})
    result = app.drain(timeout=5)  # retry_delay=0: the retry copy comes straight back
    assert (result.retried, result.dead_lettered) == (1, 1)
    assert [(r.outcome, r.reason) for r in recorder.results] == \
        [(Outcome.RETRIED, None), (Outcome.DEAD_LETTERED, Reason.HANDLER_ERROR)]
    assert all(isinstance(r.exception, RuntimeError) for r in recorder.results)
    assert [c.outcome for c in recorder.settled] == [Outcome.RETRIED, Outcome.DEAD_LETTERED]


def test_an_exception_in_handle_fails_the_run_and_one_in_after_message_is_logged_not_raised(
        caplog: pytest.LogCaptureFixture) -> None:
    class Tenancy(Middleware):
        def handle(self, context: HandlerContext, run: Callable[[], HandlerResult]) -> HandlerResult:
            if "tenant" not in context.message.headers:
                raise PermissionError("no tenant header")
            return run()

        def after_message(self, context: MessageContext) -> None:
            raise ValueError("audit log is down")

    app = _app([Tenancy()], max_attempts=1)
    ran: list[int] = []

    @app.subscribe("Booking.created")
    def bill(event: BookingCreated) -> None:
        ran.append(event.id)

    app.declare()
    app.publish_model_event(BOOKING, "created", {"id": 1, "guest": "a"}, headers={"tenant": "acme"})
    app.publish_model_event(BOOKING, "created", {"id": 2, "guest": "b"})
    with caplog.at_level(logging.ERROR, logger="pubsubpy.middleware"):
        result = app.drain(timeout=5)
    assert ran == [1]
    assert (result.handled, result.dead_lettered, result.reasons) == (1, 1, {"handler_error": 1})
    [letter] = app.list_dead_letters()
    assert letter.error == "PermissionError: no tenant header"
    assert sum("audit log is down" in (r.exc_text or "") for r in caplog.records) == 2


def test_a_message_that_ends_before_any_handler_is_reported_with_handlers_ran_false() -> None:
    recorder = Recorder("m", [])
    app = _app([recorder], require_schemas=True)

    @app.subscribe("Booking.created")
    def bill(event: BookingCreated) -> None: ...

    app.declare()
    app.publish_model_event(BOOKING, "created", {"id": 1, "guest": "a"})
    app.transport.publish([_garbage(app)])
    app.drain(timeout=5)
    assert sorted((c.outcome.value, c.reason.value if c.reason else None, c.handlers_ran)
                  for c in recorder.settled) == [("dead_lettered", "decode_error", False), ("handled", None, True)]
    assert len(recorder.results) == 1


def _garbage(app: PubSub) -> object:
    from pubsubpy.envelope import Properties
    from pubsubpy.transports.base import OutgoingMessage

    return OutgoingMessage(app.settings.model_exchange, "Booking.created", b"{not json",
                           Properties(message_id="bad", headers={}))


def test_middleware_that_is_not_a_middleware_is_refused_by_name() -> None:
    with pytest.raises(ConfigurationError, match=r"is not a pubsubpy\.Middleware"):
        PubSub("memory://", middleware=[object()])  # type: ignore[list-item]


def test_telemetry_false_and_no_middleware_means_no_chain_at_all() -> None:
    app = PubSub("memory://", telemetry=False)
    assert app.middleware is None
    on = PubSub("memory://")  # opentelemetry-api is installed in the test environment
    assert on.middleware is not None
    assert [type(m).__name__ for m in on.middleware.middleware] == ["Tracing", "Metrics"]


def test_django_settings_name_middleware_by_dotted_path() -> None:
    from examples.middleware import Tenancy
    from pubsubpy.contrib.django.apps import middleware

    [made] = middleware({"middleware": ["examples.middleware.Tenancy"]})
    assert isinstance(made, Tenancy)
    with pytest.raises(ConfigurationError, match=r"cannot import 'examples\.nothing\.Here'"):
        middleware({"middleware": ["examples.nothing.Here"]})
    with pytest.raises(ConfigurationError, match="must be a list of dotted paths"):
        middleware({"middleware": "examples.middleware.Tenancy"})
