"""Handler isolation, nesting limits and the consumer loop's concurrency, on every backend."""

from __future__ import annotations

import json
import threading

import pytest

from pubsubpy import MessageInfo, Reject
from tests.conftest import wait_for
from tests.contract.conftest import Backend
from tests.contract.events import ALL, BOOKING, BookingCreated

JSON = {"content_type": "application/json"}


def _name(func: object) -> str:
    return f"{func.__module__}.{func.__qualname__}"  # type: ignore[attr-defined]


def test_reject_in_one_handler_never_keeps_another_from_running(backend: Backend) -> None:
    app = backend.app(schemas=ALL, retry_delay=0)
    calls: list[str] = []
    rejecting = [True]

    @app.subscribe("Booking.created")
    def picky(event: BookingCreated) -> None:
        calls.append("picky")
        if rejecting[0]:
            raise Reject("not today")

    @app.subscribe("Booking.created")
    def easy(event: BookingCreated) -> None:
        calls.append("easy")

    app.declare()
    app.publish_model_event(BOOKING, "created", {"id": 1, "guest": "Ada"})
    result = app.drain(timeout=20)
    assert sorted(calls) == ["easy", "picky"], "the second handler runs although the first rejected"
    assert (result.handled, result.dead_lettered, result.reasons) == (0, 1, {"rejected": 1})
    [letter] = app.list_dead_letters()
    assert letter.reason == "rejected" and letter.handler == _name(picky)
    assert letter.error == "Reject: not today"

    calls.clear()
    rejecting[0] = False
    assert app.replay_dead_letters() == [letter.message_id]
    assert app.drain(timeout=20).handled == 1
    assert calls == ["picky"], "a replay runs only the handler that failed"


def test_an_exhausted_handler_and_a_retried_one_each_get_their_own_copy(backend: Backend) -> None:
    app = backend.app(schemas=ALL, retry_delay=0, max_attempts=3)
    calls: list[tuple[str, int]] = []

    @app.subscribe("Booking.created", max_attempts=1)
    def fragile(event: BookingCreated, info: MessageInfo) -> None:
        calls.append(("fragile", info.attempt))
        raise RuntimeError("always")

    @app.subscribe("Booking.created")
    def flaky(event: BookingCreated, info: MessageInfo) -> None:
        calls.append(("flaky", info.attempt))
        if info.attempt == 1:
            raise ValueError("first time")

    app.declare()
    app.publish_model_event(BOOKING, "created", {"id": 1, "guest": "Ada"})
    total = app.drain(timeout=20)
    total_handled = total.handled + app.drain(timeout=20).handled
    assert sorted(calls) == [("flaky", 1), ("flaky", 2), ("fragile", 1)]
    assert total.dead_lettered == 1 and total_handled == 1
    [letter] = app.list_dead_letters()
    assert (letter.reason, letter.handler) == ("handler_error", _name(fragile))
    assert letter.error == "RuntimeError: always"


def _nested(depth: int) -> bytes:
    return b'{"a":' * (depth - 1) + b'{"a":1}' + b"}" * (depth - 1)


@pytest.mark.parametrize("limit", [64, 10])
def test_json_nesting_has_one_verdict_on_every_python(backend: Backend, limit: int) -> None:
    """Deeper than max_json_depth is a decode_error before any parser runs (Python's json and
    pydantic-core each have their own, version-dependent limits); brackets inside strings don't count."""
    app = backend.app(schemas=ALL, require_schemas=False, max_attempts=1, max_json_depth=limit)
    seen: list[int] = []

    @app.subscribe("Free.*")
    def on_free(event: dict[str, object]) -> None:
        seen.append(int(str(event.get("n", 0))))

    @app.subscribe("Booking.created")
    def on_created(event: BookingCreated) -> None:
        seen.append(event.id)

    app.declare()
    ex = app.settings.model_exchange
    at_limit = json.loads(_nested(limit))
    at_limit["n"] = 1
    backend.foreign_publish(ex, "Free.ok", json.dumps(at_limit).encode(), **JSON)
    backend.foreign_publish(ex, "Free.ok", json.dumps({"n": 2, "s": "[{" * 500}).encode(), **JSON)
    for depth in (limit + 1, 1_000, 5_000):
        backend.foreign_publish(ex, "Free.deep", _nested(depth), **JSON)
    typed_deep = b'{"id": 3, "guest": "g", "x": ' + _nested(limit) + b"}"
    backend.foreign_publish(ex, "Booking.created", typed_deep, **JSON)
    result = app.drain(timeout=20)
    assert sorted(seen) == [1, 2]
    assert result.reasons == {"decode_error": 4}
    errors = {letter.error for letter in app.list_dead_letters()}
    assert errors == {f"body nests deeper than max_json_depth={limit}"}


def test_drain_with_concurrency_runs_handlers_at_once(backend: Backend) -> None:
    app = backend.app(schemas=ALL)
    inside = threading.Semaphore(0)
    release = threading.Event()
    done: list[int] = []

    @app.subscribe("Booking.created")
    def slow(event: BookingCreated) -> None:
        inside.release()
        assert release.wait(10), "handlers did not run side by side"
        done.append(event.id)

    app.declare()
    app.publish_many([(BOOKING, "created", {"id": i, "guest": "g"}) for i in range(4)])

    def release_when_all_inside() -> None:
        for _ in range(4):
            inside.acquire(timeout=10)
        release.set()

    helper = threading.Thread(target=release_when_all_inside)
    helper.start()
    result = app.drain(timeout=30, concurrency=4)
    helper.join()
    assert release.is_set() and sorted(done) == [0, 1, 2, 3]
    assert result.handled == 4


def test_run_consumes_until_stopped_and_says_why(backend: Backend) -> None:
    app = backend.app(schemas=ALL)
    done: list[int] = []

    @app.subscribe("Booking.created")
    def record(event: BookingCreated) -> None:
        done.append(event.id)

    app.declare()
    stop = threading.Event()
    results: list[object] = []
    worker = threading.Thread(target=lambda: results.append(app.run(concurrency=2, stop=stop)))
    worker.start()
    try:
        app.publish_many([(BOOKING, "created", {"id": i, "guest": "g"}) for i in range(50)])
        wait_for(lambda: len(done) == 50, timeout=20, what="the worker to handle 50 events")
        app.publish_model_event(BOOKING, "created", {"id": 50, "guest": "late"})
        wait_for(lambda: len(done) == 51, timeout=20, what="the worker to handle an event published later")
    finally:
        stop.set()
        worker.join(20)
    assert not worker.is_alive()
    [result] = results
    assert result.handled == 51 and result.stopped_by == "stopped"  # type: ignore[attr-defined]
    assert sorted(done) == list(range(51))
