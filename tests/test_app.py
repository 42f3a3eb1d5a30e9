"""The facade, settings, error tree and the public surface."""

from __future__ import annotations

import inspect
import typing
from collections.abc import Iterator

import pytest

import pubsubpy
from pubsubpy import ConfigurationError, InvalidTopic, ModelEvent, PubSub, errors
from pubsubpy.settings import Settings
from pubsubpy.testing import memory_pubsub, reset


class Note(ModelEvent, model="notes.models.Note", event="written", register=False):
    text: str


@pytest.fixture
def fresh_default() -> Iterator[None]:
    reset(subscriptions=True)
    yield
    reset(subscriptions=True)


def test_public_names_are_stable() -> None:
    for name in ["init", "subscribe", "publish_model_event", "drain", "list_dead_letters", "replay_dead_letters",
                 "purge_dead_letters", "PubSub", "ModelEvent", "DrainResult", "DeadLetter", "MessageInfo"]:
        assert name in pubsubpy.__all__, name
    assert sorted(pubsubpy.__all__) == pubsubpy.__all__
    for name in pubsubpy.__all__:
        assert hasattr(pubsubpy, name), name
    from pubsubpy.topics import TopicTrie, topic_matches

    assert topic_matches("a.#", "a") and TopicTrie.match.__name__ == "match"


def test_error_tree_is_rooted_and_drawn_in_the_docstring() -> None:
    classes = [c for _, c in inspect.getmembers(errors, inspect.isclass) if c.__module__ == errors.__name__]
    assert len(classes) >= 10
    for cls in classes:
        assert issubclass(cls, errors.PubSubError), cls
        assert cls.__name__ in (errors.__doc__ or ""), f"{cls.__name__} missing from the drawn tree"
        assert cls.__name__ not in dir(__builtins__), f"{cls.__name__} shadows a builtin"
    assert issubclass(InvalidTopic, ValueError)


def test_subscribe_before_init_then_init_once(fresh_default: None) -> None:
    got: list[str] = []

    @pubsubpy.subscribe("Note.*")
    def on_note(event: Note) -> None:
        got.append(event.text)

    pubsubpy.init("memory://", service_name="notes", schemas=[Note])
    with pytest.raises(ConfigurationError, match=r"already initialised \(first call at .*test_app.py:\d+"):
        pubsubpy.init("memory://", service_name="again")
    pubsubpy.publish_model_event("notes.models.Note", "written", {"text": "hi"})
    assert pubsubpy.drain().handled == 1
    assert got == ["hi"]


def test_using_the_default_before_init_says_what_to_do(fresh_default: None) -> None:
    with pytest.raises(ConfigurationError, match="init"):
        pubsubpy.publish_model_event("notes.models.Note", "written", {"text": "hi"})


def test_init_never_connects() -> None:
    app = PubSub("amqp://nobody:secret@127.0.0.1:1/%2F", service_name="x")  # nothing listens on port 1
    assert app.settings.service_name == "x"
    app.close()


def test_credentials_never_show(caplog: pytest.LogCaptureFixture) -> None:
    app = PubSub("amqp://user:hunter2@127.0.0.1:1/%2F", service_name="x", connection_attempts=1, connect_timeout=1)
    assert "hunter2" not in repr(app) and "hunter2" not in repr(app.settings)

    @app.subscribe("Note.*")
    def on_note(event: Note) -> None: ...

    with pytest.raises(pubsubpy.BrokerUnavailable) as excinfo:
        app.drain(timeout=2)
    assert "hunter2" not in str(excinfo.value)
    assert "hunter2" not in caplog.text
    with pytest.raises(ConfigurationError) as bad:
        Settings.build(amqp_url="http://user:hunter2@host/")
    assert "hunter2" not in str(bad.value) and "amqp://" in str(bad.value)


@pytest.mark.parametrize(
    ("options", "names"),
    [({"max_attempts": 0}, "max_attempts"), ({"queue_type": "mirrored"}, "queue_type"),
     ({"service_name": "has space"}, "service_name"), ({"prefetch": -1}, "prefetch"),
     ({"on_unroutable": "explode"}, "on_unroutable"), ({"colour": "red"}, "colour")],
)
def test_bad_settings_name_the_field_and_value(options: dict[str, object], names: str) -> None:
    with pytest.raises(ConfigurationError, match=names):
        Settings.build(**options)


def test_decorator_errors_are_immediate_and_clear() -> None:
    app = memory_pubsub()
    with pytest.raises(InvalidTopic, match="partial wildcard"):
        app.subscribe("Note*")
    with pytest.raises(ConfigurationError, match="takes"):
        app.subscribe("Note.*")(lambda a, b, c: None)


def test_async_generators_are_refused_as_handlers_and_async_handlers_at_a_sync_drain() -> None:
    app = memory_pubsub(schemas=[Note], service_name="notes")

    async def stream(event: Note) -> typing.AsyncIterator[None]:
        yield None

    with pytest.raises(ConfigurationError, match="async generator"):
        app.subscribe("Note.*")(stream)

    async def on_note(event: Note) -> None: ...

    app.subscribe("Note.*")(on_note)  # shared with AsyncPubSub: refused when a sync drain starts, never acked unrun
    with pytest.raises(ConfigurationError, match="AsyncPubSub"):
        app.drain(timeout=1)


def test_handler_without_annotation_is_reported_at_drain() -> None:
    app = memory_pubsub(schemas=[Note])

    @app.subscribe("Note.*")
    def untyped(event):  # type: ignore[no-untyped-def]
        pass

    with pytest.raises(ConfigurationError, match="annotate"):
        app.drain()


def test_decorated_function_is_returned_unchanged() -> None:
    app = memory_pubsub(schemas=[Note])

    def handler(event: Note) -> None: ...

    assert app.subscribe("Note.*")(handler) is handler


def test_two_instances_coexist_with_separate_state() -> None:
    a = memory_pubsub(schemas=[Note], service_name="a")
    b = memory_pubsub(schemas=[Note], service_name="b")
    got: list[str] = []

    @a.subscribe("Note.*")
    def on_a(event: Note) -> None:
        got.append("a")

    @b.subscribe("Note.*")
    def on_b(event: Note) -> None:
        got.append("b")

    a.publish_model_event("notes.models.Note", "written", {"text": "x"})
    assert a.drain().handled == 1, "the first publish declares the publisher's own queue"
    assert b.drain().handled == 0, "b's broker is another one: nothing crosses"
    assert got == ["a"]


def test_unroutable_policy(caplog: pytest.LogCaptureFixture) -> None:
    warn = memory_pubsub(schemas=[Note])
    warn.publish_model_event("notes.models.Note", "written", {"text": "x"})
    assert "reached no queue" in caplog.text
    strict = memory_pubsub(schemas=[Note], on_unroutable="raise")
    with pytest.raises(pubsubpy.UnroutableMessage) as excinfo:
        strict.publish_model_event("notes.models.Note", "written", {"text": "x"})
    assert len(excinfo.value.message_ids) == 1


def test_publish_from_attributes_and_size_cap() -> None:
    class Row:
        text = "from an object"
        unrelated = object()

    app = memory_pubsub(schemas=[Note], max_message_size=64)
    got: list[str] = []

    @app.subscribe("Note.*")
    def on_note(event: Note) -> None:
        got.append(event.text)

    app.declare()
    app.publish_model_event("notes.models.Note", "written", Row())
    with pytest.raises(pubsubpy.MessageTooLarge, match="64"):
        app.publish_model_event("notes.models.Note", "written", {"text": "x" * 100})
    assert app.drain().handled == 1 and got == ["from an object"]
