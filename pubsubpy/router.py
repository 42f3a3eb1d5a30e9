"""Subscriptions: ``@subscribe`` registration (no I/O) and handler introspection.

A handler's first parameter's annotation says what it accepts: one
``ModelEvent`` subclass, a union of them, ``ModelEvent`` (every schema), or
``dict`` (the decoded JSON, for events with no schema). An optional second
parameter receives a ``MessageInfo``. The annotations are checked at
``@subscribe`` (a first one that is no event type, a second one that is not
``MessageInfo``: a ``ConfigurationError`` at the decorator); one naming a class
not importable yet is resolved at the first drain, so a handler may be declared
before its schema's module is imported and before ``init()``. The first drain
also checks each pattern against the registered schemas.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import logging
import threading
import types
import typing
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from pubsubpy.errors import ConfigurationError
from pubsubpy.messages import MessageInfo
from pubsubpy.schemas import ModelEvent, SchemaRegistry
from pubsubpy.settings import _caller_level
from pubsubpy.topics import TopicTrie, topic_matches, validate_pattern

__all__ = ["ExceptionTypes", "Router", "Subscription", "UnmatchedPatternWarning", "exception_policy"]

F = TypeVar("F", bound=Callable[..., Any])

log = logging.getLogger("pubsubpy.router")


class UnmatchedPatternWarning(UserWarning):
    """A ``@subscribe`` pattern matches the routing key of no registered schema (``"Bookings.*"`` when
    ``Booking.created`` is registered), so its handler would never run.

    Issued once per pattern when consuming starts (a drain or a worker), besides a log line, naming the
    nearest registered routing keys. Not issued for a pattern whose handlers all take ``dict`` when
    ``require_schemas=False``: it may be meant for schema-less events (handlers of a schema never get those).
    """


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
    ordered: bool = False     # one message per ordering key at a time, in arrival order; retried in its lane
    pause_on: tuple[type[BaseException], ...] = ()        # the dependency is down: give it back, pause, probe
    retry_on: tuple[type[BaseException], ...] = ()        # retried while attempts are left (as unmatched ones)
    dead_letter_on: tuple[type[BaseException], ...] = ()  # dead-lettered at once, reason ``rejected``
    time_limit: float | None = None  # seconds: a run still going then fails (TimeLimitExceeded)

    def accepts(self, schema: type[ModelEvent] | None) -> bool:
        """Whether this handler takes ``schema``'s event: that class, or another version of the same
        event (read through upcasters, or as the older version; the engine's plan decides per key and version)."""
        if schema is None:
            return self.accepts_dict
        if self.accepts_any_schema or self.accepts_dict or issubclass(schema, self.schemas):
            return True
        key = schema.event_key()
        return any(s.__pubsub_model__ is not None and s.event_key() == key for s in self.schemas)


ExceptionTypes = type[BaseException] | tuple[type[BaseException], ...]
"""An exception class, or a tuple of them (as ``isinstance`` takes)."""


def exception_policy(**lists: ExceptionTypes) -> dict[str, tuple[type[BaseException], ...]]:
    """The exception lists of ``@subscribe`` as tuples of classes; a class in two lists is an error (which
    would win is a precedence the reader should not have to look up)."""
    checked: dict[str, tuple[type[BaseException], ...]] = {}
    seen: dict[type[BaseException], str] = {}
    for name, value in lists.items():
        classes = value if isinstance(value, tuple) else (value,)
        for cls in classes:
            if not (isinstance(cls, type) and issubclass(cls, BaseException)):
                raise ConfigurationError(f"{name}= takes exception classes, got {cls!r}")
            if cls in seen:
                raise ConfigurationError(f"{cls.__qualname__} is in both {seen[cls]}= and {name}=: put it in one")
            seen[cls] = name
        checked[name] = classes
    return checked


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


_UNRESOLVED: Any = object()  # an annotation naming something not importable yet (checked again at drain)
_ACCEPTED = "a ModelEvent subclass, a union of them, ModelEvent, or dict"


def _show(annotation: Any) -> str:
    """An annotation as its writer spelled it: ``int``, ``BookingCreated | int``, ``dict[str, Any]``."""
    if isinstance(annotation, str):
        return annotation
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__qualname__
    return repr(annotation).replace("typing.", "")


def _annotation(handler: Callable[..., Any], param: inspect.Parameter, hints: dict[str, Any] | None) -> Any:
    """``param``'s annotation, resolved; ``_UNRESOLVED`` when it names something not importable yet."""
    raw = param.annotation
    if not isinstance(raw, str):
        return raw
    if hints is not None and param.name in hints:
        return hints[param.name]
    namespace = dict(getattr(inspect.unwrap(handler), "__globals__", {}))
    try:
        return eval(raw, namespace)  # what typing.get_type_hints does with a string annotation
    except Exception:
        return _UNRESOLVED


def _classify(name: str, param: str, annotation: Any) -> tuple[bool, bool, tuple[type[ModelEvent], ...]]:
    """What a first-parameter annotation accepts: (dict, any schema, these schemas); else a ConfigurationError
    naming the handler and the annotation."""
    options = typing.get_args(annotation) if _is_union(annotation) else (annotation,)
    accepts_dict = accepts_any = False
    schemas: list[type[ModelEvent]] = []
    for option in options:
        origin = typing.get_origin(option) or option
        if origin is dict:
            accepts_dict = True
        elif option is ModelEvent:
            accepts_any = True
        elif isinstance(option, type) and issubclass(option, ModelEvent):
            schemas.append(option)
        else:
            part = "" if option is annotation else f" ({_show(option)} is not one)"
            raise ConfigurationError(
                f"handler {name}: its first parameter {param!r} is annotated {_show(annotation)}{part}, which "
                f"cannot receive an event; annotate it with {_ACCEPTED}"
            )
    return accepts_dict, accepts_any, tuple(schemas)


def _check_info(name: str, handler: Callable[..., Any], second: inspect.Parameter,
                hints: dict[str, Any] | None) -> None:
    """A second parameter that receives the ``MessageInfo`` must say so, or say nothing."""
    if second.default is not second.empty or second.annotation is second.empty:
        return  # an optional one is passed the MessageInfo only when annotated for it
    annotation = _annotation(handler, second, hints)
    options = typing.get_args(annotation) if _is_union(annotation) else (annotation,)
    if annotation is _UNRESOLVED or any(option in (MessageInfo, Any, object) for option in options):
        return
    raise ConfigurationError(
        f"handler {name}: its second parameter {second.name!r} is annotated {_show(annotation)}, but the second "
        f"parameter receives the message's MessageInfo; annotate it `{second.name}: MessageInfo` (from pubsubpy "
        "import MessageInfo) or leave it unannotated"
    )


def _check_annotations(handler: Callable[..., Any], name: str) -> None:
    """At ``@subscribe``: the annotations that can be read now must fit (``(event: Schema | ... | dict)``,
    ``info: MessageInfo``); one naming a class not importable yet is checked when consuming starts."""
    params = [p for p in inspect.signature(handler).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    try:
        hints: dict[str, Any] | None = typing.get_type_hints(handler)
    except Exception:  # a forward reference to a class defined later: read what can be read
        hints = None
    first = params[0]
    if first.annotation is not first.empty:
        annotation = _annotation(handler, first, hints)
        if annotation is not _UNRESOLVED:
            _classify(name, first.name, annotation)
    if len(params) > 1:
        _check_info(name, handler, params[1], hints)


def _resolve(sub: Subscription) -> None:
    """Read the first parameter's annotation into ``accepts_*`` / ``schemas``."""
    try:
        hints = typing.get_type_hints(sub.handler)
    except Exception as exc:  # NameError for an unresolvable forward reference, and friends
        raise ConfigurationError(f"handler {sub.name}: cannot resolve its annotations ({exc})") from None
    params = [p for p in inspect.signature(sub.handler).parameters.values()
              if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    first = params[0].name
    annotation = hints.get(first, inspect.Parameter.empty)
    if annotation is inspect.Parameter.empty:
        raise ConfigurationError(
            f"handler {sub.name}: annotate its first parameter with the schema it accepts ({_ACCEPTED})"
        )
    sub.accepts_dict, sub.accepts_any_schema, sub.schemas = _classify(sub.name, first, annotation)
    if len(params) > 1:
        _check_info(sub.name, sub.handler, params[1], hints)


def _shaped(pattern: str, key: str) -> str:
    """``key`` written in ``pattern``'s shape (its ``*`` words kept), for comparing the two by eye."""
    words, key_words = pattern.split("."), key.split(".")
    if "#" in words or len(words) != len(key_words):
        return key
    return ".".join("*" if word == "*" else key_word for word, key_word in zip(words, key_words, strict=True))


def _nearest_keys(pattern: str, keys: list[str]) -> str:
    """The registered routing keys nearest ``pattern`` (difflib), as a phrase for a message."""
    if not keys:
        return "no schema is registered at all"
    scored = sorted(((difflib.SequenceMatcher(None, pattern, _shaped(pattern, key)).ratio(), key) for key in keys),
                    key=lambda item: (-item[0], item[1]))
    near = [(score, key) for score, key in scored if score >= 0.6][:3]
    if not near:
        shown = ", ".join(repr(key) for key in keys[:5]) + (", ..." if len(keys) > 5 else "")
        return f"registered routing keys: {shown}"
    best = _shaped(pattern, near[0][1])
    guess = f" (did you mean {best!r}?)" if best != near[0][1] else ""
    return f"nearest registered routing keys: {', '.join(repr(key) for _, key in near)}{guess}"


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
        self._warned: set[str] = set()  # patterns already reported as matching no schema

    def subscribe(self, pattern: str, *, max_attempts: int | None = None,
                  idempotent: bool = False, ordered: bool = False, pause_on: ExceptionTypes = (),
                  retry_on: ExceptionTypes = (), dead_letter_on: ExceptionTypes = (),
                  time_limit: float | None = None) -> Callable[[F], F]:
        validate_pattern(pattern)
        if time_limit is not None and (isinstance(time_limit, bool) or not isinstance(time_limit, (int, float))
                                       or not 0 < time_limit <= 86_400):
            raise ConfigurationError(f"time_limit must be seconds in (0, 86400], got {time_limit!r}")
        if max_attempts is not None and (not isinstance(max_attempts, int) or max_attempts < 1):
            raise ConfigurationError(f"max_attempts must be a positive int, got {max_attempts!r}")
        policy = exception_policy(pause_on=pause_on, dead_letter_on=dead_letter_on, retry_on=retry_on)

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
            _check_annotations(handler, name)  # here, so the traceback points at the decorator, not at a drain
            with self._lock:
                if any(s.handler is handler and s.pattern == pattern for s in self._subscriptions):
                    return handler
                self._subscriptions.append(Subscription(pattern, handler, name, max_attempts, wants_info,
                                                        idempotent=idempotent, is_async=is_async,
                                                        ordered=ordered, pause_on=policy["pause_on"],
                                                        retry_on=policy["retry_on"],
                                                        dead_letter_on=policy["dead_letter_on"],
                                                        time_limit=time_limit))
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
            # every field, so one added to Subscription is never dropped here (is_async once was)
            self._subscriptions.extend(dataclasses.replace(sub) for sub in other.subscriptions)
            self._trie = None
            self._cache.clear()
            self._resolved = False

    def subset(self, keep: Callable[[Subscription], bool]) -> Router:
        """A router of the subscriptions ``keep`` accepts (the same, resolved, objects): a worker with shards
        feeds its ordered subscriptions from the shard queues and the others from the service queue."""
        with self._lock:
            chosen = Router()
            chosen._subscriptions = [sub for sub in self._subscriptions if keep(sub)]
            chosen._resolved = self._resolved
            chosen._warned = self._warned
            return chosen

    def resolve(self, registry: SchemaRegistry | Iterable[type[ModelEvent]], *,
                require_schemas: bool | None = None) -> None:
        """Resolve annotations and check every pattern against the registered schemas.

        A pattern that matches a schema its handler's annotation does not
        accept is a ``ConfigurationError`` listing every such conflict. A
        pattern that matches no registered schema's routing key warns once
        (``UnmatchedPatternWarning`` and the log), naming the nearest keys,
        unless every handler of the pattern takes ``dict`` and
        ``require_schemas`` is not ``True`` (it may be meant for schema-less
        events; handlers of a schema never receive those).
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
        self._warn_unmatched(schemas, schemaless_ok=require_schemas is not True)
        self._resolved = True

    def _warn_unmatched(self, schemas: list[type[ModelEvent]], *, schemaless_ok: bool) -> None:
        """Warn once per pattern that no registered schema's routing key matches (its handlers never run)."""
        keys = sorted({schema.routing_key() for schema in schemas})
        by_pattern: dict[str, list[Subscription]] = {}
        for sub in self._subscriptions:
            by_pattern.setdefault(sub.pattern, []).append(sub)
        for pattern, subs in by_pattern.items():
            if pattern in self._warned or any(topic_matches(pattern, key) for key in keys):
                continue
            if schemaless_ok and all(sub.accepts_dict for sub in subs):
                continue  # may be meant for schema-less events (require_schemas=False, or not said)
            self._warned.add(pattern)
            text = (f"@subscribe({pattern!r}) ({', '.join(sub.name for sub in subs)}) matches the routing key of "
                    f"no registered schema, so it will never receive an event; {_nearest_keys(pattern, keys)}. "
                    "Fix the pattern, or import the module defining the schema before consuming")
            log.warning(text)
            warnings.warn(text, UnmatchedPatternWarning, stacklevel=_caller_level())

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
