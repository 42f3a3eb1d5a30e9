"""Issue 24: mistakes that used to pass silently (or surface late) are reported where they are made."""

from __future__ import annotations

import gc
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import pubsubpy
from pubsubpy import ModelEvent
from pubsubpy.testing import memory_pubsub


class Note(ModelEvent, model="notes.models.Note", event="written", register=False):
    text: str


# -- 1. unroutable publishes warn, with no logging configured -------------------------------------------------

def test_unroutable_publish_warns_at_the_callers_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pubsubpy")  # whatever an earlier test (Celery's worker) did to root
    app = memory_pubsub(schemas=[Note])  # nobody binds Note.written on this private broker
    with pytest.warns(pubsubpy.UnroutableWarning, match=r"reached no queue .*Note\.written") as record:
        app.publish_model_event("notes.models.Note", "written", {"text": "x"})
    ours = [w for w in record if issubclass(w.category, pubsubpy.UnroutableWarning)]
    assert len(ours) == 1, [str(w.message) for w in record]
    assert ours[0].filename == __file__, "the warning points at the user's publish call"
    assert issubclass(pubsubpy.UnroutableWarning, UserWarning)
    assert "UnroutableWarning" in pubsubpy.__all__
    assert "reached no queue" in caplog.text, "the log line stays"


def test_unroutable_publish_many_warns_too() -> None:
    app = memory_pubsub(schemas=[Note])
    with pytest.warns(pubsubpy.UnroutableWarning, match=r"2 message\(s\)") as record:
        app.publish_many([("notes.models.Note", "written", {"text": "a"}),
                          ("notes.models.Note", "written", {"text": "b"})])
    assert [w.filename for w in record if issubclass(w.category, pubsubpy.UnroutableWarning)] == [__file__]


def test_routed_raise_and_ignore_do_not_warn() -> None:
    routed = memory_pubsub(schemas=[Note])

    @routed.subscribe("Note.*")
    def on_note(event: Note) -> None: ...

    routed.declare()
    strict = memory_pubsub(schemas=[Note], on_unroutable="raise")
    quiet = memory_pubsub(schemas=[Note], on_unroutable="ignore")
    gc.collect()  # what earlier tests left to the collector is finalized now, not inside the strict block
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        routed.publish_model_event("notes.models.Note", "written", {"text": "x"})
        with pytest.raises(pubsubpy.UnroutableMessage):
            strict.publish_model_event("notes.models.Note", "written", {"text": "x"})
        quiet.publish_model_event("notes.models.Note", "written", {"text": "x"})


def test_a_warnings_filter_makes_it_an_error() -> None:
    app = memory_pubsub(schemas=[Note])
    with warnings.catch_warnings():
        warnings.simplefilter("error", pubsubpy.UnroutableWarning)
        with pytest.raises(pubsubpy.UnroutableWarning):
            app.publish_model_event("notes.models.Note", "written", {"text": "x"})


def test_shown_without_logging_and_fatal_under_pytest_minus_w(tmp_path: Path) -> None:
    script = ("from pubsubpy import ModelEvent, PubSub\n"
              "class Note(ModelEvent, model='notes.models.Note', event='written', register=False):\n"
              "    text: str\n"
              "def test_publish():\n"
              "    app = PubSub('memory://', schemas=[Note])\n"
              "    app.publish_model_event('notes.models.Note', 'written', {'text': 'x'})\n"
              "if __name__ == '__main__':\n"
              "    test_publish()\n")
    (tmp_path / "test_unroutable_user.py").write_text(script)
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PUBSUBPY_", "PYTEST_"))}
    plain = subprocess.run([sys.executable, "test_unroutable_user.py"], cwd=tmp_path, capture_output=True,
                           text=True, env=env, timeout=120)
    assert plain.returncode == 0, plain.stderr
    assert "test_unroutable_user.py:6: UnroutableWarning: 1 message(s) reached no queue" in plain.stderr, \
        "shown with no logging configured, at the publish line"
    strict = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W",
                             "error::pubsubpy.UnroutableWarning", "test_unroutable_user.py"],
                            cwd=tmp_path, capture_output=True, text=True, env=env, timeout=120)
    assert strict.returncode == 1, strict.stdout
    assert "UnroutableWarning" in strict.stdout


# -- 2. patterns: whitespace refused at @subscribe, a pattern matching no schema warned at drain -------------

class BookingCreated(ModelEvent, model="shop.models.Booking", event="created", register=False):
    id: int


class BookingUpdated(ModelEvent, model="shop.models.Booking", event="updated", register=False):
    id: int


@pytest.mark.parametrize(("pattern", "shown"), [
    ("Booking.created ", r"'Booking.created ' contains whitespace \(' ' at index 15\)"),
    ("Booking. created", r"'Booking. created' contains whitespace \(' ' at index 8\)"),
    ("Booking.\tcreated", r"'Booking.\\tcreated' contains whitespace \('\\t' at index 8\)"),
    (" #", r"' #' contains whitespace"),
])
def test_whitespace_in_a_pattern_is_refused_at_subscribe(pattern: str, shown: str) -> None:
    app = memory_pubsub(schemas=[BookingCreated])
    with pytest.raises(pubsubpy.InvalidTopic, match=shown):
        app.subscribe(pattern)
    assert not app.router.subscriptions


def test_whitespace_message_suggests_the_pattern_without_it() -> None:
    with pytest.raises(pubsubpy.InvalidTopic, match=r"did you mean 'Booking.created'\?"):
        pubsubpy.PubSub("memory://").subscribe("Booking. created")
    with pytest.raises(pubsubpy.InvalidTopic, match=r"remove it"):
        pubsubpy.PubSub("memory://").subscribe("Booking.was created")


def test_a_pattern_matching_no_schema_warns_once_at_drain(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pubsubpy")
    app = memory_pubsub(schemas=[BookingCreated, BookingUpdated])

    @app.subscribe("Bookings.*")
    def on_booking(event: ModelEvent) -> None: ...

    with pytest.warns(pubsubpy.UnmatchedPatternWarning) as caught:
        app.drain(timeout=5)
    # only ours: the block also records unrelated warnings (a socket of an earlier test collected here)
    record = [w for w in caught if issubclass(w.category, pubsubpy.UnmatchedPatternWarning)]
    assert len(record) == 1, [str(w.message) for w in caught]
    message = str(record[0].message)
    assert "@subscribe('Bookings.*')" in message and "on_booking" in message
    assert "nearest registered routing keys: 'Booking.created', 'Booking.updated' (did you mean 'Booking.*'?)" \
        in message
    assert record[0].filename == __file__, "points at the drain call"
    assert "matches the routing key of no registered schema" in caplog.text
    assert issubclass(pubsubpy.UnmatchedPatternWarning, UserWarning)

    @app.subscribe("Booking.*")
    def on_real(event: ModelEvent) -> None: ...

    gc.collect()  # what earlier tests left to the collector is finalized now, not inside the strict block
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        app.drain(timeout=5)  # re-resolved for the new subscription: the old pattern is not reported again


def test_matching_patterns_and_schemaless_dict_handlers_do_not_warn() -> None:
    app = memory_pubsub(schemas=[BookingCreated], require_schemas=False)

    @app.subscribe("Booking.*")
    def on_booking(event: BookingCreated) -> None: ...

    @app.subscribe("Invoice.*")
    def on_invoice(event: dict) -> None: ...  # type: ignore[type-arg]

    gc.collect()  # what earlier tests left to the collector is finalized now, not inside the strict block
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        app.drain(timeout=5)


def test_a_typed_handler_on_an_unmatched_pattern_warns_even_without_require_schemas() -> None:
    app = memory_pubsub(schemas=[BookingCreated], require_schemas=False)

    @app.subscribe("Invoice.*")
    def on_invoice(event: BookingCreated) -> None: ...  # a schema's handler never gets schema-less events

    with pytest.warns(pubsubpy.UnmatchedPatternWarning, match=r"registered routing keys: 'Booking.created'"):
        app.drain(timeout=5)


def test_a_worker_warns_at_start() -> None:
    import threading

    app = memory_pubsub(schemas=[BookingCreated])

    @app.subscribe("Bookings.*")
    def on_booking(event: ModelEvent) -> None: ...

    stop = threading.Event()
    stop.set()
    with pytest.warns(pubsubpy.UnmatchedPatternWarning, match=r"did you mean 'Booking\.\*'"):
        app.run(stop=stop)


# -- 3. handler signatures are checked at @subscribe -----------------------------------------------------------

def _decorator_line_raised(excinfo: pytest.ExceptionInfo[BaseException]) -> str:
    """The source line of this file the error was raised from."""
    mine = [entry for entry in excinfo.traceback if str(entry.path) == __file__]
    return str(mine[-1].statement).strip()


# Python 3.11+ attributes a decorator's call to the decorator's line; 3.10 to the ``def`` line under it
_DEFINITION = ("@app.subscribe(",) if sys.version_info >= (3, 11) else ("@app.subscribe(", "def on_")


def test_a_first_parameter_that_is_not_an_event_type_fails_at_the_decorator() -> None:
    app = memory_pubsub(schemas=[BookingCreated])
    with pytest.raises(pubsubpy.ConfigurationError) as excinfo:
        @app.subscribe("Booking.*")
        def on_count(event: int) -> None: ...
    message = str(excinfo.value)
    assert message == (f"handler {__name__}.test_a_first_parameter_that_is_not_an_event_type_fails_at_the_decorator"
                       ".<locals>.on_count: its first parameter 'event' is annotated int, which cannot receive an "
                       "event; annotate it with a ModelEvent subclass, a union of them, ModelEvent, or dict")
    assert _decorator_line_raised(excinfo).startswith(_DEFINITION), "the traceback points at the decorator"
    assert not app.router.subscriptions


def test_a_union_with_a_non_event_member_names_it() -> None:
    app = memory_pubsub(schemas=[BookingCreated])
    with pytest.raises(pubsubpy.ConfigurationError, match=r"is annotated .*BookingCreated \| str \(str is not one\)"):
        @app.subscribe("Booking.*")
        def on_either(event: BookingCreated | str) -> None: ...


def test_a_second_parameter_annotated_other_than_message_info_fails_at_the_decorator() -> None:
    app = memory_pubsub(schemas=[BookingCreated])
    with pytest.raises(pubsubpy.ConfigurationError) as excinfo:
        @app.subscribe("Booking.*")
        def on_booking(event: BookingCreated, extra: dict) -> None: ...  # type: ignore[type-arg]
    assert str(excinfo.value).endswith(
        "on_booking: its second parameter 'extra' is annotated dict, but the second parameter receives the "
        "message's MessageInfo; annotate it `extra: MessageInfo` (from pubsubpy import MessageInfo) or leave it "
        "unannotated")
    assert _decorator_line_raised(excinfo).startswith(_DEFINITION)


def test_accepted_signatures_still_register() -> None:
    app = memory_pubsub(schemas=[BookingCreated, BookingUpdated])
    got: list[object] = []

    @app.subscribe("Booking.created")
    def typed(event: BookingCreated, info: pubsubpy.MessageInfo) -> None:
        got.append(info.message_id)

    @app.subscribe("Booking.*")
    def union(event: BookingCreated | BookingUpdated, info) -> None:  # type: ignore[no-untyped-def]
        got.append(type(info).__name__)

    @app.subscribe("Booking.#")
    def everything(event: ModelEvent, info: pubsubpy.MessageInfo | None = None) -> None:
        got.append(info is not None)

    @app.subscribe("Booking.updated")
    def raw(event: dict[str, object], retries: int = 3) -> None:  # optional, not MessageInfo: never passed
        got.append(retries)

    app.declare()
    app.publish_model_event("shop.models.Booking", "created", {"id": 1})
    app.publish_model_event("shop.models.Booking", "updated", {"id": 2})
    assert app.drain(timeout=5).handled == 2
    assert len(got) == 6 and 3 in got and "MessageInfo" in got and True in got


def test_a_forward_reference_not_importable_yet_is_checked_at_drain() -> None:
    namespace: dict[str, object] = {"__name__": "lazy_handlers"}
    exec("from __future__ import annotations\n"
         "def on_later(event: Later) -> None: ...\n"
         "def on_bad(event: LaterBad) -> None: ...\n", namespace)
    app = memory_pubsub(schemas=[BookingCreated])
    app.subscribe("Booking.*")(namespace["on_later"])  # type: ignore[arg-type]  # Later does not exist yet: fine
    namespace["Later"] = BookingCreated
    app.declare()
    app.publish_model_event("shop.models.Booking", "created", {"id": 1})
    assert app.drain(timeout=5).handled == 1

    other = memory_pubsub(schemas=[BookingCreated])
    other.subscribe("Booking.*")(namespace["on_bad"])  # type: ignore[arg-type]
    namespace["LaterBad"] = int
    with pytest.raises(pubsubpy.ConfigurationError, match=r"on_bad: its first parameter 'event' is annotated int"):
        other.drain(timeout=5)


def test_subscribing_before_init_still_works_and_drain_still_checks_conflicts() -> None:
    from pubsubpy.testing import reset

    reset(subscriptions=True)
    try:
        @pubsubpy.subscribe("Booking.*")
        def only_created(event: BookingCreated) -> None: ...

        pubsubpy.init("memory://", service_name="lazy", schemas=[BookingCreated, BookingUpdated])
        with pytest.raises(pubsubpy.ConfigurationError, match=r"only_created subscribes to 'Booking.\*', which "
                                                              r"matches 'Booking.updated'"):
            pubsubpy.drain(timeout=5)
    finally:
        reset(subscriptions=True)


# -- 4. "did you mean" for settings, Django keys, model paths and event names -------------------------------

@pytest.mark.parametrize(("options", "expected"), [
    ({"servce_name": "billing"}, "servce_name: unknown option (did you mean 'service_name'?)"),
    ({"max_attempt": 3}, "max_attempt: unknown option (did you mean 'max_attempts'?)"),
    ({"schema": []}, "schema: unknown option (did you mean 'schemas'?)"),
    ({"colour": "red"}, "colour: unknown option (the Settings reference lists every option)"),
])
def test_an_unknown_setting_suggests_the_one_meant(options: dict[str, object], expected: str) -> None:
    with pytest.raises(pubsubpy.ConfigurationError) as excinfo:
        pubsubpy.PubSub("memory://", **options)  # type: ignore[arg-type]
    assert str(excinfo.value) == f"invalid pubsubpy settings: {expected}"


def test_init_suggests_too_and_never_echoes_a_misspelt_url() -> None:
    from pubsubpy.testing import reset

    reset(subscriptions=True)
    try:
        with pytest.raises(pubsubpy.ConfigurationError, match=r"did you mean 'service_name'\?"):
            pubsubpy.init("memory://", servce_name="billing")  # type: ignore[call-arg]
        with pytest.raises(pubsubpy.ConfigurationError, match=r"amqp_ur: unknown option \(did you mean 'amqp_url'") \
                as excinfo:
            pubsubpy.PubSub("memory://", amqp_ur="amqp://u:hunter2@host/")  # type: ignore[call-arg]
        assert "hunter2" not in str(excinfo.value)
    finally:
        reset(subscriptions=True)


@pytest.mark.parametrize(("key", "expected"), [
    ("SERVCE_NAME", "PUBSUBPY['SERVCE_NAME'] is not a pubsubpy setting; did you mean 'SERVICE_NAME'?"),
    ("servce_name", "PUBSUBPY['servce_name'] is not a pubsubpy setting; did you mean 'service_name'?"),
    ("MODEL_EVENT", "PUBSUBPY['MODEL_EVENT'] is not a pubsubpy setting; did you mean 'MODEL_EVENTS'?"),
    ("OUTBOX_DATABSE", "PUBSUBPY['OUTBOX_DATABSE'] is not a pubsubpy setting; did you mean 'OUTBOX_DATABASE'?"),
])
def test_django_settings_keys_are_reported_as_written(key: str, expected: str) -> None:
    from pubsubpy.contrib.django.apps import init_options

    with pytest.raises(pubsubpy.ConfigurationError) as excinfo:
        init_options({"AMQP_URL": "memory://", key: "x"})
    assert str(excinfo.value) == expected
    assert init_options({"AMQP_URL": "memory://", "SERVICE_NAME": "shop", "OUTBOX": True, "MODEL_EVENTS": {}}) \
        == {"amqp_url": "memory://", "service_name": "shop"}


class RoomCleaned(ModelEvent, model="shop.models.Room", event="cleaned", register=False):
    number: int


def test_an_unknown_model_path_suggests_the_registered_one() -> None:
    app = memory_pubsub(schemas=[BookingCreated, BookingUpdated, RoomCleaned])
    with pytest.raises(pubsubpy.UnknownEventType) as excinfo:
        app.publish_model_event("shop.Booking", "created", {"id": 1})
    assert str(excinfo.value) == (
        "no schema is registered for model 'shop.Booking' event 'created' (did you mean 'shop.models.Booking'? "
        "A model is named by its full path, module included); define `class X(ModelEvent, model='shop.Booking', "
        "event='created')` or init(require_schemas=False)")
    with pytest.raises(pubsubpy.UnknownEventType, match=r"\(did you mean 'shop.models.Room'\?\)"):
        app.publish_model_event("shop.models.Rooms", "cleaned", {"number": 1})
    with pytest.raises(pubsubpy.UnknownEventType, match=r"event 'created'; define"):
        app.publish_model_event("billing.models.Invoice", "created", {"id": 1})  # nothing near: no guess


def test_an_unknown_event_of_a_known_model_lists_its_events() -> None:
    app = memory_pubsub(schemas=[BookingCreated, BookingUpdated, RoomCleaned])
    with pytest.raises(pubsubpy.UnknownEventType, match=r"event 'craeted' \(did you mean 'created'\? "
                                                        r"'shop.models.Booking' has the events 'created', 'updated'\)"):
        app.publish_model_event("shop.models.Booking", "craeted", {"id": 1})
    with pytest.raises(pubsubpy.UnknownEventType, match=r"event 'paid' \('shop.models.Booking' has the events "
                                                        r"'created', 'updated'\)"):
        app.publish_many([("shop.models.Booking", "paid", {"id": 1})])
