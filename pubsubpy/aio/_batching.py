"""Concurrent ``await publish_model_event(...)`` calls, coalesced into confirmed batches.

Each awaiting task hands its encoded message to one publishing thread, which sends whatever is
waiting as one batch (pipelined, every message confirmed) and settles each task with its own
outcome: a ``PublishError`` names the messages it concerns (nacked, unroutable, unconfirmed), and
only those tasks raise; any other error fails the whole batch. Fifty tasks publishing at once thus
cost one confirm round trip, not fifty. A task cancelled while waiting does not unpublish its
message: it may still be sent and confirmed.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections import deque
from collections.abc import Callable

from pubsubpy.errors import PublishError, UnroutableMessage
from pubsubpy.transports.base import OutgoingMessage

__all__ = ["PublishBatcher"]

_MAX_BATCH = 500


class PublishBatcher:
    def __init__(self, deliver: Callable[[list[OutgoingMessage]], list[str]], name: str = "pubsubpy-publisher",
                 unroutable_raises: bool = False) -> None:
        self._deliver = deliver  # sends the batch, returns the message ids in order
        self._unroutable_raises = unroutable_raises  # on_unroutable="raise"
        self._name = name
        self._pending: deque[tuple[OutgoingMessage, concurrent.futures.Future[str]]] = deque()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._closing = False

    async def publish(self, message: OutgoingMessage) -> str:
        future: concurrent.futures.Future[str] = concurrent.futures.Future()
        with self._lock:
            self._pending.append((message, future))
            if self._thread is None:
                self._closing = False
                self._thread = threading.Thread(target=self._loop, name=self._name, daemon=True)
                self._thread.start()
        self._wake.set()
        return await asyncio.wrap_future(future)

    def _loop(self) -> None:
        while True:
            with self._lock:
                batch = [self._pending.popleft() for _ in range(min(len(self._pending), _MAX_BATCH))]
                if not batch:
                    if self._closing:
                        self._thread = None
                        return
                    self._wake.clear()
            if batch:
                self._send(batch)
            else:
                self._wake.wait()

    def _send(self, batch: list[tuple[OutgoingMessage, concurrent.futures.Future[str]]]) -> None:
        live = [(message, future) for message, future in batch if future.set_running_or_notify_cancel()]
        if not live:
            return
        try:
            ids = self._deliver([message for message, _ in live])
        except PublishError as exc:
            concerned = set(exc.message_ids)
            unroutable = set(getattr(exc, "unroutable", ())) if self._unroutable_raises else set()
            for message, future in live:
                message_id = message.properties.message_id or ""
                if not concerned or message_id in concerned:
                    future.set_exception(exc)
                elif message_id in unroutable:  # confirmed, but no queue took it: as a publish of its own
                    future.set_exception(UnroutableMessage(
                        f"message {message_id} ({message.routing_key}) was not routed to any queue", [message_id]))
                else:
                    future.set_result(message_id)
        except BaseException as exc:  # every task of the batch hears it
            for _, future in live:
                future.set_exception(exc)
        else:
            for (_, future), message_id in zip(live, ids, strict=True):
                future.set_result(message_id)

    def close(self) -> None:
        """Let the thread finish what is waiting, then end (a later publish starts a new one)."""
        with self._lock:
            self._closing = True
            thread = self._thread
        self._wake.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join()
