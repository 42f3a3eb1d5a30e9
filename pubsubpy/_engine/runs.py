"""One handler's run on one message: call it, and say what became of it as a ``HandlerResult``.

``run_handler`` is the plain way (the drain's hot path: ``None`` when the handler
returned); ``run_observed`` runs the same inside the middleware's ``handle``
methods. A failure with attempts left is logged at INFO (it will be retried), a
last one or a ``Reject`` at WARNING.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from typing import Any

from pubsubpy._engine.verdict import describe
from pubsubpy.errors import ConfigurationError, Reject, TimeLimitExceeded
from pubsubpy.messages import HANDLED, HandlerResult, Outcome, Reason
from pubsubpy.middleware import HandlerContext, Middleware, MiddlewareChain
from pubsubpy.router import Subscription

__all__ = ["log_fields", "run_handler", "run_observed"]

log = logging.getLogger("pubsubpy.drain")


def log_fields(message_id: str | None, routing_key: str, handler: str | None, attempt: int,
               outcome: str) -> dict[str, Any]:
    """The ``extra`` of every per-message log line, for JSON formatters and structlog."""
    return {"message_id": message_id, "routing_key": routing_key, "handler": handler, "attempt": attempt,
            "outcome": outcome}


def run_handler(sub: Subscription, call: Callable[..., object], args: tuple[Any, ...], routing_key: str,
                attempt: int, max_attempts: int, message_id: str | None = None) -> HandlerResult | None:
    """Call ``call(*args)`` (``sub.handler``, or a wrapper running it); None when it returned, else how it failed."""
    try:
        _returned(sub, call(*args))
    except Exception as exc:
        return _failed(sub, exc, routing_key, attempt, max_attempts, message_id)
    return None


def run_observed(middleware: Sequence[Middleware], context: HandlerContext, sub: Subscription,
                 call: Callable[..., object], args: tuple[Any, ...], routing_key: str, attempt: int,
                 max_attempts: int, message_id: str | None) -> HandlerResult | None:
    """``run_handler`` inside the middleware's ``handle`` methods. An exception a middleware raises
    fails the run as the handler's own would."""
    failures: list[HandlerResult] = []

    def run() -> HandlerResult:
        try:
            _returned(sub, call(*args))
        except Exception as exc:
            failure = _failed(sub, exc, routing_key, attempt, max_attempts, message_id)
            failures.append(failure)
            return failure
        return HANDLED

    try:
        MiddlewareChain.handle(middleware, context, run)
    except Exception as exc:
        if not failures:
            return _failed(sub, exc, routing_key, attempt, max_attempts, message_id)
    return failures[-1] if failures else None


def _returned(sub: Subscription, result: object) -> None:
    """A plain function that returned an awaitable (an ``async def`` behind a decorator pubsubpy cannot see
    through) did not run its work: a failed run, never an ack."""
    if result is not None and inspect.isawaitable(result):  # handlers return None: skip the check then
        close = getattr(result, "close", None)
        if callable(close):
            close()  # no "never awaited" warning: the error below says it
        raise ConfigurationError(
            f"handler {sub.name} returned an awaitable instead of running: declare it `async def` (a decorator "
            "around it must keep it a coroutine function, e.g. with functools.wraps on an async wrapper) and "
            "consume with pubsubpy.aio.AsyncPubSub")


def _failed(sub: Subscription, exc: Exception, routing_key: str, attempt: int, max_attempts: int,
            message_id: str | None) -> HandlerResult:
    """A failed run's result, by the subscription's policy, matched in this order: ``pause_on`` (the
    dependency is down: the message goes back and the consumer pauses), ``Reject`` and ``dead_letter_on``
    (dead-lettered at once, ``rejected``), then ``retry_on`` and anything else (retried while attempts are
    left)."""
    if sub.pause_on and isinstance(exc, sub.pause_on):
        log.info("handler %s on %s %s: its dependency is down (%s): the message goes back, the consumer pauses",
                 sub.name, routing_key, message_id, describe(exc),
                 extra=log_fields(message_id, routing_key, sub.name, attempt, "paused"))
        return HandlerResult(Outcome.RETRIED, None, exc, sub.name, paused=True)
    if isinstance(exc, Reject) or (sub.dead_letter_on and isinstance(exc, sub.dead_letter_on)):
        log.warning("handler %s rejected %s (%s): %s", sub.name, message_id, routing_key, describe(exc),
                    extra=log_fields(message_id, routing_key, sub.name, attempt, Reason.REJECTED.value))
        return HandlerResult(Outcome.DEAD_LETTERED, Reason.REJECTED, exc, sub.name)
    if attempt >= max_attempts:
        reason = Reason.TIME_LIMIT if isinstance(exc, TimeLimitExceeded) else Reason.HANDLER_ERROR
        result = HandlerResult(Outcome.DEAD_LETTERED, reason, exc, sub.name)
        level, word = logging.WARNING, "exhausted"
    else:
        result = HandlerResult(Outcome.RETRIED, None, exc, sub.name)
        level, word = logging.INFO, "retry"
    if log.isEnabledFor(level):
        log.log(level, "handler %s failed on %s %s (attempt %d of %d): %s", sub.name, routing_key, message_id,
                attempt, max_attempts, describe(exc),
                extra=log_fields(message_id, routing_key, sub.name, attempt, word))
    return result
