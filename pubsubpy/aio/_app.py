"""``AsyncPubSub``: the same typed events from asyncio code, with the same semantics as ``PubSub``.

An ``AsyncPubSub`` wraps a ``PubSub`` and shares everything with it: settings, schema registry,
router, engine, envelope and transport. Only waiting differs:

- publishing encodes and validates on the loop (a bad payload raises at once), then hands the
  message to one publishing thread that sends whatever is waiting as a confirmed batch
  (``_batching.py``); with publishing middleware (telemetry) or an outbox each publish goes through
  a thread of the loop's executor in the caller's context instead, so spans and transactions stay
  the caller's.
- ``drain()`` and ``run()`` consume on a thread of their own, where pika keeps the connection alive
  (heartbeats) however long handlers take. ``async def`` handlers run on this loop; plain ``def``
  handlers on the handler threads, so neither blocks the loop; ``concurrency`` bounds both.
- ``run()`` installs no signal handlers: set its ``stop`` event, or cancel it. Either way no new
  message starts, running handlers finish and are acked (up to ``shutdown_timeout``).
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, TypeVar

from typing_extensions import Self

from pubsubpy.aio._batching import PublishBatcher
from pubsubpy.aio._handoff import LoopHandoff
from pubsubpy.aio._methods import AsyncMethods
from pubsubpy.aio._threads import start_thread
from pubsubpy.app import PubSub, check_drain
from pubsubpy.errors import ConfigurationError
from pubsubpy.messages import DrainResult
from pubsubpy.publisher import EventSpec
from pubsubpy.router import Router
from pubsubpy.schemas import SchemaRegistry
from pubsubpy.settings import Settings
from pubsubpy.transports.base import OutgoingMessage, Transport

__all__ = ["AsyncPubSub"]

F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")


class AsyncPubSub(AsyncMethods):
    """``PubSub``'s constructor arguments and methods, as coroutines (``close`` is ``aclose``).

    ```python
    bus = AsyncPubSub(service_name="bookings-api")        # URL from $PUBSUBPY_URL

    @bus.subscribe("Booking.created")
    async def confirm(event: BookingCreated) -> None:     # async def or def
        await notify(event.guest)

    message_id = await bus.publish_model_event("shop.models.Booking", "created", {"id": 1, "guest": "Ada"})
    await bus.run(concurrency=8, stop=stop_event)
    ```

    It wraps a ``PubSub`` (``.sync``) and shares everything with it: subscriptions, schemas, settings,
    transport, retries, dead letters and bounded waits; only the waiting moves off the event loop.
    ``async def`` handlers run on the loop that called ``drain``/``run``, plain ``def`` handlers on
    pubsubpy's threads. ``async with AsyncPubSub(...) as bus:`` closes it at the end.

    Args:
        amqp_url: as ``PubSub``.
        schemas: as ``PubSub``.
        transport: as ``PubSub``.
        inbox: as ``PubSub``.
        publishes: as ``PubSub``.
        middleware: as ``PubSub``.
        **options: the fields of ``Settings``.

    Raises:
        ConfigurationError: an unknown option or a bad value.
    """

    @classmethod
    def of(cls, app: PubSub) -> AsyncPubSub:
        """The async view of an existing ``PubSub`` (one per instance: ``pubsubpy.apublish_model_event``
        uses the default instance's)."""
        view = app.async_view
        if not isinstance(view, AsyncPubSub):
            view = cls.__new__(cls)
            view._attach(app)
        return view

    def _attach(self, app: PubSub) -> None:
        self.sync = app  # the PubSub underneath: the same subscriptions, settings and transport
        self._batcher = PublishBatcher(functools.partial(app.deliver, batch=True),
                                       unroutable_raises=app.settings.on_unroutable == "raise")
        app.async_view = self

    # -- what PubSub has -------------------------------------------------------------
    @property
    def settings(self) -> Settings:
        """The wrapped ``PubSub``'s settings."""
        return self.sync.settings

    @property
    def registry(self) -> SchemaRegistry:
        """The wrapped ``PubSub``'s schemas."""
        return self.sync.registry

    @property
    def router(self) -> Router:
        """The wrapped ``PubSub``'s subscriptions."""
        return self.sync.router

    @property
    def transport(self) -> Transport:
        """The wrapped ``PubSub``'s transport."""
        return self.sync.transport

    def __repr__(self) -> str:
        return f"Async{self.sync!r}"

    # -- publishing ------------------------------------------------------------------
    async def publish_model_event(self, model: str, event: str, obj: Any, *, version: int | None = None,
                                  headers: Mapping[str, str | int | bool] | None = None,
                                  correlation_id: str | None = None, key: object | None = None) -> str:
        """As ``PubSub.publish_model_event``: returns the message id once the broker confirmed it.

        Within ``connect_timeout + confirm_timeout`` it confirms or raises, whatever the broker does. The
        payload is validated in this coroutine (a bad one raises at once); concurrent publishes go out
        together as one confirmed batch, each caller settled with its own outcome. The arguments and errors
        are ``PubSub.publish_model_event``'s."""
        message = self.sync.publisher.encode(model, event, obj, version, headers, correlation_id, key)
        if self._in_callers_context():
            return (await self._deliver_in_thread([message], batch=False))[0]
        return await self._batcher.publish(message)

    async def publish_many(self, events: Iterable[EventSpec]) -> list[str]:
        """As ``PubSub.publish_many``: all validated first, then sent as one confirmed batch."""
        messages = self.sync.publisher.encode_many(events)
        if not messages:
            return []
        return await self._deliver_in_thread(messages, batch=True)

    def _in_callers_context(self) -> bool:
        """Whether a publish must run in the caller's context: an outbox (the caller's transaction) or
        publishing middleware (the caller's span is the parent)."""
        chain = self.sync.middleware
        return self.sync.outbox is not None or bool(chain is not None and chain.publishers())

    async def _deliver_in_thread(self, messages: list[OutgoingMessage], *, batch: bool) -> list[str]:
        deliver = functools.partial(self.sync.deliver, messages, batch=batch)
        if self.sync.outbox is not None:
            from asgiref.sync import sync_to_async  # the outbox is Django's; asgiref comes with it

            return await sync_to_async(deliver)()  # the ORM's thread for this request: its transaction
        return await asyncio.to_thread(deliver)

    # -- consuming -------------------------------------------------------------------
    async def drain(
        self,
        *,
        max_messages: int | None = None,
        timeout: float = 60.0,
        concurrency: int = 1,
        on_message: Callable[[DrainResult], None] | None = None,
    ) -> DrainResult:
        """As ``PubSub.drain``; ``async def`` handlers run on this loop. Cancelled, it stops as ``run()`` does.

        The arguments, result and errors are ``PubSub.drain``'s; the consuming happens on a thread of its own,
        so the loop stays free."""
        check_drain(max_messages, timeout, concurrency)
        loop = asyncio.get_running_loop()
        halt = threading.Event()
        work = functools.partial(self.sync.drain_with, LoopHandoff(loop), max_messages=max_messages, timeout=timeout,
                                 concurrency=concurrency, on_message=on_message, stop=halt)
        consuming = start_thread(work, "pubsubpy-drain")
        try:
            return await asyncio.shield(consuming)
        except asyncio.CancelledError:  # as run(): no new message starts, running handlers finish and are acked
            halt.set()
            await asyncio.shield(consuming)
            raise

    async def run(self, concurrency: int = 1, stop: asyncio.Event | threading.Event | None = None) -> DrainResult:
        """Consume until ``stop`` is set or this coroutine is cancelled; then no new message starts and
        running handlers finish and are acked (up to ``shutdown_timeout``). No signal handlers.

        Args:
            concurrency: handlers in flight at once (``async def`` and ``def`` together).
            stop: an ``asyncio.Event`` or a ``threading.Event``; set it to stop.

        Returns:
            A ``DrainResult`` of what the worker did. A cancelled ``run()`` re-raises ``CancelledError``
            once running handlers have finished.

        Raises:
            ConfigurationError: as ``PubSub.run``.
        """
        if concurrency < 1:
            raise ConfigurationError(f"concurrency must be >= 1, got {concurrency}")
        halt = threading.Event()  # ours: a cancel never sets the caller's event (other workers may share it)
        loop = asyncio.get_running_loop()
        work = functools.partial(self.sync.run_with, LoopHandoff(loop), concurrency, halt, threading.Event(),
                                 signals=False)
        consuming = start_thread(work, "pubsubpy-worker")
        watcher = asyncio.ensure_future(_wait_for(stop)) if stop is not None else None
        if watcher is not None:
            watcher.add_done_callback(lambda _: halt.set())
        try:
            return await asyncio.shield(consuming)
        except asyncio.CancelledError:
            halt.set()
            await asyncio.shield(consuming)  # let running handlers finish (they may need this loop)
            raise
        finally:
            if watcher is not None:
                watcher.cancel()

    # -- lifecycle -------------------------------------------------------------------
    async def aclose(self) -> None:
        """Send what is waiting to be published, then close broker connections (reopened if used again)."""
        await asyncio.to_thread(self._batcher.close)
        await asyncio.to_thread(self.sync.close)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        traceback: TracebackType | None) -> None:
        await self.aclose()


_STOP_POLL = 0.1  # seconds between looks at a threading.Event stop from the loop


async def _wait_for(stop: asyncio.Event | threading.Event) -> None:
    """Return once ``stop`` is set (a threading.Event is polled: waiting on it would hold a thread)."""
    if isinstance(stop, asyncio.Event):
        await stop.wait()
        return
    while not stop.is_set():
        await asyncio.sleep(_STOP_POLL)
