"""The module-level functions and ``PubSub`` cannot drift: every public method has its function,
with the same signature, and calling the function calls the default instance's method."""

from __future__ import annotations

import inspect
import typing

import pytest

import pubsubpy
from pubsubpy import PubSub
from pubsubpy.settings import Settings, SettingsOptions
from pubsubpy.testing import reset

# Public names of PubSub that deliberately have no module-level function, and why.
EXCLUDED = {
    "configure": "init() is the facade's configure(), returning the instance",
    "unconfigured": "a constructor for the default instance itself",
    "topology": "would shadow the submodule pubsubpy.topology; use get_default().topology()",
    "settings": "a property", "configured": "a property", "registry": "a property", "router": "a property",
    "transport": "a property", "middleware": "a property", "outbox": "a property",
}


def _public_methods() -> list[str]:
    return sorted(name for name in dir(PubSub) if not name.startswith("_") and name not in EXCLUDED)


def _shape(function: typing.Callable[..., object], drop_self: bool) -> list[tuple[str, object, object, str]]:
    params = list(inspect.signature(function).parameters.values())[1 if drop_self else 0:]
    return [(p.name, p.kind, p.default, str(p.annotation)) for p in params]


def test_every_public_method_has_a_function_with_the_same_signature() -> None:
    names = _public_methods()
    assert {"declare", "stale_bindings", "drain", "run", "close", "dead_letter_count"} <= set(names)
    for name in names:
        function = getattr(pubsubpy, name, None)
        assert function is not None and name in pubsubpy.__all__, f"pubsubpy.{name} is missing"
        assert _shape(function, False) == _shape(getattr(PubSub, name), True), f"pubsubpy.{name} drifted"
        method_return = inspect.signature(getattr(PubSub, name)).return_annotation
        assert inspect.signature(function).return_annotation == method_return, f"pubsubpy.{name} returns"


def test_init_takes_what_pubsub_takes() -> None:
    assert _shape(pubsubpy.init, False) == _shape(PubSub.__init__, True) == _shape(PubSub.configure, True)
    assert inspect.signature(pubsubpy.init).return_annotation == "PubSub"


def test_settings_options_type_every_setting() -> None:
    hints = typing.get_type_hints(SettingsOptions)
    fields = {name: f.annotation for name, f in Settings.model_fields.items() if name != "amqp_url"}
    assert set(hints) == set(fields), "SettingsOptions and Settings list different options"
    for name, annotation in fields.items():
        assert hints[name] == annotation, f"{name}: {hints[name]} != {annotation}"


def test_facade_functions_act_on_the_default_instance() -> None:
    reset(subscriptions=True)
    try:
        pubsubpy.init("memory://", service_name="facade", require_schemas=False)
        got: list[int] = []

        @pubsubpy.subscribe("Thing.*")
        def on_thing(event: dict[str, int]) -> None:
            got.append(event["n"])

        assert pubsubpy.declare().queue.name == "facade.events"
        assert pubsubpy.stale_bindings() == []
        pubsubpy.publish_model_event("x.Thing", "made", {"n": 1})
        pubsubpy.publish_many([("x.Thing", "made", {"n": 2})])
        assert pubsubpy.drain(timeout=5).handled == 2 and got == [1, 2]
        assert pubsubpy.dead_letter_count() == 0 and pubsubpy.list_dead_letters() == []
        pubsubpy.close()
    finally:
        reset(subscriptions=True)


def test_an_event_name_is_one_word() -> None:
    app = PubSub("memory://", service_name="words", require_schemas=False)
    with pytest.raises(pubsubpy.InvalidTopic, match="one word"):
        app.publish_model_event("shop.Booking", "up.dated", {"id": 1})
    with pytest.raises(pubsubpy.InvalidTopic, match="one word"):
        app.publish_many([("shop.Booking", "", {"id": 1})])


# PubSub methods whose AsyncPubSub counterpart differs on purpose.
ASYNC_DIFFERS = {"configure": "AsyncPubSub(...) takes the same arguments; AsyncPubSub.of(app) wraps a PubSub",
                 "unconfigured": "the facade's own", "close": "aclose()",
                 "run": "stop may be an asyncio.Event too"}
ASYNC_PLAIN = {"subscribe", "topology"}  # no I/O: plain methods on both


def test_async_pubsub_has_every_method_of_pubsub_with_the_same_signature() -> None:
    from pubsubpy.aio import AsyncPubSub

    methods = [name for name in dir(PubSub) if not name.startswith("_") and name not in ASYNC_DIFFERS
               and callable(getattr(PubSub, name))]
    assert {"publish_model_event", "publish_many", "drain", "declare", "list_dead_letters"} <= set(methods)
    for name in methods:
        method = getattr(AsyncPubSub, name, None)
        assert method is not None, f"AsyncPubSub.{name} is missing"
        assert _shape(method, True) == _shape(getattr(PubSub, name), True), f"AsyncPubSub.{name} differs"
        assert inspect.iscoroutinefunction(method) == (name not in ASYNC_PLAIN), name
    assert inspect.iscoroutinefunction(AsyncPubSub.aclose) and inspect.iscoroutinefunction(AsyncPubSub.run)
    assert _shape(AsyncPubSub.__init__, True) == _shape(PubSub.__init__, True)
