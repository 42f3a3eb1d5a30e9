"""``SchemaRegistry``: which schema a (model, event, version) or a routing key means.

Several versions of one (model, event) live side by side and share its routing
key. Two schemas for one (model, event, version), or two different
(model, event) pairs whose routing keys collide (``a.models.Booking`` and
``b.models.Booking`` both give ``Booking.updated``), are a
``ConfigurationError`` naming both classes: never a silent overwrite.
Re-defining the same class (same module and qualified name, as a reload does)
replaces it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from pubsubpy.errors import ConfigurationError

if TYPE_CHECKING:  # a schema registers itself here when its class is made: base imports this module
    from pubsubpy.schemas._base import ModelEvent

__all__ = ["SchemaRegistry", "default_catalog"]


def _name(cls: type[ModelEvent]) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class SchemaRegistry:
    def __init__(self, schemas: Iterable[type[ModelEvent]] = ()) -> None:
        self._by_key: dict[tuple[str, str], dict[int, type[ModelEvent]]] = {}
        self._by_routing_key: dict[str, dict[int, type[ModelEvent]]] = {}
        self._lock = threading.Lock()
        self.generation = 0  # bumped on every change: lets lookups cached elsewhere notice
        for schema in schemas:
            self.register(schema)

    def register(self, schema: type[ModelEvent]) -> type[ModelEvent]:
        key = schema.event_key()
        routing_key = schema.routing_key()
        version = schema.__pubsub_version__
        with self._lock:
            others = self._by_routing_key.get(routing_key, {})
            for existing in others.values():
                if existing.event_key() != key and _name(existing) != _name(schema):
                    raise ConfigurationError(
                        f"schemas {_name(existing)} and {_name(schema)} both claim routing key {routing_key!r}; "
                        "rename the event or the model, or pass register=False to one of them"
                    )
            for existing in list(self._all()):
                if existing is schema or _name(existing) != _name(schema):
                    continue
                self._forget(existing)  # the same class defined again (a reload)
            self._check_ordering_key(schema)
            same = self._by_key.get(key, {}).get(version)
            if same is not None and same is not schema:
                raise ConfigurationError(
                    f"schemas {_name(same)} and {_name(schema)} both claim event {key[0]}:{key[1]} version "
                    f"{version}; give the newer one version={version + 1}, or pass register=False to one of them"
                )
            self._by_key.setdefault(key, {})[version] = schema
            self._by_routing_key.setdefault(routing_key, {})[version] = schema
            self.generation += 1
        return schema

    def _check_ordering_key(self, schema: type[ModelEvent]) -> None:
        """Every event and version of one model names the same ``key=`` field: one model, one kind of key."""
        model = schema.event_key()[0]
        for existing in self._all():
            if existing.event_key()[0] == model and _name(existing) != _name(schema) \
                    and existing.__pubsub_key__ != schema.__pubsub_key__:
                raise ConfigurationError(
                    f"schemas {_name(existing)} (key={existing.__pubsub_key__!r}) and {_name(schema)} "
                    f"(key={schema.__pubsub_key__!r}) are events of {model}: every event and version of a model "
                    "names the same key= field")

    def _all(self) -> Iterator[type[ModelEvent]]:
        for versions in self._by_key.values():
            yield from versions.values()

    def _forget(self, schema: type[ModelEvent]) -> None:
        version = schema.__pubsub_version__
        by_key = self._by_key.get(schema.event_key(), {})
        by_routing_key = self._by_routing_key.get(schema.routing_key(), {})
        for versions in (by_key, by_routing_key):
            if versions.get(version) is schema:
                del versions[version]
        if not by_key:
            self._by_key.pop(schema.event_key(), None)
        if not by_routing_key:
            self._by_routing_key.pop(schema.routing_key(), None)

    def get(self, model: str, event: str, version: int | None = None) -> type[ModelEvent] | None:
        """The schema of (model, event): the newest registered version, or ``version``."""
        versions = self._by_key.get((model, event))
        if not versions:
            return None
        return versions[max(versions)] if version is None else versions.get(version)

    def events(self) -> dict[str, list[str]]:
        """Every registered model path, with its event names (sorted)."""
        with self._lock:
            keys = list(self._by_key)
        found: dict[str, list[str]] = {}
        for model, event in sorted(keys):
            found.setdefault(model, []).append(event)
        return found

    def versions(self, routing_key: str) -> dict[int, type[ModelEvent]]:
        """Every registered version for ``routing_key``, by version number."""
        return dict(self._by_routing_key.get(routing_key, {}))

    def for_routing_key(self, routing_key: str) -> type[ModelEvent] | None:
        """The newest registered version for ``routing_key``."""
        versions = self._by_routing_key.get(routing_key)
        return versions[max(versions)] if versions else None

    def __iter__(self) -> Iterator[type[ModelEvent]]:
        """Every registered schema, each version on its own."""
        with self._lock:
            return iter(list(self._all()))

    def __len__(self) -> int:
        return sum(len(versions) for versions in self._by_key.values())


default_catalog = SchemaRegistry()
"""Every ``ModelEvent`` subclass defined with ``register=True`` (the default)."""
