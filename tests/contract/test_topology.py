"""Deploy-safe topology on every backend: declaring only adds, pruning only on purpose,
and a key no handler of this version subscribes goes back for the version that does."""

from __future__ import annotations

import threading
import time
import uuid

import pytest

from pubsubpy import ConfigurationError, PubSub
from pubsubpy.envelope import Properties
from pubsubpy.transports.base import OutgoingMessage
from tests.contract.conftest import Backend
from tests.contract.events import ALL, BOOKING, ROOM, BookingCreated, BookingUpdated, RoomCleaned


def routed(app: PubSub, routing_key: str) -> bool:
    """Whether the model exchange routes ``routing_key`` anywhere (each test has its own exchange)."""
    message_id = uuid.uuid4().hex
    probe = OutgoingMessage(app.settings.model_exchange, routing_key, b"{}", Properties(message_id=message_id),
                            mandatory=True)
    return not app.transport.publish([probe])


def test_declare_only_adds_and_every_operation_leaves_other_bindings_alone(backend: Backend) -> None:
    exchange, service = backend.names.exchange(), backend.names.service()  # type: ignore[attr-defined]
    v2 = backend.app(schemas=ALL, model_exchange=exchange, service_name=service)

    @v2.subscribe("Booking.*")
    @v2.subscribe("Room.*")
    def on_v2(event: BookingCreated | BookingUpdated | RoomCleaned) -> None: ...

    v2.declare()
    backend.bind_by_hand(exchange, f"{service}.events", "Audit.#")
    v1 = backend.app(schemas=ALL, model_exchange=exchange, service_name=service, unknown_key_window=0)
    handled: list[int] = []

    @v1.subscribe("Booking.*")
    def on_v1(event: BookingCreated | BookingUpdated) -> None:
        handled.append(event.id)

    # Every operation of the older version: none may take the other bindings away.
    v1.declare()
    v1.publish_model_event(BOOKING, "created", {"id": 1, "guest": "a"})
    assert v1.drain(timeout=10).handled == 1
    assert v1.list_dead_letters(timeout=10) == []
    assert v1.replay_dead_letters(timeout=10) == [] and v1.purge_dead_letters(timeout=10) == []
    assert v1.dead_letter_count(timeout=10) == 0
    v1.close()
    v1.declare()

    for key in ("Booking.created", "Room.cleaned", "Audit.login.failed"):
        assert routed(v1, key), f"{key} lost its binding"
    assert v1.transport.recorded_bindings(v2.topology()) == {"Booking.*", "Room.*"}, "hand-made ones unrecorded"


def test_prune_removes_only_recorded_bindings_this_version_no_longer_subscribes(backend: Backend) -> None:
    exchange, service = backend.names.exchange(), backend.names.service()  # type: ignore[attr-defined]
    old = backend.app(schemas=ALL, model_exchange=exchange, service_name=service)

    @old.subscribe("Room.*")
    @old.subscribe("Booking.*")
    def on_old(event: BookingCreated | BookingUpdated | RoomCleaned) -> None: ...

    old.declare()
    backend.bind_by_hand(exchange, f"{service}.events", "Audit.#")
    new = backend.app(schemas=ALL, model_exchange=exchange, service_name=service)

    @new.subscribe("Booking.*")
    def on_new(event: BookingCreated | BookingUpdated) -> None: ...

    new.declare()
    assert routed(new, "Room.cleaned"), "a plain declare never prunes"
    assert new.stale_bindings(timeout=10) == ["Room.*"], "hand-made Audit.# is not pubsubpy's to list"
    new.declare(prune=["Booking.*", "Nothing.*"])  # neither is stale: nothing happens
    assert routed(new, "Booking.created") and routed(new, "Room.cleaned")
    with pytest.raises(ConfigurationError, match="string"):
        new.declare(prune="Room.*")  # type: ignore[arg-type]

    new.declare(prune=True)
    assert not routed(new, "Room.cleaned")
    assert routed(new, "Booking.created") and routed(new, "Audit.login"), "prune keeps current and hand-made"
    assert new.stale_bindings(timeout=10) == []
    assert new.transport.recorded_bindings(new.topology()) == {"Booking.*"}


def test_rolling_deploy_every_event_of_the_new_version_reaches_it(backend: Backend) -> None:
    """v2 subscribes Room.* too; v1 and v2 compete on the queue. v1 sends Room events back instead of
    dead-lettering them, until a v2 worker takes them."""
    exchange, service = backend.names.exchange(), backend.names.service()  # type: ignore[attr-defined]
    options = {"schemas": ALL, "model_exchange": exchange, "service_name": service, "prefetch": 10,
               "retry_delay": 0.1}
    v1 = backend.app(**options)  # type: ignore[arg-type]
    v2 = backend.app(**options)  # type: ignore[arg-type]
    v1_rooms: list[int] = []
    v2_rooms: list[int] = []
    bookings: list[int] = []
    lock = threading.Lock()

    @v1.subscribe("Booking.*")
    def on_booking_v1(event: BookingCreated | BookingUpdated) -> None:
        with lock:
            bookings.append(event.id)

    @v2.subscribe("Booking.*")
    def on_booking_v2(event: BookingCreated | BookingUpdated) -> None:
        with lock:
            bookings.append(event.id)

    @v2.subscribe("Room.*")
    def on_room_v2(event: RoomCleaned) -> None:
        with lock:
            v2_rooms.append(event.number)

    v2.declare()
    v1.declare()  # the old version starts again meanwhile: Room.* must stay bound
    count = 60
    publisher = backend.app(schemas=ALL, model_exchange=exchange, service_name=backend.names.service("pub"))  # type: ignore[attr-defined]

    def publish(numbers: range) -> None:
        for i in numbers:
            publisher.publish_model_event(ROOM, "cleaned", {"number": i})
            publisher.publish_model_event(BOOKING, "created", {"id": i, "guest": "g"})

    publish(range(10))
    first = v1.drain(max_messages=20, timeout=10)  # the old version is first to see the new keys
    assert first.deferred == 10 and first.handled == 10 and first.dead_lettered == 0, first
    totals = {"v1": {"deferred": first.deferred, "dead": 0}, "v2": {"deferred": 0, "dead": 0}}
    errors: list[BaseException] = []

    v1_stopped = threading.Event()  # the deploy finishes: the last v1 worker stops

    def drain_until_done(name: str, app: PubSub) -> None:
        deadline = time.monotonic() + 60
        try:
            while time.monotonic() < deadline:
                with lock:
                    if len(v2_rooms) >= count and len(bookings) >= count:
                        return
                if name == "v1" and v1_stopped.is_set():
                    return
                result = app.drain(timeout=5)
                totals[name]["deferred"] += result.deferred
                totals[name]["dead"] += result.dead_lettered
                if result.messages == 0:
                    time.sleep(0.05)  # the deferred ones are waiting in a retry queue
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=drain_until_done, args=(n, a)) for n, a in (("v1", v1), ("v2", v2))]
    for thread in threads:
        thread.start()
    publish(range(10, count))  # while both versions drain
    v1_stopped.set()
    for thread in threads:
        thread.join(90)
    assert not errors, errors
    assert sorted(v2_rooms) == list(range(count)), "every Room event reaches v2 exactly once"
    assert sorted(bookings) == list(range(count))
    assert totals["v1"]["dead"] == 0 and totals["v2"]["dead"] == 0
    assert v1_rooms == []
    assert v2.dead_letter_count(timeout=10) == 0


def test_a_key_nobody_subscribes_is_dead_lettered_after_the_window(backend: Backend) -> None:
    exchange, service = backend.names.exchange(), backend.names.service()  # type: ignore[attr-defined]
    old = backend.app(schemas=ALL, model_exchange=exchange, service_name=service)

    @old.subscribe("Room.*")
    def on_room(event: RoomCleaned) -> None: ...

    old.declare()  # a subscription later removed: its binding stays until pruned
    app = backend.app(schemas=ALL, model_exchange=exchange, service_name=service, unknown_key_window=1.5)

    @app.subscribe("Booking.*")
    def on_booking(event: BookingCreated | BookingUpdated) -> None: ...

    app.declare()
    app.publish_model_event(ROOM, "cleaned", {"number": 3})
    first = app.drain(timeout=10)
    assert first.deferred == 1 and first.dead_lettered == 0, first
    deadline = time.monotonic() + 20
    letters = []
    while not letters and time.monotonic() < deadline:
        result = app.drain(timeout=5)
        assert result.handled == 0
        letters = app.list_dead_letters(timeout=10)
        if not letters:
            time.sleep(0.1)
    assert len(letters) == 1, "dead-lettered once the window passed"
    letter = letters[0]
    assert letter.reason == "unknown_event" and letter.routing_key == "Room.cleaned"
    assert "unknown_key_window=1.5s" in (letter.error or "")
    assert letter.attempts == 1, "deferrals are not handler attempts"
