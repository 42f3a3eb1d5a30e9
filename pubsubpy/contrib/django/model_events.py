"""Model changes published as events, after the transaction commits.

``publish_changes(Booking, "created", "updated", "deleted")`` (or the
``MODEL_EVENTS`` setting) connects ``post_save`` / ``post_delete``. For each
change the payload is built right away from the instance through the schema
registered for (``"<module>.<Model>"``, event), with pydantic's
``from_attributes``, so a payload the schema rejects fails the ``save()`` itself.
It is published from ``transaction.on_commit``: a rolled-back transaction
publishes nothing, a committed one publishes once (at least once: a publish
retried after a lost connection may store a duplicate, with the same message_id).

What does not publish: ``QuerySet.update()``, ``bulk_create()``,
``bulk_update()`` and raw SQL send no model signals, so they publish nothing.
``QuerySet.delete()`` does send ``post_delete`` per object, so it publishes one
``deleted`` per row.

With ``PUBSUBPY["OUTBOX"] = True`` the event is instead written to the outbox
table inside the save's transaction (``outbox.py``) and sent by the relay after
the commit: a broker that is down or slow never fails or delays the save.
Without it, the event is published from ``on_commit``, and a broker that is
unreachable then makes the commit hook raise after the row was saved.

Ordering: a model event's ordering key (``pubsubpy-key``) is
``<model path>:<primary key>``, unless its schema names a ``key=`` field. With
the outbox, each event of the instance is stamped with the next
``pubsubpy-sequence`` of that key in the save's transaction. For ``updated``
and ``deleted`` the save's own UPDATE or DELETE already holds the instance's
row lock until the commit (PostgreSQL, MariaDB): a second transaction changing
the same instance waits, then builds its payload from its own write, so
payload order, sequence order and commit order agree. The outbox's counter
lock serialises the sequences in any case.
"""

from __future__ import annotations

import functools
from typing import Any

from django.apps import apps
from django.db import models, transaction
from django.db.models.signals import post_delete, post_save

import pubsubpy
from pubsubpy.errors import ConfigurationError, PayloadValidationError
from pubsubpy.schemas import ModelEvent

__all__ = ["model_path", "publish_changes", "published_schemas"]

EVENTS = ("created", "updated", "deleted")


def model_path(model: type[models.Model]) -> str:
    """``bookings.models.Booking``: the ``model=`` a schema for this Django model declares."""
    return f"{model.__module__}.{model.__qualname__}"


def _schema(model: type[models.Model], event: str) -> type[ModelEvent]:
    path = model_path(model)
    schema = pubsubpy.get_default().registry.get(path, event)
    if schema is None:
        raise ConfigurationError(
            f"{model.__name__} publishes {event!r}, but no schema is registered for it: define "
            f"`class {model.__name__}{event.title()}(ModelEvent, model={path!r}, event={event!r})` "
            "in a module that is imported at start-up (e.g. the app's events.py imported by models.py)"
        )
    return schema


def _publish_on_commit(model: type[models.Model], event: str, instance: models.Model, using: str) -> None:
    schema = _schema(model, event)
    try:
        payload = schema.model_validate(instance, from_attributes=True)
    except Exception as exc:  # pydantic's ValidationError, or an attribute that raises
        raise PayloadValidationError(f"{model.__name__} {event}: {exc}") from exc
    app = pubsubpy.get_default()
    key = instance.pk if schema.__pubsub_key__ is None else None  # the schema's key field wins
    publish = functools.partial(app.publish_model_event, model_path(model), event, payload, key=key)
    if app.outbox is not None:
        publish()  # OUTBOX: a row in this transaction (its aggregate: the ordering key), relayed after the commit
    else:
        transaction.on_commit(publish, using=using)


def publish_changes(model: type[models.Model], *events: str) -> None:
    """Publish ``events`` (any of created, updated, deleted) for every change of ``model``."""
    unknown = set(events) - set(EVENTS)
    if unknown or not events:
        raise ConfigurationError(f"{model.__name__}: events must be some of {EVENTS}, got {events!r}")
    for event in events:
        _schema(model, event)  # fail at start-up, not at the first save
    uid = f"pubsubpy:{model_path(model)}"

    if "created" in events or "updated" in events:
        def on_save(sender: type[models.Model], instance: models.Model, created: bool, using: str,
                    raw: bool = False, **_: Any) -> None:
            event = "created" if created else "updated"
            if not raw and event in events:  # raw: loaddata fixtures are not changes
                _publish_on_commit(sender, event, instance, using)

        post_save.connect(on_save, sender=model, weak=False, dispatch_uid=uid + ":save")

    if "deleted" in events:
        def on_delete(sender: type[models.Model], instance: models.Model, using: str, **_: Any) -> None:
            _publish_on_commit(sender, "deleted", instance, using)

        post_delete.connect(on_delete, sender=model, weak=False, dispatch_uid=uid + ":delete")


def connect_from_settings(declared: dict[str, list[str]]) -> None:
    """``{"app_label.Model": ["created", ...]}`` from ``PUBSUBPY["MODEL_EVENTS"]``."""
    for label, events in declared.items():
        try:
            model = apps.get_model(label)
        except (LookupError, ValueError) as exc:
            raise ConfigurationError(f"PUBSUBPY['MODEL_EVENTS']: {label!r} is not an installed model ({exc})") from None
        publish_changes(model, *events)


def published_schemas(app: pubsubpy.PubSub) -> list[type[ModelEvent]] | None:
    """The schemas ``PUBSUBPY["MODEL_EVENTS"]`` publishes; None (every registered one) without it."""
    from django.conf import settings

    configured = {k.lower(): v for k, v in getattr(settings, "PUBSUBPY", {}).items()}.get("model_events")
    if not configured:
        return None
    found = [app.registry.get(model_path(apps.get_model(label)), event)
             for label, events in configured.items() for event in events]
    return [schema for schema in found if schema is not None]
