"""Middleware: code that runs around every publish and every handler run, and after every message.

Subclass ``Middleware``, override what you need, and pass instances as
``PubSub(middleware=[...])``. The library's own tracing and metrics
(``pubsubpy.telemetry``) are middleware too; they run outermost, so yours run
inside their spans. In list order, the first middleware is the outermost.

- ``publish(context, send)``: around sending ``context.messages``. Call ``send()``
  (it returns the message ids) and return what it returns; headers added to a
  message before ``send()`` travel with it. ``context.stage`` is ``"send"`` (to the
  broker, confirmed), ``"outbox"`` (written to the outbox in the caller's
  transaction; a relay sends them after the commit) or ``"relay"`` (the relay
  sending stored messages, headers as they were written).
- ``handle(context, run)``: around one handler's run on one message, on the
  handler's thread. ``run()`` never raises: it returns a ``HandlerResult`` saying
  what became of the run (``handled``, ``retried``, ``dead_lettered`` with a
  reason) and the exception, if any. An exception your ``handle`` raises fails
  the run as the handler's own would (it is retried, then dead-lettered).
- ``after_message(context)``: once per settled message, on the consumer's thread,
  after the broker has its outcome (acked; a retry or dead-letter copy confirmed).
  Exceptions here are logged and ignored: the message is already settled.

Publishing from inside ``handle`` is allowed (it goes through ``publish`` again).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pubsubpy.messages import HANDLED, HandlerResult, MessageInfo, Outcome, OutgoingMessage, Reason

__all__ = ["HANDLED", "HandlerContext", "HandlerResult", "MessageContext", "Middleware", "PublishContext"]

log = logging.getLogger("pubsubpy.middleware")

PublishStage = Literal["send", "outbox", "relay"]


@dataclass(slots=True)
class PublishContext:
    """One publish call: one message (``publish_model_event``) or a batch (``publish_many``, a relay batch)."""

    messages: Sequence[OutgoingMessage]
    """The encoded messages; add headers to ``message.properties.headers`` before ``send()``."""
    stage: PublishStage
    """``"send"`` (to the broker, confirmed), ``"outbox"`` (written to the outbox in the caller's
    transaction) or ``"relay"`` (the outbox relay sending stored messages, headers as written)."""
    batch: bool
    """``publish_many`` or a relay batch (even of one message)."""
    exchange: str
    """The exchange the messages go to."""
    unroutable: list[str] = field(default_factory=list)
    """Set by ``send()``: the ids of mandatory messages no queue took."""


@dataclass(frozen=True, slots=True)
class HandlerContext:
    """One handler about to run on one message."""

    handler: str
    """The subscription's name (``module.function``)."""
    message: MessageInfo
    """The message's metadata, as the handler gets it."""
    payload: Any
    """What the handler receives (the validated schema instance, or a dict)."""
    exchange: str
    """The exchange the event was published to."""
    queue: str
    """The service queue it was consumed from."""
    delivery_tag: int
    """The broker's delivery tag."""


@dataclass(frozen=True, slots=True)
class MessageContext:
    """A settled message: its outcome as the broker now has it."""

    message: MessageInfo
    """The message's metadata."""
    outcome: Outcome
    """What became of it."""
    reason: Reason | None
    """Why it was dead-lettered; None for the other outcomes."""
    error: str | None
    """The dead letter's or retry's error text."""
    exchange: str
    """The exchange the event was published to."""
    queue: str
    """The service queue it was consumed from."""
    handlers_ran: bool
    """False when it ended before any handler (a bad payload, an unknown key...)."""


class Middleware:
    """Your code around every publish and every handler run, and after every settled message.

    Subclass it, override any of the three methods (the defaults pass straight through), and pass instances
    as ``PubSub(middleware=[...])`` (Django: ``PUBSUBPY["MIDDLEWARE"]``, dotted paths of classes made with no
    arguments). In list order, the first is the outermost; the library's tracing and metrics run outside
    yours, so your code runs inside their spans. ``active()`` returning False skips the middleware for that
    call (the library's telemetry does, until an OpenTelemetry SDK is installed, so an application without
    one pays next to nothing).
    """

    def active(self) -> bool:
        """Whether to call this middleware now (checked per call). Default: True."""
        return True

    def publish(self, context: PublishContext, send: Callable[[], list[str]]) -> list[str]:
        """Around sending ``context.messages``: call ``send()`` and return what it returns (the message ids).

        Headers added to a message before ``send()`` travel with it. Runs for outbox writes and relay
        batches too (``context.stage``). Exceptions propagate to the publisher.
        """
        return send()

    def handle(self, context: HandlerContext, run: Callable[[], HandlerResult]) -> HandlerResult:
        """Around one handler's run on one message, on the handler's thread.

        ``run()`` never raises: it returns a ``HandlerResult`` saying what became of the run and the
        exception, if any. An exception raised here fails the run as the handler's own would (retried,
        then dead-lettered).
        """
        return run()

    def after_message(self, context: MessageContext) -> None:
        """Once per settled message, on the consumer's thread, after the broker has its outcome (acked, or
        a retry or dead-letter copy confirmed). Exceptions are logged and ignored."""
        return None


class MiddlewareChain:
    """The middleware of one ``PubSub``, each method called only on those that override it."""

    def __init__(self, middleware: Sequence[object]) -> None:
        for item in middleware:
            if not isinstance(item, Middleware):
                from pubsubpy.errors import ConfigurationError

                raise ConfigurationError(f"middleware {item!r} is not a pubsubpy.Middleware: subclass it and "
                                         "override publish, handle or after_message")
        self.middleware: tuple[Middleware, ...] = tuple(m for m in middleware if isinstance(m, Middleware))
        self._publishers = [m for m in self.middleware if type(m).publish is not Middleware.publish]
        self._handlers = [m for m in self.middleware if type(m).handle is not Middleware.handle]
        self._observers = [m for m in self.middleware if type(m).after_message is not Middleware.after_message]
        self.observes_messages = bool(self._observers)
        self.wraps_handlers = bool(self._handlers)

    def publishers(self) -> list[Middleware]:
        return [m for m in self._publishers if m.active()]

    def handlers(self) -> list[Middleware]:
        return [m for m in self._handlers if m.active()]

    def observers(self) -> list[Middleware]:
        return [m for m in self._observers if m.active()]

    @staticmethod
    def publish(items: Sequence[Middleware], context: PublishContext, send: Callable[[], list[str]]) -> list[str]:
        for item in reversed(items):
            send = functools.partial(item.publish, context, send)
        return send()

    @staticmethod
    def handle(items: Sequence[Middleware], context: HandlerContext, run: Callable[[], HandlerResult]
               ) -> HandlerResult:
        for item in reversed(items):
            run = functools.partial(item.handle, context, run)
        return run()

    @staticmethod
    def after_message(items: Sequence[Middleware], context: MessageContext) -> None:
        for item in items:
            try:
                item.after_message(context)
            except Exception:
                log.exception("middleware %r failed in after_message for %s (ignored: the message is settled)",
                              item, context.message.message_id)
