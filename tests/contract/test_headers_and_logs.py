"""Caller headers and correlation_id reach handlers (through retries too); per-message log lines carry
message_id, routing_key, handler, attempt and outcome as ``extra`` fields, at the documented levels."""

from __future__ import annotations

import logging

import pytest

from pubsubpy import MessageInfo, PayloadValidationError
from tests.contract.conftest import Backend
from tests.contract.events import ALL, BOOKING, BookingCreated, BookingUpdated


def test_headers_and_correlation_id_reach_the_handler_also_on_a_retry(backend: Backend) -> None:
    app = backend.app(schemas=ALL, retry_delay=0, max_attempts=2)
    seen: list[MessageInfo] = []

    @app.subscribe("Booking.*")
    def on_booking(event: BookingCreated | BookingUpdated, info: MessageInfo) -> None:
        seen.append(info)
        if info.attempt == 1 and event.id == 1:
            raise RuntimeError("first try fails")

    app.declare()
    app.publish_model_event(BOOKING, "created", {"id": 1, "guest": "a"},
                            headers={"tenant": "acme", "priority": 3, "urgent": True}, correlation_id="req-42")
    app.publish_many([(BOOKING, "created", {"id": 2, "guest": "b"}, {"headers": {"tenant": "beta"},
                                                                     "correlation_id": "req-43"})])
    deadline_drains = 0
    while len(seen) < 3 and deadline_drains < 20:
        app.drain(timeout=5)
        deadline_drains += 1
    assert [(i.attempt, i.correlation_id, i.headers.get("tenant")) for i in seen] == [
        (1, "req-42", "acme"), (1, "req-43", "beta"), (2, "req-42", "acme")]
    assert seen[2].headers["priority"] == 3 and seen[2].headers["urgent"] is True


@pytest.mark.parametrize(("headers", "match"), [
    ({"pubsubpy-attempt": 9}, "reserved"), ({"X-Death": "no"}, "reserved"), ({"ratio": 0.5}, "float"),
    ({"": "x"}, "1-128"), ({"big": "x" * 5000}, "longer than"),
])
def test_reserved_or_unsendable_headers_are_refused(backend: Backend, headers: dict[str, object], match: str) -> None:
    app = backend.app(schemas=ALL)
    with pytest.raises(PayloadValidationError, match=match):
        app.publish_model_event(BOOKING, "created", {"id": 1, "guest": "a"}, headers=headers)  # type: ignore[arg-type]
    with pytest.raises(PayloadValidationError, match="255 bytes"):
        app.publish_model_event(BOOKING, "created", {"id": 1, "guest": "a"}, correlation_id="c" * 300)


def test_per_message_log_lines_carry_structured_fields(backend: Backend, caplog: pytest.LogCaptureFixture) -> None:
    app = backend.app(schemas=ALL, retry_delay=0, max_attempts=2)

    @app.subscribe("Booking.*")
    def on_booking(event: BookingCreated | BookingUpdated) -> None:
        if isinstance(event, BookingUpdated):
            raise RuntimeError("cannot")

    app.declare()
    ok = app.publish_model_event(BOOKING, "created", {"id": 1, "guest": "a"})
    bad = app.publish_model_event(BOOKING, "updated", {"id": 2, "status": "x"})
    caplog.set_level(logging.DEBUG, logger="pubsubpy")
    for _ in range(10):
        if app.drain(timeout=5).dead_lettered:
            break
    records = [r for r in caplog.records if getattr(r, "message_id", None) in (ok, bad)]
    by = {(r.message_id, r.outcome, r.levelname) for r in records}  # type: ignore[attr-defined]
    assert (ok, "handled", "DEBUG") in by
    assert (bad, "retry", "INFO") in by, "a failure with attempts left is INFO"
    assert (bad, "exhausted", "WARNING") in by
    assert (bad, "dead_lettered", "WARNING") in by
    dead = next(r for r in records if getattr(r, "outcome", None) == "dead_lettered")
    assert dead.routing_key == "Booking.updated" and dead.attempt == 2  # type: ignore[attr-defined]
    assert dead.handler.endswith("on_booking") and dead.reason == "handler_error"  # type: ignore[attr-defined]
