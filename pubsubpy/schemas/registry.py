"""``SchemaRegistry``: which schema a (model, event) or a routing key means.

Two schemas for one (model, event), or two whose routing keys collide
(``a.models.Booking`` and ``b.models.Booking`` both give ``Booking.updated``),
are a ``ConfigurationError`` naming both classes: never a silent overwrite.
Re-defining the same class (same module and qualified name, as a reload does)
replaces it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator

from pubsubpy.errors import ConfigurationError
from pubsubpy.schemas.base import ModelEvent

__all__ = ["SchemaRegistry", "default_catalog"]


def _name(cls: type[ModelEvent]) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


class SchemaRegistry:
    def __init__(self, schemas: Iterable[type[ModelEvent]] = ()) -> None:
        self._by_key: dict[tuple[str, str], type[ModelEvent]] = {}
        self._by_routing_key: dict[str, type[ModelEvent]] = {}
        self._lock = threading.Lock()
        for schema in schemas:
            self.register(schema)

    def register(self, schema: type[ModelEvent]) -> type[ModelEvent]:
        key = schema.event_key()
        routing_key = schema.routing_key()
        with self._lock:
            for existing in (self._by_key.get(key), self._by_routing_key.get(routing_key)):
                if existing is None or existing is schema:
                    continue
                if _name(existing) != _name(schema):
                    what = f"event {key[0]}:{key[1]}" if existing.event_key() == key else f"routing key {routing_key!r}"
                    raise ConfigurationError(
                        f"schemas {_name(existing)} and {_name(schema)} both claim {what}; "
                        "rename the event or the model, or pass register=False to one of them"
                    )
                self._forget(existing)
            self._by_key[key] = schema
            self._by_routing_key[routing_key] = schema
        return schema

    def _forget(self, schema: type[ModelEvent]) -> None:
        self._by_key.pop(schema.event_key(), None)
        self._by_routing_key.pop(schema.routing_key(), None)

    def get(self, model: str, event: str) -> type[ModelEvent] | None:
        return self._by_key.get((model, event))

    def for_routing_key(self, routing_key: str) -> type[ModelEvent] | None:
        return self._by_routing_key.get(routing_key)

    def __iter__(self) -> Iterator[type[ModelEvent]]:
        return iter(list(self._by_key.values()))

    def __len__(self) -> int:
        return len(self._by_key)


default_catalog = SchemaRegistry()
"""Every ``ModelEvent`` subclass defined with ``register=True`` (the default)."""
