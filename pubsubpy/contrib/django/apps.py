"""The Django app: settings-driven ``init()``, ``subscribers`` discovery, model events."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig
from django.conf import settings
from django.utils.module_loading import autodiscover_modules

import pubsubpy
from pubsubpy.errors import ConfigurationError

_OWN_KEYS = {"model_events", "subscribers_module"}


def init_options(configured: dict[str, Any]) -> dict[str, Any]:
    """``PUBSUBPY`` keys, any case, as ``init()`` keyword arguments."""
    return {key.lower(): value for key, value in configured.items() if key.lower() not in _OWN_KEYS}


class PubSubConfig(AppConfig):
    name = "pubsubpy.contrib.django"
    label = "pubsubpy"
    verbose_name = "pubsubpy"

    def ready(self) -> None:
        configured = getattr(settings, "PUBSUBPY", None)
        if configured is None:
            raise ConfigurationError("pubsubpy.contrib.django is installed but settings.PUBSUBPY is missing")
        if not isinstance(configured, dict):
            raise ConfigurationError(f"settings.PUBSUBPY must be a dict, got {type(configured).__name__}")
        lowered = {key.lower(): value for key, value in configured.items()}
        if not pubsubpy.get_default().configured:
            pubsubpy.init(**init_options(configured))
        autodiscover_modules(lowered.get("subscribers_module", "subscribers"))
        from pubsubpy.contrib.django.model_events import connect_from_settings

        connect_from_settings(lowered.get("model_events", {}))
