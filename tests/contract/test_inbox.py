"""idempotent=True on every backend: a message id runs each idempotent handler once."""

from __future__ import annotations

import pytest

from pubsubpy import ConfigurationError
from pubsubpy.testing import MemoryInbox
from tests.contract.conftest import Backend
from tests.contract.events import ALL, BookingCreated, BookingUpdated

GOOD = b'{"id": 1, "guest": "Ada"}'


def test_a_duplicate_is_acked_without_running_the_idempotent_handler_again(backend: Backend) -> None:
    inbox = MemoryInbox()
    app = backend.app(schemas=ALL, inbox=inbox)
    once: list[int] = []
    every: list[int] = []

    @app.subscribe("Booking.*", idempotent=True)
    def charge(event: BookingCreated | BookingUpdated) -> None:
        once.append(event.id)

    @app.subscribe("Booking.*")
    def audit(event: BookingCreated | BookingUpdated) -> None:
        every.append(event.id)

    app.declare()
    exchange = app.settings.model_exchange
    for _ in range(3):  # the same message sent three times (a relay re-sending after a crash)
        backend.foreign_publish(exchange, "Booking.created", GOOD, content_type="application/json",
                                message_id="m-1")
    backend.foreign_publish(exchange, "Booking.created", GOOD, content_type="application/json", message_id="m-2")
    result = app.drain(timeout=10)
    assert result.handled == 4 and result.dead_lettered == 0, result
    assert once == [1, 1], "m-1 once and m-2 once"
    assert every == [1, 1, 1, 1], "a plain handler runs for every delivery"
    assert inbox.runs == 2


def test_a_message_without_id_runs_with_a_warning(backend: Backend, caplog: pytest.LogCaptureFixture) -> None:
    app = backend.app(schemas=ALL, inbox=MemoryInbox())
    ran: list[int] = []

    @app.subscribe("Booking.*", idempotent=True)
    def charge(event: BookingCreated | BookingUpdated) -> None:
        ran.append(event.id)

    app.declare()
    backend.foreign_publish(app.settings.model_exchange, "Booking.created", GOOD, content_type="application/json")
    assert app.drain(timeout=10).handled == 1 and ran == [1]
    assert "cannot be deduplicated" in caplog.text


def test_idempotent_without_an_inbox_is_a_configuration_error(backend: Backend) -> None:
    app = backend.app(schemas=ALL)

    @app.subscribe("Booking.*", idempotent=True)
    def charge(event: BookingCreated | BookingUpdated) -> None: ...

    with pytest.raises(ConfigurationError, match="inbox"):
        app.drain(timeout=5)
