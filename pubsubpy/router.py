"""Subscriptions: ``@subscribe`` registration (no I/O) and handler introspection.

A handler's first parameter's annotation says what it accepts: one
``ModelEvent`` subclass, a union of them, ``ModelEvent`` (every schema), or
``dict`` (the decoded JSON, for events with no schema). An optional second
parameter receives a ``MessageInfo``. Annotations are resolved lazily (at the
first drain), so a handler may be declared before its schema's module is
imported and before ``init()``.
"""

from __future__ import annotations

import inspect
import threading
import types
import typing
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pubsubpy.errors import ConfigurationError
from pubsubpy.schemas import ModelEvent, SchemaRegistry
from pubsubpy.topics import TopicTrie, topic_matches, validate_pattern

__all__ = ["Router", "Subscription"]

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(eq=False)
class Subscription:
    pattern: str
    handler: Callable[..., Any]
    name: str
    max_attempts: int | None
    wants_info: bool
    accepts_dict: bool = False
    accepts_any_schema: bool = False
    schemas: tuple[type[ModelEvent], ...] = field(default=())
    idempotent: bool = False  # runs through the Inbox: once per message id
    is_async: bool = False    # `async def`: awaited on the consuming AsyncPubSub's event loop

    def accepts(self, schema: type[ModelEvent] | None) -> bool:
        """Whether this handler takes ``schema``'s event: that class, or another version of the same
        event (read through upcasters, or as the older version; ``dispatch.py`` decides per message)."""
        if schema is None:
            return self.accepts_dict
        if self.accepts_any_schema or self.accepts_dict or issubclass(schema, self.schemas):
            return True
        key = schema.event_key()
        return any(s.__pubsub_model__ is not None and s.event_key() == key for s in self.schemas)


def _handler_name(handler: Callable[..., Any]) -> str:
    module = getattr(handler, "__module__", None) or "?"
    qualname = getattr(handler, "__qualname__", None) or repr(handler)
    return f"{module}.{qualname}"


def _count_parameters(handler: Callable[..., Any], name: str) -> bool:
    """Check the shape ``(event)`` or ``(event, info)``; return whether ``info`` is wanted."""
    try:
        params = list(inspect.signature(handler).parameters.values())
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"handler {name}: cannot read its signature ({exc})") from None
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    if not positional or len(required) > 2 or any(
        p.kind in (p.KEYWORD_ONLY,) and p.default is p.empty for p in params
    ):
        raise ConfigurationError(
            f"handler {name} must take (event) or (event, info); it takes ({', '.join(p.name for p in params)})"
        )
    if len(positional) < 2:
        return False
    second = positional[1]
    # A required second parameter gets the MessageInfo; an optional one only when annotated for it.
    return second.default is second.empty or "MessageInfo" in str(second.annotation)


def _resolve(sub: Subscription) -> None:
    """Read the first parameter's annotation into ``accepts_*`` / ``schemas``."""
    try:
        hints = typing.get_type_hints(sub.handler)
    except Exception as exc:  # NameError for an unresolvable forward reference, and friends
        raise ConfigurationError(f"handler {sub.name}: cannot resolve its annotations ({exc})") from None
    first = next(iter(inspect.signature(sub.handler).parameters))
    annotation = hints.get(first, inspect.Parameter.empty)
    if annotation is inspect.Parameter.empty:
        raise ConfigurationError(
            f"handler {sub.name}: annotate its first parameter with the schema it accepts "
            "(a ModelEvent subclass, a union of them, ModelEvent, or dict)"
        )
    options = typing.get_args(annotation) if _is_union(annotation) else (annotation,)
    schemas: list[type[ModelEvent]] = []
    for option in options:
        origin = typing.get_origin(option) or option
        if origin is dict:
            sub.accepts_dict = True
        elif option is ModelEvent:
            sub.accepts_any_schema = True
        elif isinstance(option, type) and issubclass(option, ModelEvent):
            schemas.append(option)
        else:
            raise ConfigurationError(
                f"handler {sub.name}: cannot accept {option!r}; use a ModelEvent subclass, a union of them, "
                "ModelEvent, or dict"
            )
    sub.schemas = tuple(schemas)


def _is_union(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    return origin is typing.Union or origin is types.UnionType


class Router:
    """Holds subscriptions; ``match`` answers which ones a routing key reaches."""

    def __init__(self) -> None:
        self._subscriptions: list[Subscription] = []
        self._trie: TopicTrie[Subscription] | None = None
        self._cache: dict[str, list[Subscription]] = {}
        self._lock = threading.Lock()
        self._resolved = False

    def subscribe(self, pattern: str, *, max_attempts: int | None = None,
                  idempotent: bool = False) -> Callable[[F], F]:
        validate_pattern(pattern)
        if max_attempts is not None and (not isinstance(max_attempts, int) or max_attempts < 1):
            raise ConfigurationError(f"max_attempts must be a positive int, got {max_attempts!r}")

        def decorator(handler: F) -> F:
            if not callable(handler):
                raise ConfigurationError(f"@subscribe({pattern!r}) must decorate a function, got {handler!r}")
            name = _handler_name(handler)
            if inspect.isasyncgenfunction(handler):
                raise ConfigurationError(f"handler {name} is an async generator; a handler is a function "
                                         "(`def`, or `async def` consumed by pubsubpy.aio.AsyncPubSub)")
            is_async = any(inspect.iscoroutinefunction(f) for f in (
                handler, inspect.unwrap(handler), type(handler).__call__))  # decorated, or a callable object
            wants_info = _count_parameters(handler, name)
            with self._lock:
                if any(s.handler is handler and s.pattern == pattern for s in self._subscriptions):
                    return handler
                self._subscriptions.append(Subscription(pattern, handler, name, max_attempts, wants_info,
                                                        idempotent=idempotent, is_async=is_async))
                self._trie = None
                self._cache.clear()
                self._resolved = False
            return handler

        return decorator

    @property
    def subscriptions(self) -> list[Subscription]:
        return list(self._subscriptions)

    @property
    def patterns(self) -> frozenset[str]:
        return frozenset(s.pattern for s in self._subscriptions)

    def copy_from(self, other: Router) -> None:
        with self._lock:
            for sub in other.subscriptions:
                self._subscriptions.append(Subscription(sub.pattern, sub.handler, sub.name,
                                                        sub.max_attempts, sub.wants_info,
                                                        idempotent=sub.idempotent))
            self._trie = None
            self._cache.clear()
            self._resolved = False

    def resolve(self, registry: SchemaRegistry | Iterable[type[ModelEvent]]) -> None:
        """Resolve annotations and check every pattern against the registered schemas.

        A pattern that matches a schema its handler's annotation does not
        accept is a ``ConfigurationError`` listing every such conflict.
        """
        conflicts: list[str] = []
        schemas = list(registry)
        for sub in self._subscriptions:
            _resolve(sub)
            for schema in schemas:
                if topic_matches(sub.pattern, schema.routing_key()) and not sub.accepts(schema):
                    conflicts.append(
                        f"  {sub.name} subscribes to {sub.pattern!r}, which matches {schema.routing_key()!r} "
                        f"({schema.__qualname__}), but its annotation does not accept {schema.__qualname__}"
                    )
        if conflicts:
            raise ConfigurationError(
                "subscriptions that would receive events they cannot take:\n" + "\n".join(conflicts)
                + "\nwiden the annotation (a union, ModelEvent or dict) or narrow the pattern"
            )
        self._resolved = True

    @property
    def resolved(self) -> bool:
        return self._resolved

    def match(self, routing_key: str) -> list[Subscription]:
        cached = self._cache.get(routing_key)
        if cached is not None:
            return cached
        with self._lock:
            if self._trie is None:
                trie: TopicTrie[Subscription] = TopicTrie()
                for sub in self._subscriptions:
                    trie.add(sub.pattern, sub)
                self._trie = trie
            found = self._trie.match(routing_key)
            if len(self._cache) < 10_000:
                self._cache[routing_key] = found
            return found
