"""Bad input, retries and dead letters on every backend, with foreign (non-pubsubpy) publishers."""

from __future__ import annotations

import json
import pickle
from collections import Counter

import pytest

from pubsubpy import MessageInfo, ModelEvent, Reject
from tests.conftest import wait_for
from tests.contract.conftest import Backend
from tests.contract.events import ALL, BOOKING, BookingCreated, BookingUpdated, RoomCleaned

GOOD = json.dumps({"id": 1, "guest": "Ada"}).encode()


def test_every_bad_message_is_dead_lettered_once_with_its_reason(backend: Backend) -> None:
    app = backend.app(schemas=ALL, max_message_size=10_000, retry_delay=0, max_attempts=2, unknown_key_window=0)
    handled: list[int] = []

    @app.subscribe("Booking.*")
    def on_booking(event: BookingCreated | BookingUpdated) -> None:
        if isinstance(event, BookingUpdated) and event.status == "poison":
            raise RuntimeError("cannot handle poison")
        if isinstance(event, BookingUpdated) and event.status == "reject":
            raise Reject("not for us")
        handled.append(event.id)

    @app.subscribe("Parcel.*")
    def on_parcel(event: ModelEvent) -> None: ...

    app.declare()
    ex = app.settings.model_exchange
    json_type = {"content_type": "application/json"}
    backend.foreign_publish(ex, "Booking.created", b"{not json", **json_type)
    backend.foreign_publish(ex, "Booking.created", b"\xff\xfe\x00garbage", **json_type)
    backend.foreign_publish(ex, "Booking.created", b"[1, 2, 3]", **json_type)
    backend.foreign_publish(ex, "Booking.created", pickle.dumps({"id": 1}), content_type="application/x-python-pickle")
    backend.foreign_publish(ex, "Booking.created", GOOD, content_type="application/json", content_encoding="gzip")
    backend.foreign_publish(ex, "Booking.created", b'{"id": 1, "guest": "' + b"x" * 20_000 + b'"}', **json_type)
    backend.foreign_publish(ex, "Parcel.sent", b'{"id": 1}', **json_type)
    backend.foreign_publish(ex, "Booking.created", b'{"id": "one", "guest": "Ada"}', **json_type)
    backend.foreign_publish(ex, "Booking.created", b'{"id": 1, "guest": "Ada", "x": NaN}', **json_type)
    app.publish_model_event(BOOKING, "updated", {"id": 9, "status": "poison"})
    app.publish_model_event(BOOKING, "updated", {"id": 10, "status": "reject"})
    for i in range(20):  # good ones, including a foreign one without content_type and with extra fields
        app.publish_model_event(BOOKING, "created", {"id": 100 + i, "guest": "g"})
    backend.foreign_publish(ex, "Booking.created", b'{"id": 200, "guest": "g", "added_later": true}')

    result = app.drain(timeout=20)

    expected = {"decode_error": 4, "unsupported_content_type": 2, "too_large": 1, "unknown_event": 1,
                "validation_error": 1, "handler_error": 1, "rejected": 1}
    assert result.reasons == expected
    assert result.handled == 21 and result.retried == 1
    assert sorted(handled) == [*range(100, 120), 200]
    letters = app.list_dead_letters()
    assert Counter(letter.reason for letter in letters) == Counter(expected)
    poison = next(letter for letter in letters if letter.reason == "handler_error")
    assert poison.attempts == 2 and "cannot handle poison" in (poison.error or "")
    assert poison.handler is not None and poison.handler.endswith("on_booking")
    assert poison.payload == {"id": 9, "status": "poison"}
    assert all(letter.error for letter in letters)
    garbage = next(letter for letter in letters if letter.body.startswith(b"\xff"))
    assert garbage.payload is None and garbage.body == b"\xff\xfe\x00garbage", "bodies are kept byte for byte"
    assert app.dead_letter_count() == 11, "listing is non-destructive"


def test_a_failing_handler_runs_exactly_max_attempts_times_then_dead_letters(backend: Backend) -> None:
    app = backend.app(schemas=ALL, retry_delay=0.05, retry_delay_max=0.1)
    attempts: list[int] = []

    @app.subscribe("Booking.updated", max_attempts=4)
    def always_fails(event: BookingUpdated, info: MessageInfo) -> None:
        attempts.append(info.attempt)
        raise ValueError("down")

    app.declare()
    app.publish_model_event(BOOKING, "updated", {"id": 1, "status": "x"})

    def drained_to_dlq() -> bool:
        app.drain(timeout=5)
        return app.dead_letter_count() == 1

    wait_for(drained_to_dlq, timeout=20, what="the poison message to reach the dead-letter queue")
    assert attempts == [1, 2, 3, 4]
    [letter] = app.list_dead_letters()
    assert letter.reason == "handler_error" and letter.attempts == 4
    assert app.drain(timeout=5).messages == 0, "nothing left spinning"


def test_only_the_failed_handler_runs_again(backend: Backend) -> None:
    app = backend.app(schemas=ALL, retry_delay=0, max_attempts=3)
    calls: Counter[str] = Counter()
    failures = {"flaky": 1}

    @app.subscribe("Booking.*")
    def steady(event: BookingCreated | BookingUpdated) -> None:
        calls["steady"] += 1

    @app.subscribe("Booking.created")
    def flaky(event: BookingCreated) -> None:
        calls["flaky"] += 1
        if failures["flaky"]:
            failures["flaky"] -= 1
            raise RuntimeError("transient")

    app.declare()
    app.publish_model_event(BOOKING, "created", {"id": 1, "guest": "g"})
    result = app.drain(timeout=10)
    assert result.retried == 1 and result.handled == 1 and result.dead_lettered == 0
    assert calls == Counter({"steady": 1, "flaky": 2})


def test_forged_attempt_header_is_clamped(backend: Backend) -> None:
    app = backend.app(schemas=ALL, retry_delay=0, max_attempts=3)
    seen: list[int] = []

    @app.subscribe("Booking.created")
    def record(event: BookingCreated, info: MessageInfo) -> None:
        seen.append(info.attempt)

    app.declare()
    ex = app.settings.model_exchange
    for forged in (10**9, -5, "three", True):
        backend.foreign_publish(ex, "Booking.created", GOOD, content_type="application/json",
                                headers={"pubsubpy-attempt": forged})
    assert app.drain(timeout=10).handled == 4
    assert seen == [3, 1, 1, 1]


def test_replay_by_id_and_purge_the_rest(backend: Backend) -> None:
    app = backend.app(schemas=ALL, retry_delay=0, max_attempts=1)
    broken = {"on": True}
    handled: list[int] = []

    @app.subscribe("Booking.created")
    def on_created(event: BookingCreated) -> None:
        if broken["on"]:
            raise RuntimeError("bug")
        handled.append(event.id)

    app.declare()
    ids = app.publish_many([(BOOKING, "created", {"id": i, "guest": "g"}) for i in range(15)])
    assert app.drain(timeout=10).dead_lettered == 15
    listed = [letter.message_id for letter in app.list_dead_letters()]
    assert listed == ids, "listing keeps the queue order"
    assert [letter.message_id for letter in app.list_dead_letters()] == ids, "and changes nothing"

    broken["on"] = False
    chosen = ids[2:12]
    assert sorted(app.replay_dead_letters(chosen)) == sorted(chosen)
    assert app.drain(timeout=10).handled == 10
    assert sorted(handled) == list(range(2, 12))
    assert [letter.message_id for letter in app.list_dead_letters()] == ids[:2] + ids[12:]

    assert sorted(app.purge_dead_letters()) == sorted(ids[:2] + ids[12:])
    assert app.dead_letter_count() == 0 and app.list_dead_letters() == []


def test_dead_letter_filters(backend: Backend) -> None:
    app = backend.app(schemas=ALL, retry_delay=0, max_attempts=1)

    @app.subscribe("Booking.*")
    def on_booking(event: BookingCreated | BookingUpdated) -> None:
        raise Reject("no") if isinstance(event, BookingUpdated) else RuntimeError("bug")

    @app.subscribe("Room.*")
    def on_room(event: RoomCleaned) -> None:
        raise RuntimeError("bug")

    app.declare()
    app.publish_model_event(BOOKING, "created", {"id": 1, "guest": "g"})
    app.publish_model_event(BOOKING, "updated", {"id": 2, "status": "s"})
    app.publish_model_event("shop.models.Room", "cleaned", {"number": 3})
    app.drain(timeout=10)
    assert [x.routing_key for x in app.list_dead_letters(reason="rejected")] == ["Booking.updated"]
    assert [x.routing_key for x in app.list_dead_letters(topic="Room.*")] == ["Room.cleaned"]
    assert len(app.list_dead_letters(handler=on_room.__module__ + "." + on_room.__qualname__)) == 1
    assert len(app.list_dead_letters(limit=2)) == 2
    assert app.purge_dead_letters(reason="rejected") and app.dead_letter_count() == 2


@pytest.mark.parametrize("delay", [0.0, 0.05])
def test_retry_goes_through_the_service_queue_with_original_routing_key(backend: Backend, delay: float) -> None:
    app = backend.app(schemas=ALL, retry_delay=delay, max_attempts=2)
    keys: list[str] = []
    fail = {"left": 1}

    @app.subscribe("Booking.#")
    def on_booking(event: BookingCreated | BookingUpdated, info: MessageInfo) -> None:
        keys.append(info.routing_key)
        if fail["left"]:
            fail["left"] -= 1
            raise RuntimeError("once")

    app.declare()
    app.publish_model_event(BOOKING, "updated", {"id": 1, "status": "s"})
    app.drain(timeout=10)
    wait_for(lambda: app.drain(timeout=5).handled == 1 or len(keys) >= 2, timeout=10, what="the retry")
    assert keys == ["Booking.updated", "Booking.updated"]
    assert app.dead_letter_count() == 0


class _Unprintable(Exception):
    def __str__(self) -> str:
        raise RuntimeError("even printing this fails")


def test_hostile_input_never_crashes_the_drain(backend: Backend) -> None:
    """Absurd property values, pathological JSON and a handler whose exception cannot be printed."""
    app = backend.app(schemas=ALL, require_schemas=False, retry_delay=0, max_attempts=1)
    seen: list[object] = []

    @app.subscribe("Booking.created")
    def on_created(event: BookingCreated, info: MessageInfo) -> None:
        seen.append(info.timestamp)

    @app.subscribe("Free.*")
    def on_free(event: dict[str, object]) -> None:
        raise _Unprintable()

    app.declare()
    ex = app.settings.model_exchange
    backend.foreign_publish(ex, "Booking.created", GOOD, content_type="application/json", timestamp=2**63 - 1)
    backend.foreign_publish(ex, "Free.deep", b"[" * 50_000 + b"]" * 50_000, content_type="application/json")
    backend.foreign_publish(ex, "Free.deep", b'{"a":' * 5_000 + b"1" + b"}" * 5_000, content_type="application/json")
    backend.foreign_publish(ex, "Free.ok", b'{"a": 1}', content_type="application/json")
    result = app.drain(timeout=20)
    assert result.handled == 1 and seen == [None], "an impossible timestamp is reported as unknown, not a crash"
    assert result.reasons == {"decode_error": 2, "handler_error": 1}, result.reasons
    letters = {letter.routing_key + ":" + letter.reason: letter for letter in app.list_dead_letters()}
    assert "_Unprintable" in (letters["Free.ok:handler_error"].error or "")
