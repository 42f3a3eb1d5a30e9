"""One message in, one ``Decision`` out: decode, validate, run the handlers it targets.

No I/O here: the consumer (``consumer.py``) turns the decision into broker
operations. Order of checks, each ending the message at once:

1. ``decode_error``              the transport could not decode its properties/headers
2. ``too_large``                 body over ``max_message_size`` (never parsed)
3. ``unsupported_content_type``  ``content_type`` other than JSON, or an encoding
                                 (gzip...) we do not read; a missing type is read as JSON
4. deferred                      no subscription here matches the key, or no schema for it is
                                 registered here: another version of this service may know it
                                 (a rolling deploy), so it goes back through a retry queue,
                                 without counting as an attempt, for up to ``unknown_key_window``
   ``unknown_event``             ...and after that window; also at once when a matching handler
                                 cannot accept the registered schema
5. ``decode_error``              nested deeper than ``max_json_depth`` (checked before any
                                 parser), not UTF-8 JSON, or not a JSON object
6. ``validation_error``          the registered schema rejects it
7. handlers: each matching handler runs once; ``handler_runs.fold`` decides
   (retry the failed ones, dead-letter the rejected or exhausted ones).
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import functools
import json
import logging
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pydantic_core
from pydantic import ValidationError

from pubsubpy.envelope import (
    CONTENT_TYPE,
    H_ATTEMPT,
    H_HANDLERS,
    H_ROUTING_KEY,
    H_VERSION,
    attempt_from,
    deferral_from,
    header_text,
    version_from,
)
from pubsubpy.errors import ConfigurationError, HandlerCancelled, InvalidTopic
from pubsubpy.handler_runs import ERROR_TEXT_LIMIT, HandlerRun, fold, log_fields, run_handler, run_observed
from pubsubpy.inbox import Inbox
from pubsubpy.jsondepth import nesting_exceeds
from pubsubpy.middleware import HandlerContext, MiddlewareChain
from pubsubpy.outcomes import Reason
from pubsubpy.router import Router, Subscription
from pubsubpy.schemas import ModelEvent, SchemaRegistry
from pubsubpy.schemas.upcasting import can_upcast, upcast
from pubsubpy.settings import Settings
from pubsubpy.topics import validate_routing_key
from pubsubpy.transports.base import TAG_BITS, Delivery

__all__ = ["Decision", "Dispatcher", "MessageInfo"]

log = logging.getLogger("pubsubpy.drain")

_TAG_MASK = (1 << TAG_BITS) - 1  # the broker's delivery tag within ours
_READABLE_ENCODINGS = frozenset({"", "utf-8", "utf8", "identity"})


@dataclass(frozen=True, slots=True)
class MessageInfo:
    """What a handler may want to know besides the payload: its optional second parameter.

    ```python
    @pubsubpy.subscribe("Booking.*")
    def on_booking(event: BookingUpdated, info: MessageInfo) -> None:
        if info.redelivered:
            ...  # at least once: this message id may have been handled before
    ```
    """

    message_id: str | None
    """The publisher's message id (uuid4 hex for pubsubpy publishers): the key to deduplicate on."""
    routing_key: str
    """The event's routing key (``Booking.updated``), also on retries and replays."""
    attempt: int
    """1 on the first run, 2 on the first retry...; reset by a replay."""
    redelivered: bool
    """The broker delivered this message before (a lost connection, a stopped worker): it may be a
    duplicate."""
    headers: Mapping[str, Any]
    """The message's headers, your own included (library headers start with ``pubsubpy-``)."""
    timestamp: dt.datetime | None
    """When it was published (UTC, whole seconds), if the publisher said."""
    event_type: str | None
    """The AMQP ``type``: full model path and event (``shop.models.Booking.updated``)."""
    app_id: str | None
    """The publishing service."""
    schema_version: int = 1
    """The schema version that arrived (``pubsubpy-schema-version``; absent means 1), before any upcasting."""
    correlation_id: str | None = None
    """The AMQP ``correlation_id`` property, as the publisher set it."""


@dataclass(slots=True)
class Decision:
    """The dispatcher's verdict: ``failed`` handlers get a retry copy; with a ``reason``, a dead
    letter blames ``exhausted`` (the handlers that rejected or ran out of attempts, if any)."""

    routing_key: str
    attempt: int
    reason: Reason | None = None            # set: dead-letter with this reason
    error: str | None = None
    deferred_since: float | None = None     # set: send back for another version (first deferred then)
    deferrals: int = 0                      # deferrals before this one
    failed: Sequence[Subscription] = ()
    exhausted: Sequence[Subscription] = ()

    @property
    def dead(self) -> bool:
        """Set to be dead-lettered (a method the type checker cannot narrow, unlike ``reason``)."""
        return self.reason is not None

    @property
    def ok(self) -> bool:
        return self.reason is None and not self.failed and self.deferred_since is None


def _timestamp(seconds: int | None) -> dt.datetime | None:
    """The AMQP timestamp as a datetime; one no calendar can hold (a foreign publisher's 2**63) is None."""
    if not seconds:
        return None
    try:
        return dt.datetime.fromtimestamp(seconds, dt.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None


def event_routing_key(delivery: Delivery) -> str:
    """The event's routing key. A message that came back through the default exchange
    (a retry or a replay) carries it in a header, which is validated before use."""
    if delivery.exchange == "":
        claimed = header_text(delivery.properties.headers, H_ROUTING_KEY, limit=300)
        if claimed is not None:
            try:
                return validate_routing_key(claimed)
            except InvalidTopic:
                log.warning("ignoring malformed %s header %r", H_ROUTING_KEY, claimed[:80])
    return delivery.routing_key


def _targets(delivery: Delivery, matched: list[Subscription]) -> list[Subscription]:
    """On a retry, only the handlers that failed run again. A header naming no current
    handler (renamed since, or forged) is ignored: running all beats running none."""
    if delivery.exchange != "" or len(matched) < 2:
        return matched
    named = header_text(delivery.properties.headers, H_HANDLERS, limit=10_000)
    if not named:
        return matched
    wanted = set(named.split(","))
    chosen = [sub for sub in matched if sub.name in wanted]
    return chosen or matched


def _content_problem(delivery: Delivery) -> str | None:
    props = delivery.properties
    if props.content_type is not None:
        media = props.content_type.split(";", 1)[0].strip().lower()
        if media not in ("application/json", ""):
            return f"content_type {props.content_type!r} is not application/json; it was not read"
    if props.content_encoding is not None and props.content_encoding.strip().lower() not in _READABLE_ENCODINGS:
        return f"content_encoding {props.content_encoding!r} is not supported; send plain UTF-8 JSON"
    return None


@dataclass(slots=True)
class _Plan:
    """What depends only on the routing key, worked out once per key and drain."""

    subs: list[Subscription]
    cap: int
    schema: type[ModelEvent] | None
    unknown: str | None  # set: dead-letter as unknown_event with this error...
    wants_info: bool
    foreign: bool = False  # ...unless the key is another version's to judge: defer it first
    versions: dict[int, type[ModelEvent]] = field(default_factory=dict)  # every registered version of the key
    conversions: dict[type[ModelEvent] | None, list[type[ModelEvent] | None]] = field(default_factory=dict)


AwaitOnLoop = Callable[[Coroutine[Any, Any, Any]], Any]  # runs a coroutine to its end on an event loop


# One handler run a message asks for: (subscription, handler (an upcasting wrapper, maybe), its arguments,
# the payload argument). A plain tuple: one is made per handler per message on the drain's hot path.
_Call = tuple[Subscription, Callable[..., Any], tuple[Any, ...], Any]


@dataclass(slots=True)
class _Ready:
    """A message past decoding and validation, with the handler runs it asks for."""

    delivery: Delivery
    decision: Decision
    calls: list[_Call]
    middleware: Sequence[Any] | None
    info: MessageInfo | None


@dataclass(slots=True)
class _Batch:
    """A message's plain ``async def`` runs, for one hand-off to the loop."""

    index: int
    ready: _Ready
    calls: list[_Call]


Outcomes = list[BaseException | None]  # what each run of a message raised (None: it returned)


async def _await_batches(batches: list[_Batch], may_start: Callable[[], bool]) -> list[Outcomes | None]:
    """Await each message's runs in turn, each run in its own copy of the context; per message what each
    run raised, or None for a message not started (the consumer is stopping, or the loop cancelled us).

    A run that ends in ``CancelledError`` (its own, or the loop's shutdown) fails as ``HandlerCancelled``
    (retried), and no later message of the chunk starts."""
    outcomes: list[Outcomes | None] = []
    cancelled = False
    for batch in batches:
        if cancelled or not may_start():
            outcomes.append(None)
            continue
        raised: Outcomes = []
        for call in batch.calls:
            if cancelled:
                raised.append(HandlerCancelled("not run: the event loop cancelled an earlier handler run"))
                continue
            try:
                _sub, handler, args, _argument = call
                await contextvars.copy_context().run(asyncio.ensure_future, handler(*args))
            except asyncio.CancelledError:
                cancelled = True
                raised.append(HandlerCancelled("the handler was cancelled (the event loop is shutting down, or "
                                               "it awaited something cancelled)"))
            except Exception as exc:  # the handler's failure, folded by run_handler like any other
                raised.append(exc)
            else:
                raised.append(None)
        outcomes.append(raised)
    return outcomes


def _replay(outcome: BaseException | None) -> None:
    """A handler run that already happened (on the loop): raise what it raised."""
    if outcome is not None:
        raise outcome


class Dispatcher:
    def __init__(self, settings: Settings, router: Router, registry: SchemaRegistry,
                 inbox: Inbox | None = None, middleware: MiddlewareChain | None = None, queue: str = "",
                 await_on_loop: AwaitOnLoop | None = None) -> None:
        self._settings = settings
        self._await_on_loop = await_on_loop
        self._router = router
        self._registry = registry
        self._inbox = inbox
        self._middleware = middleware if middleware is not None and middleware.wraps_handlers else None
        self._queue = queue
        self._plans: dict[str, _Plan] = {}
        self._plans_for = registry.generation

    @property
    def awaits(self) -> bool:
        """Whether ``async def`` handlers are consumed here (through an event loop): chunks go to ``dispatch_chunk``."""
        return self._await_on_loop is not None and any(sub.is_async for sub in self._router.subscriptions)

    def max_attempts(self, sub: Subscription) -> int:
        return sub.max_attempts or self._settings.max_attempts

    def _plan(self, routing_key: str, subs: list[Subscription] | None = None) -> _Plan:
        if subs is None:
            if self._plans_for != self._registry.generation:  # a schema was registered meanwhile
                self._plans.clear()
                self._plans_for = self._registry.generation
            plan = self._plans.get(routing_key)
            if plan is not None:
                return plan
        matched = self._router.match(routing_key) if subs is None else subs
        schema = self._registry.for_routing_key(routing_key)
        unknown = None
        if not matched:
            unknown = f"no subscription matches routing key {routing_key!r}"
        elif schema is None and (self._settings.require_schemas or not all(s.accepts_dict for s in matched)):
            unknown = f"no schema is registered for routing key {routing_key!r}"
        foreign = unknown is not None  # not this version's to judge: another may know the key
        if schema is not None and matched:
            refusing = [s.name for s in matched if not s.accepts(schema)]
            if refusing:  # Router.resolve() prevents this unless a schema was registered after it ran
                unknown = f"handler(s) {', '.join(refusing)} cannot accept {schema.__qualname__}"
        cap = max((self.max_attempts(s) for s in matched), default=self._settings.max_attempts)
        plan = _Plan(matched, cap, schema, unknown, any(s.wants_info for s in matched), foreign,
                     self._registry.versions(routing_key))
        if subs is None and len(self._plans) < 10_000:
            self._plans[routing_key] = plan
        return plan

    def _prepare(self, delivery: Delivery) -> Decision | _Ready:
        """Everything before the handlers run: a Decision when the message ends here, else what to run."""
        routing_key = event_routing_key(delivery) if delivery.exchange == "" else delivery.routing_key
        plan = self._plan(routing_key)
        headers = delivery.properties.headers
        attempt = attempt_from(headers, plan.cap) if H_ATTEMPT in headers else 1
        decision = Decision(routing_key, attempt)
        props = delivery.properties
        if props.decode_error is not None:
            return self._dead(decision, Reason.DECODE_ERROR,
                              f"message properties could not be decoded: {props.decode_error}")
        body = delivery.body
        if len(body) > self._settings.max_message_size:
            return self._dead(decision, Reason.TOO_LARGE,
                              f"body of {len(body)} bytes exceeds max_message_size={self._settings.max_message_size}")
        if not (props.content_type == CONTENT_TYPE and props.content_encoding is None):
            problem = _content_problem(delivery)
            if problem:
                return self._dead(decision, Reason.UNSUPPORTED_CONTENT_TYPE, problem)
        if delivery.exchange == "" and plan.subs:
            targets = _targets(delivery, plan.subs)
            if targets is not plan.subs:
                plan = self._plan(routing_key, targets)
        if plan.unknown is not None:
            return self._defer(decision, plan.unknown, headers) if plan.foreign \
                else self._dead(decision, Reason.UNKNOWN_EVENT, plan.unknown)
        version = version_from(headers) if H_VERSION in headers else 1
        schema = plan.schema
        if schema is not None and version != schema.__pubsub_version__:
            schema = self._version(plan, version, decision)
            if decision.reason is not None:
                return decision
        payload = self._load(body, schema, decision, version)
        if decision.reason is not None:
            return decision
        conversions = plan.conversions.get(schema)
        if conversions is None:
            conversions = self._conversions(plan.subs, schema, version, decision)
            if decision.dead:
                return decision
            plan.conversions[schema] = conversions
        middleware = self._middleware.handlers() if self._middleware is not None else None
        info = self.info(delivery, decision, version) if plan.wants_info or middleware else None
        raw: dict[str, Any] | None = None
        calls: list[_Call] = []
        for sub, target in zip(plan.subs, conversions, strict=True):
            argument: Any = payload
            handler = sub.handler
            if schema is not None and sub.accepts_dict and not (sub.accepts_any_schema or sub.schemas):
                if raw is None:
                    raw = json.loads(body)
                argument = raw
            elif target is not None and schema is not None:  # the handler wants another version of this event
                if target.__pubsub_version__ > schema.__pubsub_version__:
                    handler = functools.partial(_upcast_then, sub.handler, target)
                else:
                    argument = self._load(body, target, decision, version)
                    refused = argument is decision  # _load dead-lettered it (validation_error naming both versions)
                    if refused:
                        return decision
            args: tuple[Any, ...] = (argument, info) if info is not None and sub.wants_info else (argument,)
            calls.append((sub, handler, args, argument))
        return _Ready(delivery, decision, calls, middleware, info)

    def dispatch(self, delivery: Delivery) -> Decision:
        """Decide what happens to ``delivery``, running its handlers here (async ones on the loop)."""
        ready = self._prepare(delivery)
        if isinstance(ready, Decision):
            return ready
        decision = ready.decision
        failures: list[HandlerRun] | None = None
        for call in ready.calls:
            sub, handler, args, _argument = call
            if ready.middleware or sub.is_async or sub.idempotent:
                failure = self._run(ready, call)
            else:  # the common case, inline: this is the drain's hot path
                failure = run_handler(sub, handler, args, decision.routing_key, decision.attempt,
                                      sub.max_attempts or self._settings.max_attempts,
                                      ready.delivery.properties.message_id)
            if failure is not None:
                failures = [failure] if failures is None else [*failures, failure]
        return decision if failures is None else self._finish(decision, failures)

    def _run(self, ready: _Ready, call: _Call) -> HandlerRun | None:
        sub, plain, call_args, argument = call
        delivery, decision = ready.delivery, ready.decision
        handler: Callable[..., object] = self._awaited(plain) if sub.is_async else plain
        target, args = handler, call_args
        if sub.idempotent:
            target, args = self._run_once, (sub, handler, delivery.properties.message_id, call_args)
        if not ready.middleware:
            return run_handler(sub, target, args, decision.routing_key, decision.attempt, self.max_attempts(sub),
                               delivery.properties.message_id)
        assert ready.info is not None
        context = HandlerContext(sub.name, ready.info, argument, self._settings.model_exchange, self._queue,
                                 delivery.tag & _TAG_MASK)
        return run_observed(ready.middleware, context, sub, target, args, decision.routing_key, decision.attempt,
                            self.max_attempts(sub), delivery.properties.message_id)

    @staticmethod
    def _finish(decision: Decision, failures: list[HandlerRun]) -> Decision:
        if failures:
            folded = fold(failures)
            decision.failed, decision.exhausted = folded.retry, folded.blamed
            decision.reason, decision.error = folded.reason, folded.error
        return decision

    def dispatch_chunk(self, deliveries: Sequence[Delivery], may_start: Callable[[], bool],
                       each: Callable[[Callable[[], Any]], Any]) -> list[Decision | None]:
        """``dispatch`` for a chunk of deliveries, with every plain ``async def`` handler run of the chunk
        awaited on the loop in one hand-off (one thread-to-loop round trip per chunk, not per message).

        ``each(work)`` runs one message's thread-side work in a context of its own (the pool's isolation
        and Django cleanup, per message). A message with async runs starts in the hand-off: it may still go
        back unstarted (None) when ``may_start()`` turns False before its turn, and its sync handlers (and
        runs wrapped by handler middleware or an inbox, which take the per-message way) run after its async
        runs. The chunk's async runs go one after the other, so ``concurrency`` chunks still bound the
        handlers in flight.
        """
        await_on_loop = self._await_on_loop
        if await_on_loop is None:
            raise ConfigurationError("dispatch_chunk needs an event loop: consume with pubsubpy.aio.AsyncPubSub")
        results: list[Decision | None] = []
        batched: list[_Batch] = []
        for index, delivery in enumerate(deliveries):
            if not may_start():
                results.append(None)
                continue
            ready = each(functools.partial(self._prepare, delivery))
            if isinstance(ready, Decision):
                results.append(ready)
                continue
            on_loop = [c for c in ready.calls if c[0].is_async and not c[0].idempotent and not ready.middleware]
            if not on_loop:
                results.append(each(functools.partial(self._run_all, ready, ready.calls)))
                continue
            results.append(None)  # decided after the hand-off
            batched.append(_Batch(index, ready, on_loop))
        if batched:
            try:
                outcomes = await_on_loop(_await_batches(batched, may_start))
            except Exception as exc:  # the loop closed or cancelled the hand-off: nothing of it ran
                log.warning("async handlers of %d message(s) did not run (%s); they go back to the queue",
                            len(batched), exc)
                outcomes = [None] * len(batched)
            for batch, outcome in zip(batched, outcomes, strict=True):
                if outcome is not None:
                    results[batch.index] = each(functools.partial(self._after_loop, batch, outcome))
        return results

    def _run_all(self, ready: _Ready, calls: Sequence[_Call], failures: Sequence[HandlerRun] = ()) -> Decision:
        runs = list(failures)
        runs += [failure for call in calls if (failure := self._run(ready, call)) is not None]
        return self._finish(ready.decision, runs)

    def _after_loop(self, batch: _Batch, outcome: Outcomes) -> Decision:
        """A message's verdict once its async runs happened: their outcomes, then its other runs."""
        ready = batch.ready
        decision, message_id = ready.decision, ready.delivery.properties.message_id
        failures = [failure for call, raised in zip(batch.calls, outcome, strict=True)
                    if (failure := run_handler(call[0], _replay, (raised,), decision.routing_key, decision.attempt,
                                               self.max_attempts(call[0]), message_id)) is not None]
        rest = [call for call in ready.calls if not any(call is done for done in batch.calls)]
        return self._run_all(ready, rest, failures)

    def _load(self, body: bytes, schema: type[ModelEvent] | None, decision: Decision, version: int = 1) -> Any:
        depth = self._settings.max_json_depth
        if nesting_exceeds(body, depth):
            return self._dead(decision, Reason.DECODE_ERROR, f"body nests deeper than max_json_depth={depth}")
        if schema is None:
            try:
                value = json.loads(body, parse_constant=_refuse_constant)
            except (ValueError, UnicodeDecodeError, RecursionError) as exc:
                return self._dead(decision, Reason.DECODE_ERROR, f"body is not UTF-8 JSON: {exc}")
            if not isinstance(value, dict):
                return self._dead(decision, Reason.DECODE_ERROR, f"body is JSON {type(value).__name__}, not an object")
            return value
        if b"NaN" in body or b"Infinity" in body:
            problem = _strict_json_problem(body)
            if problem:
                return self._dead(decision, Reason.DECODE_ERROR, f"body is not valid JSON: {problem}")
        try:
            return schema.model_validate_json(body)
        except ValidationError as exc:
            errors = exc.errors(include_url=False, include_input=False)
            if any(err["type"] == "json_invalid" for err in errors):
                return self._dead(decision, Reason.DECODE_ERROR, f"body is not UTF-8 JSON: {errors[0]['msg']}")
            if len(errors) == 1 and errors[0]["type"] == "model_type" and not errors[0]["loc"]:
                return self._dead(decision, Reason.DECODE_ERROR, "body is JSON but not an object")
            read_as = "" if version == schema.__pubsub_version__ else \
                f" (version {version} arrived, read as version {schema.__pubsub_version__})"
            return self._dead(decision, Reason.VALIDATION_ERROR, f"{schema.__qualname__}{read_as}: {exc}")

    def _version(self, plan: _Plan, version: int, decision: Decision) -> type[ModelEvent] | None:
        """The registered schema to read ``version`` with: itself, or the newest for a newer version."""
        found = plan.versions.get(version)
        if found is not None:
            return found
        newest = max(plan.versions)
        if version > newest:
            return plan.versions[newest]  # the compatibility gate is what makes this safe
        self._dead(decision, Reason.UNKNOWN_EVENT,
                   f"version {version} of {decision.routing_key} is not registered here (registered: "
                   f"{', '.join(str(v) for v in sorted(plan.versions))})")
        return None

    def _conversions(self, subs: list[Subscription], schema: type[ModelEvent] | None, version: int,
                     decision: Decision) -> list[type[ModelEvent] | None]:
        """Per handler, the other version it wants (None: the payload as read). A handler that wants
        only versions no upcaster reaches from what arrived makes the message ``unknown_event``."""
        targets: list[type[ModelEvent] | None] = []
        for sub in subs:
            if schema is None or sub.accepts_any_schema or sub.accepts_dict or issubclass(schema, sub.schemas):
                targets.append(None)
                continue
            target = _target(sub, schema)  # the plan caches the list once it is complete
            if target is None:
                wanted = ", ".join(f"v{s.__pubsub_version__}" for s in sub.schemas
                                   if s.__pubsub_model__ is not None and s.event_key() == schema.event_key())
                self._dead(decision, Reason.UNKNOWN_EVENT,
                           f"handler {sub.name} wants {schema.event_type()} {wanted}; version {version} arrived "
                           f"(read as v{schema.__pubsub_version__}) and no upcaster leads there")
                return targets
            targets.append(target)
        return targets

    def _awaited(self, handler: Callable[..., Any]) -> Callable[..., object]:
        """An ``async def`` handler as a plain call for the handler thread: it runs on the event loop of
        the ``AsyncPubSub`` that consumes, and the thread waits for it (so ``concurrency`` still bounds it)."""
        await_on_loop = self._await_on_loop
        if await_on_loop is None:  # PubSub refuses async handlers before consuming: never reached
            raise ConfigurationError("an async handler needs an event loop: consume with pubsubpy.aio.AsyncPubSub")

        def call(*args: Any) -> object:
            return await_on_loop(handler(*args))

        return call

    def _run_once(self, sub: Subscription, handler: Callable[..., object], message_id: str | None,
                  args: tuple[Any, ...]) -> None:
        """An idempotent subscription's run: through the inbox, once per (message id, handler)."""
        if self._inbox is None:  # PubSub checks this before consuming; here only for the type checker
            raise ConfigurationError(f"handler {sub.name} is idempotent=True but no Inbox is configured")
        if not message_id:
            log.warning("handler %s is idempotent but this message has no message_id: it cannot be deduplicated "
                        "and runs without the inbox", sub.name,
                        extra=log_fields(None, "", sub.name, 0, "not_deduplicated"))
            handler(*args)
            return
        if not self._inbox.run_once(message_id, sub.name, lambda: handler(*args)):
            log.info("handler %s already handled message %s: duplicate skipped", sub.name, message_id,
                     extra=log_fields(message_id, "", sub.name, 0, "duplicate_skipped"))

    def _defer(self, decision: Decision, why: str, headers: Mapping[str, Any]) -> Decision:
        """Send it back for another version, or, once ``unknown_key_window`` has passed, dead-letter it."""
        window = self._settings.unknown_key_window
        now = time.time()
        since, deferrals = deferral_from(headers, now, window)
        if window <= 0 or now - since >= window:
            waited = f"; no version of this service took it within unknown_key_window={window:g}s" if window else ""
            return self._dead(decision, Reason.UNKNOWN_EVENT, why + waited)
        decision.deferred_since, decision.deferrals = since, deferrals
        return decision

    @staticmethod
    def _dead(decision: Decision, reason: Reason, error: str) -> Decision:
        decision.reason = reason
        decision.error = error[:ERROR_TEXT_LIMIT]
        return decision

    @staticmethod
    def info(delivery: Delivery, decision: Decision, version: int) -> MessageInfo:
        props = delivery.properties
        return MessageInfo(props.message_id, decision.routing_key, decision.attempt, delivery.redelivered,
                           dict(props.headers), _timestamp(props.timestamp), props.type, props.app_id, version,
                           props.correlation_id)


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


def _strict_json_problem(body: bytes) -> str | None:
    """pydantic's parser accepts NaN/Infinity tokens; a strict parse tells them from text inside strings."""
    try:
        pydantic_core.from_json(body, allow_inf_nan=False)
    except ValueError as exc:
        return f"{exc} (NaN and Infinity are not JSON)"
    return None


def _refuse_constant(name: str) -> Callable[[], None]:
    raise ValueError(f"{name} is not valid JSON")
