"""The plan of a routing key and schema version: which handlers run, which schema reads the body, what each
handler gets. Worked out once per key and version (a message only adds its own bytes), and again after a
schema is registered.

A handler that wants another version of the event than the one read gets it through upcasters (newer), or
the body read again as the older version it accepts. What can only be judged per message (the payload, the
handlers a retry is aimed at) is left to the engine.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from pubsubpy.router import Router, Subscription
from pubsubpy.schemas import ModelEvent, SchemaRegistry
from pubsubpy.schemas._upcasting import can_upcast, upcast
from pubsubpy.settings import Settings

__all__ = ["Plan", "Planner", "Step"]

_MAX_PLANS = 10_000  # keys and versions remembered; a flood of random keys must not grow the cache forever


@dataclass(frozen=True, slots=True)
class Step:
    """One matching handler's part of the plan."""

    sub: Subscription
    handler: Callable[..., Any]            # ``sub.handler``, or it behind an upcaster
    max_attempts: int
    raw: bool = False                      # gets the decoded JSON object although a schema read the body
    reread: type[ModelEvent] | None = None  # gets the body read again as this (older) version
    problem: str | None = None             # set: no version it accepts can be reached (unknown_event)


@dataclass(frozen=True, slots=True)
class Plan:
    """What depends only on the routing key and the version that arrived."""

    steps: tuple[Step, ...]
    cap: int                               # the most attempts any matching handler gets
    schema: type[ModelEvent] | None        # reads the body; None: a plain JSON object
    unknown: str | None = None             # no handler or no schema here: another version may know the key
    version_problem: str | None = None     # that version is not registered here (unknown_event)
    wants_info: bool = False

    def targeted(self, names: Collection[str] | None) -> Sequence[Step]:
        """The steps a retry aimed at ``names`` runs. A header naming no current handler (renamed since, or
        forged) is ignored: running all beats running none."""
        if names is None or len(self.steps) < 2:
            return self.steps
        chosen = [step for step in self.steps if step.sub.name in names]
        return chosen or self.steps

    def refusal(self, steps: Sequence[Step]) -> str | None:
        """A handler that cannot take the registered schema at all (``Router.resolve`` prevents it, unless a
        schema was registered after it ran)."""
        schema = self.schema
        if schema is None:
            return None
        refusing = [step.sub.name for step in steps if not step.sub.accepts(schema)]
        return f"handler(s) {', '.join(refusing)} cannot accept {schema.__qualname__}" if refusing else None


class Planner:
    """Plans by (routing key, version), forgotten when the registry changes."""

    def __init__(self, settings: Settings, router: Router, registry: SchemaRegistry) -> None:
        self._settings = settings
        self._router = router
        self._registry = registry
        self._plans: dict[tuple[str, int], Plan] = {}
        self._generation = registry.generation

    def _max_attempts(self, sub: Subscription) -> int:
        return sub.max_attempts or self._settings.max_attempts

    def plan(self, routing_key: str, version: int) -> Plan:
        if self._generation != self._registry.generation:  # a schema was registered meanwhile
            self._plans.clear()
            self._generation = self._registry.generation
        key = (routing_key, version)
        plan = self._plans.get(key)
        if plan is None:
            plan = self._make(routing_key, version)
            if len(self._plans) < _MAX_PLANS:
                self._plans[key] = plan
        return plan

    def _make(self, routing_key: str, version: int) -> Plan:
        matched = self._router.match(routing_key)
        cap = max((self._max_attempts(s) for s in matched), default=self._settings.max_attempts)
        wants_info = any(s.wants_info for s in matched)
        schema = self._registry.for_routing_key(routing_key)
        plain = tuple(Step(s, s.handler, self._max_attempts(s)) for s in matched)
        if not matched:
            return Plan(plain, cap, schema, f"no subscription matches routing key {routing_key!r}")
        if schema is None:
            if self._settings.require_schemas or not all(s.accepts_dict for s in matched):
                return Plan(plain, cap, None, f"no schema is registered for routing key {routing_key!r}")
            return Plan(plain, cap, None, wants_info=wants_info)
        versions = self._registry.versions(routing_key)
        read_as = _read_as(versions, version) if versions else schema
        if read_as is None:
            problem = (f"version {version} of {routing_key} is not registered here (registered: "
                       f"{', '.join(str(v) for v in sorted(versions))})")
            return Plan(plain, cap, schema, version_problem=problem, wants_info=wants_info)
        steps = tuple(self._step(s, read_as, version) for s in matched)
        return Plan(steps, cap, read_as, wants_info=wants_info)

    def _step(self, sub: Subscription, schema: type[ModelEvent], version: int) -> Step:
        """What ``sub`` gets of a message read as ``schema`` (``version`` is what arrived)."""
        attempts = self._max_attempts(sub)
        if sub.accepts_dict and not (sub.accepts_any_schema or sub.schemas):
            return Step(sub, sub.handler, attempts, raw=True)
        if sub.accepts_any_schema or sub.accepts_dict or issubclass(schema, sub.schemas):
            return Step(sub, sub.handler, attempts)
        target = _target(sub, schema)
        if target is None:
            wanted = ", ".join(f"v{s.__pubsub_version__}" for s in sub.schemas
                               if s.__pubsub_model__ is not None and s.event_key() == schema.event_key())
            return Step(sub, sub.handler, attempts, problem=(
                f"handler {sub.name} wants {schema.event_type()} {wanted}; version {version} arrived "
                f"(read as v{schema.__pubsub_version__}) and no upcaster leads there"))
        if target.__pubsub_version__ > schema.__pubsub_version__:
            return Step(sub, functools.partial(_upcast_then, sub.handler, target), attempts)
        return Step(sub, sub.handler, attempts, reread=target)


def _read_as(versions: dict[int, type[ModelEvent]], version: int) -> type[ModelEvent] | None:
    """The registered schema to read ``version`` with: itself, or the newest for a newer version (the
    compatibility gate is what makes that safe); None for an older version not registered."""
    found = versions.get(version)
    if found is not None:
        return found
    newest = max(versions)
    return versions[newest] if version > newest else None


def _target(sub: Subscription, arrived: type[ModelEvent]) -> type[ModelEvent] | None:
    """Which version of ``arrived``'s event ``sub`` gets: the nearest newer one upcasters reach, else the
    newest older one it accepts (read as that version, as a consumer of it would)."""
    same = [s for s in sub.schemas if s.__pubsub_model__ is not None and s.event_key() == arrived.event_key()]
    newer = sorted((s for s in same if s.__pubsub_version__ > arrived.__pubsub_version__),
                   key=lambda s: s.__pubsub_version__)
    for candidate in newer:
        if can_upcast(arrived, candidate):
            return candidate
    older = [s for s in same if s.__pubsub_version__ < arrived.__pubsub_version__]
    return max(older, key=lambda s: s.__pubsub_version__) if older else None


def _upcast_then(handler: Callable[..., object], target: type[ModelEvent], event: ModelEvent, *rest: Any) -> object:
    """Run ``handler`` on ``event`` carried up to ``target`` (an upcaster's error is the handler run's failure)."""
    return handler(upcast(event, target), *rest)
