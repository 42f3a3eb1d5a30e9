"""``async def`` handlers of a consuming ``AsyncPubSub``: their coroutines run on its event loop.

A handler thread hands a whole chunk's plain ``async def`` runs to the loop at
once (``dispatch_chunk``: one thread-to-loop round trip per chunk, not per
message) and folds what each raised with the same ``run_handler`` as any run.
A run wrapped by handler middleware (whose ``handle(context, run)`` is
synchronous, on the handler thread) or by an inbox is handed over on its own,
inside that wrapper (``Engine.run`` with ``await_on_loop``).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pubsubpy._consume.executor import ChunkWork
from pubsubpy._engine import AwaitOnLoop, Call, Engine, Item, Verdict, Work
from pubsubpy._engine.runs import run_handler
from pubsubpy.aio._threads import await_on, within
from pubsubpy.errors import HandlerCancelled

__all__ = ["LoopHandoff"]

log = logging.getLogger("pubsubpy.drain")

Raised = list[BaseException | None]  # what each async run of a message raised (None: it returned)


class LoopHandoff:
    """What a consumer needs to run ``async def`` handlers on ``loop`` (see ``consumer.LoopHandoff``)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.await_on_loop: AwaitOnLoop = await_on(loop)

    def chunk_work(self, engine: Engine) -> ChunkWork[Item, Verdict] | None:
        if not engine.has_async_handlers:
            return None
        return functools.partial(dispatch_chunk, engine, self.await_on_loop)


@dataclass(slots=True)
class _Batch:
    """A message's plain ``async def`` runs, for one hand-off to the loop."""

    index: int
    work: Work
    calls: list[Call]


def dispatch_chunk(engine: Engine, await_on_loop: AwaitOnLoop, items: Sequence[Item], may_start: Callable[[], bool],
                   each: Callable[[Callable[[], Any]], Any]) -> list[Verdict | None]:
    """``Engine.handle`` for a chunk of deliveries (or held messages run again), with every plain ``async def``
    run of the chunk awaited on the loop in one hand-off.

    ``each(work)`` runs one message's thread-side work in a context of its own (the pool's isolation and Django
    cleanup, per message). A message with async runs starts in the hand-off: it may still go back unstarted
    (None) when ``may_start()`` turns False before its turn, and its other runs happen after its async runs.
    The chunk's async runs go one after the other, so ``concurrency`` chunks still bound the handlers in flight.
    """
    results: list[Verdict | None] = []
    batched: list[_Batch] = []
    for index, item in enumerate(items):
        if not may_start():
            results.append(None)
            continue
        work: Work = item if isinstance(item, Work) else each(functools.partial(engine.prepare, item))
        on_loop = [c for c in work.calls if c[0].sub.is_async and not c[0].sub.idempotent and not work.middleware]
        if not on_loop:
            results.append(each(functools.partial(engine.run_all, work)))
            continue
        results.append(None)  # decided after the hand-off
        batched.append(_Batch(index, work, on_loop))
    if batched:
        try:
            outcomes = await_on_loop(_await_batches(batched, may_start), None)
        except Exception as exc:  # the loop closed or cancelled the hand-off: nothing of it ran
            log.warning("async handlers of %d message(s) did not run (%s); they go back to the queue",
                        len(batched), exc)
            outcomes = [None] * len(batched)
        for batch, raised in zip(batched, outcomes, strict=True):
            if raised is not None:
                results[batch.index] = each(functools.partial(_after_loop, engine, batch, raised))
    return results


async def _await_batches(batches: list[_Batch], may_start: Callable[[], bool]) -> list[Raised | None]:
    """Await each message's runs in turn, each run in its own copy of the context; per message what each
    run raised, or None for a message not started (the consumer is stopping, or the loop cancelled us).

    A run that ends in ``CancelledError`` (its own, or the loop's shutdown) fails as ``HandlerCancelled``
    (retried), and no later message of the chunk starts."""
    outcomes: list[Raised | None] = []
    cancelled = False
    for batch in batches:
        if cancelled or not may_start():
            outcomes.append(None)
            continue
        raised: Raised = []
        for step, args, _argument in batch.calls:
            if cancelled:
                raised.append(HandlerCancelled("not run: the event loop cancelled an earlier handler run"))
                continue
            try:
                coroutine = step.handler(*args)
                if step.sub.time_limit is not None:
                    coroutine = within(coroutine, step.sub.time_limit)
                await contextvars.copy_context().run(asyncio.ensure_future, coroutine)
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


def _after_loop(engine: Engine, batch: _Batch, raised: Raised) -> Verdict:
    """A message's verdict once its async runs happened: their outcomes, then its other runs."""
    work = batch.work
    verdict, message_id = work.verdict, work.delivery.properties.message_id
    failures = [failure for call, outcome in zip(batch.calls, raised, strict=True)
                if (failure := run_handler(call[0].sub, _replay, (outcome,), verdict.routing_key, verdict.attempt,
                                           call[0].max_attempts, message_id)) is not None]
    rest = [call for call in work.calls if not any(call is done for done in batch.calls)]
    return engine.run_all(work, rest, failures)
