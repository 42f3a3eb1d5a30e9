"""The facade's hand-written parts: ``init()`` and ``AsyncPubSub``'s own methods take what ``PubSub``
takes, and the module functions act on the default instance (the generated rest cannot drift:
tests/test_generated_api.py)."""

from __future__ import annotations

import inspect
import typing

import pytest

import pubsubpy
from pubsubpy import PubSub
from pubsubpy.settings import Settings, SettingsOptions
from pubsubpy.testing import reset


def _shape(function: typing.Callable[..., object], drop_self: bool) -> list[tuple[str, object, object, str]]:
    params = list(inspect.signature(function).parameters.values())[1 if drop_self else 0:]
    return [(p.name, p.kind, p.default, str(p.annotation)) for p in params]


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


def test_the_hand_written_async_methods_take_what_pubsub_takes() -> None:
    """The generated wrappers cannot drift (tests/test_generated_api.py); these are written by hand."""
    from pubsubpy.aio import AsyncPubSub

    for name in ("publish_model_event", "publish_many", "drain"):
        method = getattr(AsyncPubSub, name)
        assert _shape(method, True) == _shape(getattr(PubSub, name), True), f"AsyncPubSub.{name} differs"
        assert inspect.iscoroutinefunction(method), name
    assert inspect.iscoroutinefunction(AsyncPubSub.aclose) and inspect.iscoroutinefunction(AsyncPubSub.run)
    assert _shape(AsyncPubSub.__init__, True) == _shape(PubSub.__init__, True)
