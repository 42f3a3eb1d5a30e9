"""The Django app: settings-driven ``init()``, ``subscribers`` discovery, model events, outbox, inbox."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.utils.module_loading import autodiscover_modules, import_string

import pubsubpy
from pubsubpy.errors import ConfigurationError
from pubsubpy.settings import Settings, close_option

# PUBSUBPY keys that configure the Django side, not PubSub itself.
_OWN_KEYS = {"model_events", "subscribers_module", "outbox", "outbox_database", "outbox_retention",
             "outbox_send_on_commit", "inbox_retention", "middleware"}


def own_settings() -> dict[str, Any]:
    """``settings.PUBSUBPY`` with lower-case keys."""
    configured = getattr(settings, "PUBSUBPY", None)
    if configured is None:
        raise ConfigurationError("pubsubpy.contrib.django is installed but settings.PUBSUBPY is missing")
    if not isinstance(configured, dict):
        raise ConfigurationError(f"settings.PUBSUBPY must be a dict, got {type(configured).__name__}")
    return {key.lower(): value for key, value in configured.items()}


# init() keyword arguments a PUBSUBPY key may give besides the Settings fields (inbox and middleware: ready()).
_INIT_KEYS = {"schemas", "transport", "publishes"}


def init_options(configured: dict[str, Any]) -> dict[str, Any]:
    """``PUBSUBPY`` keys, any case, as ``init()`` keyword arguments.

    Raises:
        ConfigurationError: a key that is no setting, in the spelling written, with the one it probably
            misspells (``PUBSUBPY['SERVCE_NAME']``: did you mean 'SERVICE_NAME'?).
    """
    known = [*Settings.model_fields, *sorted(_OWN_KEYS), *sorted(_INIT_KEYS)]
    for key in configured:
        if not isinstance(key, str) or key.lower() not in known:
            guess = close_option(str(key), known)
            if guess is not None and isinstance(key, str) and not key.islower():
                guess = guess.upper()  # in the spelling the project writes its settings
            hint = f"; did you mean {guess!r}?" if guess else " (the Settings reference lists every option)"
            raise ConfigurationError(f"PUBSUBPY[{key!r}] is not a pubsubpy setting{hint}")
    return {key.lower(): value for key, value in configured.items() if key.lower() not in _OWN_KEYS}


def duration(key: str, default: dt.timedelta) -> dt.timedelta:
    """A retention setting: seconds (int or float) or a ``timedelta``."""
    value = own_settings().get(key, default)
    if isinstance(value, dt.timedelta):
        return value
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value >= 0:
        return dt.timedelta(seconds=value)
    raise ConfigurationError(f"PUBSUBPY['{key.upper()}'] must be seconds (a number >= 0) or a timedelta, "
                             f"got {value!r}")


def middleware(configured: dict[str, Any]) -> list[Any]:
    """``PUBSUBPY["MIDDLEWARE"]``: dotted paths of ``pubsubpy.Middleware`` classes (made with no arguments)
    or instances, as Django's own ``MIDDLEWARE`` names classes."""
    items = configured.get("middleware", [])
    if isinstance(items, str) or not isinstance(items, (list, tuple)):
        raise ConfigurationError(f"PUBSUBPY['MIDDLEWARE'] must be a list of dotted paths, got {items!r}")
    made = []
    for item in items:
        if isinstance(item, str):
            try:
                item = import_string(item)
            except ImportError as exc:
                raise ConfigurationError(f"PUBSUBPY['MIDDLEWARE']: cannot import {item!r}: {exc}") from None
        made.append(item() if isinstance(item, type) else item)
    return made


def outbox_database() -> str:
    return str(own_settings().get("outbox_database", "default"))


class PubSubConfig(AppConfig):
    name = "pubsubpy.contrib.django"
    label = "pubsubpy"
    verbose_name = "pubsubpy"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        configured = getattr(settings, "PUBSUBPY", None)
        lowered = own_settings()
        from pubsubpy.contrib.django.inbox import DjangoInbox

        default = pubsubpy.get_default()
        inbox = DjangoInbox(retention=duration("inbox_retention", dt.timedelta(days=30)))
        if not default.configured:
            assert configured is not None
            pubsubpy.init(inbox=inbox, middleware=middleware(lowered), **init_options(configured))
        elif default.inbox is None:
            default.use_inbox(inbox)
        if lowered.get("outbox"):
            from pubsubpy.contrib.django.outbox import DjangoOutbox
            from pubsubpy.contrib.django.relay import BackgroundRelay, Relay

            after_commit = None
            if lowered.get("outbox_send_on_commit"):
                after_commit = BackgroundRelay(Relay(default, outbox_database(),
                                                     retention=duration("outbox_retention", dt.timedelta(days=1)))).poke
            default.use_outbox(DjangoOutbox(outbox_database(), after_commit))
        autodiscover_modules(lowered.get("subscribers_module", "subscribers"))
        from pubsubpy.contrib.django.model_events import connect_from_settings, published_schemas

        connect_from_settings(lowered.get("model_events", {}))
        published = published_schemas(default)
        if published is not None and default.publishes is None:  # `manage.py pubsub topology`, schema export
            default.publishes = published
