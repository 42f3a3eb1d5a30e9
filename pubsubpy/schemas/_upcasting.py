"""Upcasters: how an older version of an event becomes the next one, declared by the schema's author.

``@pubsubpy.upcaster(BookingV1, BookingV2)`` on ``def f(old: BookingV1) -> BookingV2``
(or a dict BookingV2 validates) registers the step v1 -> v2 on the BookingV1
class itself (no global table). Steps chain: a handler that wants v3 gets a v1
payload through v1 -> v2 -> v3. Each step must go from version N to N+1 of the
same (model, event); anything else is a ``ConfigurationError`` at decoration.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from pubsubpy.errors import ConfigurationError
from pubsubpy.schemas._base import ModelEvent

__all__ = ["can_upcast", "upcast", "upcaster"]

S = TypeVar("S", bound=ModelEvent)
T = TypeVar("T", bound=ModelEvent)
Step = Callable[[Any], Any]

_ATTRIBUTE = "__pubsub_upcaster__"


def _step(schema: type[ModelEvent]) -> tuple[type[ModelEvent], Step] | None:
    found: tuple[type[ModelEvent], Step] | None = schema.__dict__.get(_ATTRIBUTE)  # own, never inherited
    return found


def upcaster(source: type[S], target: type[T]) -> Callable[[Callable[[S], T | Mapping[str, Any]]],
                                                         Callable[[S], T | Mapping[str, Any]]]:
    """Declare the decorated function as the step from ``source`` (version N) to ``target`` (N+1).

    ```python
    @pubsubpy.upcaster(IssuedV1, IssuedV2)
    def to_cents(old: IssuedV1) -> IssuedV2:
        return IssuedV2(id=old.id, amount=old.amount, amount_cents=old.amount * 100)
    ```

    A handler that wants version N+1 (or later: steps chain) receives a version N payload validated as what
    it is, then carried up through the steps. The function returns the next version's instance, or a mapping
    that version validates. An upcaster that raises fails that handler's run, which is retried like any
    other.

    Args:
        source: the older schema class (version N).
        target: the next schema class of the same event (version N+1).

    Returns:
        A decorator that registers the function and returns it unchanged.

    Raises:
        ConfigurationError: ``source`` and ``target`` are different events, ``target`` is not version N+1,
            or ``source`` already has an upcaster.
    """
    if source.event_key() != target.event_key():
        raise ConfigurationError(f"upcaster {source.__qualname__} -> {target.__qualname__}: they are different "
                                 f"events ({source.event_type()} and {target.event_type()})")
    if target.__pubsub_version__ != source.__pubsub_version__ + 1:
        raise ConfigurationError(
            f"upcaster {source.__qualname__} (v{source.__pubsub_version__}) -> {target.__qualname__} "
            f"(v{target.__pubsub_version__}): a step goes from version N to N+1; chain steps for more")

    def decorator(function: Callable[[S], T | Mapping[str, Any]]) -> Callable[[S], T | Mapping[str, Any]]:
        existing = _step(source)
        if existing is not None and getattr(existing[1], "__qualname__", None) != function.__qualname__:
            raise ConfigurationError(f"{source.__qualname__} already has an upcaster to {existing[0].__qualname__}")
        setattr(source, _ATTRIBUTE, (target, function))
        return function

    return decorator


def can_upcast(source: type[ModelEvent], target: type[ModelEvent]) -> bool:
    """Whether declared steps lead from ``source`` to ``target``."""
    current: type[ModelEvent] | None = source
    while current is not None and current is not target:
        step = _step(current)
        current = step[0] if step is not None else None
    return current is target


def upcast(event: ModelEvent, target: type[ModelEvent]) -> ModelEvent:
    """``event`` carried through the steps up to ``target`` (``can_upcast`` must be true)."""
    while type(event) is not target:
        step = _step(type(event))
        if step is None:
            raise ConfigurationError(f"no upcaster leads from {type(event).__qualname__} to {target.__qualname__}")
        following, function = step
        result = function(event)
        event = result if isinstance(result, following) else following.model_validate(result)
    return event
