"""The engine: one delivery in, its ``Verdict`` out, with the handlers it targets run in between.

``prepare`` does everything before the handlers (the checks, the plan, reading
the body) and returns the message's ``Work``: its verdict so far and the runs it
asks for (none once the verdict is reached). ``run`` runs one of them, ``run_all``
folds them into the verdict, ``dispatch`` is both in one call. No I/O, no
threads, no event loop: an ``async def`` handler is handed to ``await_on_loop``,
which the asyncio side (``pubsubpy.aio``) supplies.

Ordered handlers (``ordered=True``): ``lane_of`` names the lane a delivery
waits in (its ordering key). A failed ordered run with attempts left is not
folded into a retry copy, which later messages of its key would overtake: the
verdict is ``held`` for the retry delay, and the consumer runs the same ``Work``
again (``handle``), in its lane, with the attempt counted up. The other
handlers' failures wait in the ``Work`` and are folded in when the ordered runs
end. With the inbox's stale guard an event not newer than its key's last
applied sequence is skipped (``Verdict.stale``).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from pubsubpy._engine.checks import content_problem, event_routing_key, property_problem, retry_targets, size_problem
from pubsubpy._engine.decoding import Refused, read, read_dict
from pubsubpy._engine.ordering import ordered_failures, run_guarded, serial_lane
from pubsubpy._engine.plan import Plan, Planner, Step
from pubsubpy._engine.runs import log_fields, run_handler, run_observed
from pubsubpy._engine.verdict import Verdict
from pubsubpy.envelope import (
    H_ATTEMPT,
    H_PROBE,
    H_VERSION,
    attempt_from,
    deferral_from,
    key_from,
    sequence_from,
    version_from,
)
from pubsubpy.errors import ConfigurationError
from pubsubpy.inbox import Inbox
from pubsubpy.messages import TAG_BITS, Delivery, HandlerResult, MessageInfo, Reason
from pubsubpy.middleware import HandlerContext, Middleware, MiddlewareChain
from pubsubpy.router import Router, Subscription
from pubsubpy.schemas import SchemaRegistry
from pubsubpy.settings import Settings

__all__ = ["AwaitOnLoop", "Call", "Engine", "Item", "RunTimed", "Work"]

log = logging.getLogger("pubsubpy.drain")

AwaitOnLoop = Callable[[Coroutine[Any, Any, Any], "float | None"], Any]
"""Runs a coroutine to its end on the consuming event loop, from a handler thread, cancelled past a time
limit (seconds; None: none) with ``TimeLimitExceeded``."""

RunTimed = Callable[[Callable[[], object], float, str, object], object]
"""Runs a handler call (``time_limit=``) on a thread of its own: (call, limit, handler name, the message it
belongs to); raises ``TimeLimitExceeded`` past the limit (``pubsubpy._consume.time_limits``)."""

_TAG_MASK = (1 << TAG_BITS) - 1  # the broker's delivery tag within ours

Call = tuple[Step, tuple[Any, ...], Any]
"""One handler run a message asks for: (its plan step: subscription, callable, attempts; its arguments; the
payload argument). A plain tuple: one is made per handler per message on the drain's hot path."""


@dataclass(slots=True)
class Work:
    """A message past its checks: its verdict so far, and the handler runs it asks for."""

    delivery: Delivery
    verdict: Verdict
    calls: list[Call]
    middleware: Sequence[Middleware] | None = None
    info: MessageInfo | None = None
    earlier: list[HandlerResult] = field(default_factory=list)  # failures folded in once the ordered runs end
    held_since: float = 0.0  # monotonic: first held in its lane (in-lane retries are bounded from then)


Item = Delivery | Work
"""What a consumer hands the engine to run: a delivery, or a held message's ``Work`` to run again."""


class Engine:
    def __init__(self, settings: Settings, router: Router, registry: SchemaRegistry,
                 inbox: Inbox | None = None, middleware: MiddlewareChain | None = None, queue: str = "",
                 await_on_loop: AwaitOnLoop | None = None, run_timed: RunTimed | None = None) -> None:
        self._settings = settings
        self._planner = Planner(settings, router, registry)
        self._router = router
        self._inbox = inbox
        self._middleware = middleware if middleware is not None and middleware.wraps_handlers else None
        self._queue = queue
        self._await_on_loop = await_on_loop
        self.run_timed = run_timed  # set by the consumer when a subscription has a time_limit
        self.parking: frozenset[str] = frozenset()  # subscriptions whose share is parked (set by the consumer)
        # the ordered subscriptions fed by the shard queues (a worker with shards): a key only they subscribe
        # is acked here without running (its copy through ``<service>.shards`` runs), never deferred
        self.sharded: Router | None = None
        self._ordered = frozenset(sub.name for sub in router.subscriptions if sub.ordered)

    @property
    def has_async_handlers(self) -> bool:
        return any(sub.is_async for sub in self._router.subscriptions)

    @property
    def has_ordered_handlers(self) -> bool:
        return bool(self._ordered)

    @property
    def names(self) -> frozenset[str]:
        """Every subscription's name (the handlers this queue feeds)."""
        return frozenset(sub.name for sub in self._router.subscriptions)

    @property
    def ordered_names(self) -> frozenset[str]:
        return self._ordered

    @property
    def has_pause_on(self) -> bool:
        return any(sub.pause_on for sub in self._router.subscriptions)

    @property
    def has_time_limits(self) -> bool:
        return any(sub.time_limit is not None and not sub.is_async for sub in self._router.subscriptions)

    def lane_of(self, delivery: Delivery) -> str | None:
        """The lane ``delivery`` waits in: its ordering key when an ordered handler will run it (a keyless one:
        its model's lane, so such messages run one at a time); None: it needs no lane."""
        if not self._ordered:
            return None
        headers = delivery.properties.headers
        routing_key = event_routing_key(delivery) if delivery.exchange == "" else delivery.routing_key
        plan = self._planner.plan(routing_key, version_from(headers) if H_VERSION in headers else 1)
        steps = plan.steps if delivery.exchange != "" else plan.targeted(retry_targets(delivery))
        if not any(step.sub.ordered for step in steps):
            return None
        return key_from(headers) or serial_lane(routing_key)

    def handle(self, item: Item) -> Verdict:
        """``dispatch`` a delivery, or run a held ``Work`` again (its failed ordered handlers)."""
        if type(item) is Delivery:
            return self.dispatch(item)
        assert isinstance(item, Work)
        return self.run_all(item)

    # -- before the handlers --------------------------------------------------------
    def prepare(self, delivery: Delivery) -> Work:
        """The checks in order (see ``pubsubpy._engine``); the runs to make when the message passes them."""
        headers = delivery.properties.headers
        routing_key = event_routing_key(delivery) if delivery.exchange == "" else delivery.routing_key
        version = version_from(headers) if H_VERSION in headers else 1
        plan = self._planner.plan(routing_key, version)
        verdict = Verdict(routing_key, attempt_from(headers, plan.cap) if H_ATTEMPT in headers else 1)
        work = Work(delivery, verdict, [])
        problem = property_problem(delivery) or size_problem(delivery, self._settings.max_message_size) \
            or content_problem(delivery)
        if problem is not None:
            verdict.dead(*problem)
            return work
        steps = plan.steps if delivery.exchange != "" else plan.targeted(retry_targets(delivery))
        if plan.unknown is not None:
            if self.sharded is None or delivery.exchange == "" or not self.sharded.match(routing_key):
                self._defer(verdict, plan.unknown, headers)
            return work
        unknown = plan.refusal(steps) or plan.version_problem
        if unknown is not None:
            verdict.dead(Reason.UNKNOWN_EVENT, unknown)
            return work
        if self.parking:
            steps = self._unparked(steps, verdict, headers, delivery.exchange == "")
            if not steps:
                return work
        try:
            self._plan_calls(work, plan, steps, version)
        except Refused as refused:
            verdict.dead(refused.reason, refused.error)
            work.calls.clear()
        return work

    def _unparked(self, steps: Sequence[Step], verdict: Verdict, headers: Mapping[str, Any],
                  returned: bool) -> Sequence[Step]:
        """The steps to run now: those of paused subscriptions are parked (``verdict.park``), except on a probe
        (a parked message moved back to test them)."""
        if returned and H_PROBE in headers:
            return steps
        parking = self.parking
        parked = [step.sub.name for step in steps if step.sub.name in parking]
        if not parked:
            return steps
        verdict.park = parked
        left = [step for step in steps if step.sub.name not in parking]
        verdict.ran = bool(left)
        return left

    def _plan_calls(self, work: Work, plan: Plan, steps: Sequence[Step], version: int) -> None:
        """Read the body and fill ``work.calls``; raises ``Refused`` for a body no handler can get."""
        body, depth = work.delivery.body, self._settings.max_json_depth
        payload: Any = read(body, plan.schema, depth, version) if plan.schema is not None else read_dict(body, depth)
        for step in steps:
            if step.problem is not None:
                raise Refused(Reason.UNKNOWN_EVENT, step.problem)
        middleware = self._middleware.handlers() if self._middleware is not None else None
        info = self.info(work.delivery, work.verdict, version) if plan.wants_info or middleware else None
        work.middleware, work.info = middleware, info
        work.verdict.info = info
        raw: dict[str, Any] | None = None
        for step in steps:
            argument = payload
            if step.raw:
                argument = raw = json.loads(body) if raw is None else raw
            elif step.reread is not None:  # a handler of an older version: validation_error names both
                argument = read(body, step.reread, depth, version)
            args = (argument, info) if info is not None and step.sub.wants_info else (argument,)
            work.calls.append((step, args, argument))

    def _defer(self, verdict: Verdict, why: str, headers: Mapping[str, Any]) -> None:
        """Send it back for another version, or, once ``unknown_key_window`` has passed, dead-letter it."""
        window = self._settings.unknown_key_window
        now = time.time()
        since, deferrals = deferral_from(headers, now, window)
        if window <= 0 or now - since >= window:
            waited = f"; no version of this service took it within unknown_key_window={window:g}s" if window else ""
            verdict.dead(Reason.UNKNOWN_EVENT, why + waited)
        else:
            verdict.defer(since, deferrals)

    # -- the handlers ---------------------------------------------------------------
    def dispatch(self, delivery: Delivery) -> Verdict:
        """Decide what happens to ``delivery``, running its handlers here (async ones on the loop)."""
        return self.run_all(self.prepare(delivery))

    def run_all(self, work: Work, calls: Sequence[Call] | None = None,
                earlier: Sequence[HandlerResult] = ()) -> Verdict:
        """Run ``calls`` (default: all of the message's) and fold their failures, and ``earlier`` ones, in."""
        failures = [*work.earlier, *earlier]
        for call in work.calls if calls is None else calls:
            failure = self.run(work, call)
            if failure is not None:
                failures.append(failure)
        if not failures:
            return work.verdict
        if self._ordered:
            return self._hold_or_fold(work, failures)
        verdict = work.verdict.fold(failures)
        if verdict.paused and len(verdict.paused) >= len(work.calls):
            verdict.ran = False  # every run it asked for hit a dependency that is down
        return verdict

    def _hold_or_fold(self, work: Work, failures: list[HandlerResult]) -> Verdict:
        """Failed ordered runs with attempts left: hold the message to run them again in its lane (the attempt
        counted up), the other failures kept for later; else fold everything, as for any message."""
        verdict = work.verdict
        if any(failure.paused for failure in failures):  # the dependency is down: given back, not held
            return verdict.fold(failures)
        if not work.held_since:
            work.held_since = time.monotonic()
        again, rest, delay = ordered_failures(self._settings, self._ordered, failures, verdict.attempt,
                                              work.held_since, work.delivery.properties.message_id)
        if not again:
            return verdict.fold(rest)
        work.earlier = rest
        names = {failure.handler for failure in again}
        work.calls = [call for call in work.calls if call[0].sub.name in names]
        verdict.attempt += 1
        if work.info is not None:
            work.info = verdict.info = replace(work.info, attempt=verdict.attempt)
            info = work.info
            work.calls = [(step, (args[0], info) if len(args) == 2 else args, argument)
                          for step, args, argument in work.calls]
        verdict.held_for, verdict.again = delay, work
        return verdict

    def run(self, work: Work, call: Call) -> HandlerResult | None:
        """One handler run of the message: None when it returned, else how it failed."""
        step, args, argument = call
        sub, handler = step.sub, step.handler
        verdict, message_id = work.verdict, work.delivery.properties.message_id
        if sub.is_async:
            handler = self._awaited(handler, sub.time_limit)
        elif sub.time_limit is not None and self.run_timed is not None:
            handler = self._timed(handler, sub.time_limit, sub.name, work.delivery)
        if sub.idempotent:
            handler, args = self._run_once, (sub, handler, work, args)
        if not work.middleware:
            return run_handler(sub, handler, args, verdict.routing_key, verdict.attempt, step.max_attempts,
                               message_id)
        assert work.info is not None
        context = HandlerContext(sub.name, work.info, argument, self._settings.model_exchange, self._queue,
                                 work.delivery.tag & _TAG_MASK)
        return run_observed(work.middleware, context, sub, handler, args, verdict.routing_key, verdict.attempt,
                            step.max_attempts, message_id)

    def _awaited(self, handler: Callable[..., Any], time_limit: float | None) -> Callable[..., object]:
        """An ``async def`` handler as a plain call for the handler thread: it runs on the event loop of
        the ``AsyncPubSub`` that consumes, and the thread waits for it (so ``concurrency`` still bounds it)."""
        await_on_loop = self._await_on_loop
        if await_on_loop is None:  # PubSub refuses async handlers before consuming: never reached
            raise ConfigurationError("an async handler needs an event loop: consume with pubsubpy.aio.AsyncPubSub")

        def call(*args: Any) -> object:
            return await_on_loop(handler(*args), time_limit)

        return call

    def _timed(self, handler: Callable[..., Any], limit: float, name: str, owner: Delivery) -> Callable[..., object]:
        """A ``time_limit=`` handler as a call that fails with ``TimeLimitExceeded`` past the limit."""
        run_timed = self.run_timed
        assert run_timed is not None

        def call(*args: Any) -> object:
            return run_timed(lambda: handler(*args), limit, name, owner)

        return call

    def _run_once(self, sub: Subscription, handler: Callable[..., object], work: Work,
                  args: tuple[Any, ...]) -> None:
        """An idempotent subscription's run: through the inbox, once per (message id, handler); an ordered
        one also through the stale guard."""
        if self._inbox is None:  # PubSub checks this before consuming; here only for the type checker
            raise ConfigurationError(f"handler {sub.name} is idempotent=True but no Inbox is configured")
        message_id = work.delivery.properties.message_id
        if sub.ordered and message_id and run_guarded(self._inbox, sub.name, work.delivery, work.verdict,
                                                      lambda: handler(*args)):
            return
        if not message_id:
            log.warning("handler %s is idempotent but this message has no message_id: it cannot be deduplicated "
                        "and runs without the inbox", sub.name,
                        extra=log_fields(None, "", sub.name, 0, "not_deduplicated"))
            handler(*args)
            return
        if not self._inbox.run_once(message_id, sub.name, lambda: handler(*args)):
            log.info("handler %s already handled message %s: duplicate skipped", sub.name, message_id,
                     extra=log_fields(message_id, "", sub.name, 0, "duplicate_skipped"))

    @staticmethod
    def info(delivery: Delivery, verdict: Verdict, version: int) -> MessageInfo:
        props = delivery.properties
        headers = props.headers
        return MessageInfo(props.message_id, verdict.routing_key, verdict.attempt, delivery.redelivered,
                           dict(headers), _timestamp(props.timestamp), props.type, props.app_id, version,
                           props.correlation_id, key_from(headers), sequence_from(headers))


def _timestamp(seconds: int | None) -> dt.datetime | None:
    """The AMQP timestamp as a datetime; one no calendar can hold (a foreign publisher's 2**63) is None."""
    if not seconds:
        return None
    try:
        return dt.datetime.fromtimestamp(seconds, dt.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None
