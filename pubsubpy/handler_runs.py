"""One handler's run on one message, and how the runs of a message fold into its verdict.

Each matching handler runs once per delivery, whatever the others do: one
handler's ``Reject`` or exhausted retries never keeps another from running.
``fold`` is the one place that turns the runs into the message's outcome:

- every run returned                  -> handled (``fold`` is not even called)
- some raised with attempts left      -> a retry copy aimed at just those handlers
- some raised ``Reject``, or raised on their last attempt
                                      -> a dead letter naming just those handlers,
                                         reason ``rejected`` when every one of them
                                         rejected, else ``handler_error``
A message can need both a retry copy and a dead letter (one handler out of
attempts, another with attempts left); each copy names its own handlers.
"""

from __future__ import annotations

import enum
import inspect
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pubsubpy.errors import ConfigurationError, Reject
from pubsubpy.middleware import HANDLED, HandlerContext, HandlerResult, Middleware, MiddlewareChain
from pubsubpy.outcomes import Outcome, Reason
from pubsubpy.router import Subscription

__all__ = ["HandlerRun", "RunResult", "describe", "result_of", "run_handler", "run_observed"]

log = logging.getLogger("pubsubpy.drain")

ERROR_TEXT_LIMIT = 1000


class RunResult(str, enum.Enum):
    RETRY = "retry"          # raised; attempts left
    EXHAUSTED = "exhausted"  # raised on its last attempt
    REJECTED = "rejected"    # raised Reject


@dataclass(frozen=True, slots=True)
class HandlerRun:
    subscription: Subscription
    result: RunResult
    error: str | None = None


def describe(exc: BaseException) -> str:
    try:
        text = str(exc)
    except Exception:  # an exception whose __str__ fails must not take the drain down with it
        text = "<str() of this exception failed>"
    return f"{type(exc).__name__}: {text}"[:ERROR_TEXT_LIMIT]


def log_fields(message_id: str | None, routing_key: str, handler: str | None, attempt: int,
               outcome: str) -> dict[str, Any]:
    """The ``extra`` of every per-message log line, for JSON formatters and structlog."""
    return {"message_id": message_id, "routing_key": routing_key, "handler": handler, "attempt": attempt,
            "outcome": outcome}


def run_handler(sub: Subscription, call: Callable[..., object], args: tuple[Any, ...], routing_key: str,
                attempt: int, max_attempts: int, message_id: str | None = None) -> HandlerRun | None:
    """Call ``call(*args)`` (``sub.handler``, or a wrapper running it); None when it returned, else how it failed.
    A failure with attempts left is logged at INFO (it will be retried), a last one or a Reject at WARNING."""
    try:
        _returned(sub, call(*args))
    except Exception as exc:
        return _failed(sub, exc, routing_key, attempt, max_attempts, message_id)
    return None


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


def run_observed(middleware: Sequence[Middleware], context: HandlerContext, sub: Subscription,
                 call: Callable[..., object],
                 args: tuple[Any, ...], routing_key: str, attempt: int, max_attempts: int,
                 message_id: str | None) -> HandlerRun | None:
    """``run_handler`` inside the middleware's ``handle`` methods. An exception a middleware raises
    fails the run as the handler's own would."""
    failures: list[HandlerRun] = []

    def run() -> HandlerResult:
        try:
            _returned(sub, call(*args))
        except Exception as exc:
            failure = _failed(sub, exc, routing_key, attempt, max_attempts, message_id)
            failures.append(failure)
            return result_of(failure, exc)
        return HANDLED

    try:
        MiddlewareChain.handle(middleware, context, run)
    except Exception as exc:
        if not failures:
            return _failed(sub, exc, routing_key, attempt, max_attempts, message_id)
    return failures[-1] if failures else None


def result_of(failure: HandlerRun, exc: BaseException | None = None) -> HandlerResult:
    if failure.result is RunResult.RETRY:
        return HandlerResult(Outcome.RETRIED, None, exc)
    reason = Reason.REJECTED if failure.result is RunResult.REJECTED else Reason.HANDLER_ERROR
    return HandlerResult(Outcome.DEAD_LETTERED, reason, exc)


def _failed(sub: Subscription, exc: Exception, routing_key: str, attempt: int, max_attempts: int,
            message_id: str | None) -> HandlerRun:
    if isinstance(exc, Reject):
        log.warning("handler %s rejected %s (%s): %s", sub.name, message_id, routing_key, describe(exc),
                    extra=log_fields(message_id, routing_key, sub.name, attempt, RunResult.REJECTED.value))
        return HandlerRun(sub, RunResult.REJECTED, describe(exc))
    result = RunResult.EXHAUSTED if attempt >= max_attempts else RunResult.RETRY
    text = describe(exc)
    level = logging.WARNING if result is RunResult.EXHAUSTED else logging.INFO
    if log.isEnabledFor(level):
        log.log(level, "handler %s failed on %s %s (attempt %d of %d): %s", sub.name, routing_key, message_id,
                attempt, max_attempts, text, extra=log_fields(message_id, routing_key, sub.name, attempt, result.value))
    return HandlerRun(sub, result, text)


@dataclass(frozen=True, slots=True)
class Folded:
    retry: list[Subscription]
    blamed: list[Subscription]
    reason: Reason | None
    error: str | None


def fold(runs: Sequence[HandlerRun]) -> Folded:
    """The verdict from the failed runs of one message (the handlers that returned are not listed)."""
    retry = [run.subscription for run in runs if run.result is RunResult.RETRY]
    dead = [run for run in runs if run.result in (RunResult.EXHAUSTED, RunResult.REJECTED)]
    reason: Reason | None = None
    if dead:
        rejected = all(run.result is RunResult.REJECTED for run in dead)
        reason = Reason.REJECTED if rejected else Reason.HANDLER_ERROR
    failing = dead or [run for run in runs if run.result is RunResult.RETRY]
    if len(failing) == 1:
        error = failing[0].error
    elif failing:
        error = "; ".join(f"{run.subscription.name}: {run.error}" for run in failing)[:ERROR_TEXT_LIMIT]
    else:
        error = None
    return Folded(retry, [run.subscription for run in dead], reason, error)
