"""Checked by mypy --strict from a user's point of view (not run by pytest)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Literal

from typing_extensions import assert_type

import pubsubpy
from pubsubpy import DeadLetter, DrainResult, MessageInfo, ModelEvent, PubSub
from pubsubpy.topics import TopicTrie, topic_matches


class BookingUpdated(ModelEvent, model="shop.models.Booking", event="updated", register=False):
    id: int
    status: str


class BookingCreated(ModelEvent, model="shop.models.Booking", event="created", version=2, register=False):
    id: int


app = PubSub("memory://", service_name="billing", schemas=[BookingUpdated, BookingCreated])


@app.subscribe("Booking.*", max_attempts=5)
def on_booking(event: BookingUpdated | BookingCreated, info: MessageInfo) -> None:
    assert_type(info.attempt, int)
    assert_type(info.routing_key, str)


@pubsubpy.subscribe("#")
def on_anything(event: ModelEvent) -> int:
    return 1


# The decorator returns the function unchanged: its signature survives (were it Any, these
# ignores would be unused, and --strict's warn_unused_ignores would fail the check).
same: Callable[[BookingUpdated | BookingCreated, MessageInfo], None] = on_booking
on_booking("not an event", None)  # type: ignore[arg-type]
assert_type(on_anything(BookingCreated(id=1)), int)

message_id: str = app.publish_model_event("shop.models.Booking", "updated", BookingUpdated(id=1, status="paid"))
ids: list[str] = app.publish_many([("shop.models.Booking", "created", {"id": 2})])
result = app.drain(max_messages=10, timeout=5.0)
assert_type(result, DrainResult)
handled: int = result.handled + result.retried + result.dead_lettered
reasons: dict[str, int] = result.reasons
letters = app.list_dead_letters(reason="handler_error", limit=10)
assert_type(letters, list[DeadLetter])
body: bytes = letters[0].body if letters else b""
replayed: list[str] = app.replay_dead_letters([m.message_id for m in letters])
purged: list[str] = app.purge_dead_letters()

trie: TopicTrie[str] = TopicTrie()
trie.add("Booking.#", "bookings")
assert_type(trie.match("Booking.updated"), list[str])
matched: bool = topic_matches("a.#", "a")

# init() and PubSub(...) take the settings as typed keyword arguments: a typo or a wrong type is a mypy error.
typed = PubSub("memory://", service_name="billing", max_attempts=5, queue_type="quorum", unknown_key_window=60.0)
PubSub("memory://", max_atempts=5)  # type: ignore[call-arg]
PubSub("memory://", queue_type="fast")  # type: ignore[arg-type]
pubsubpy.init(prefetch="many")  # type: ignore[arg-type]
stale: list[str] = typed.stale_bindings(timeout=5.0)
pubsubpy.declare(prune=True)
count: int = pubsubpy.dead_letter_count(timeout=5.0)

# Versions: publish a given version; handlers can read which version arrived.
version_sent: str = app.publish_model_event("shop.models.Booking", "updated", {"id": 1, "status": "x"}, version=1)
schema_version: int = MessageInfo("m", "Booking.updated", 1, False, {}, None, None, None).schema_version


class Audit(pubsubpy.Middleware):
    def publish(self, context: pubsubpy.PublishContext, send: Callable[[], list[str]]) -> list[str]:
        assert_type(context.stage, Literal["send", "outbox", "relay"])
        return send()

    def handle(self, context: pubsubpy.HandlerContext, run: Callable[[], pubsubpy.HandlerResult]
               ) -> pubsubpy.HandlerResult:
        result = run()
        assert_type(result.exception, BaseException | None)
        assert_type(context.message, MessageInfo)
        return result

    def after_message(self, context: pubsubpy.MessageContext) -> None:
        assert_type(context.handlers_ran, bool)


audited = PubSub("memory://", service_name="audit", middleware=[Audit()], telemetry=False)


# asyncio: the same names, as coroutines; async def handlers are accepted.
async def async_service() -> None:
    from pubsubpy.aio import AsyncPubSub

    async with AsyncPubSub("memory://", service_name="aio", prefetch=10) as aio:

        @aio.subscribe("Booking.*")
        async def on_booking_async(event: BookingUpdated, info: MessageInfo) -> None: ...

        sent: str = await aio.publish_model_event("shop.models.Booking", "updated", {"id": 1, "status": "x"})
        many: list[str] = await aio.publish_many([("shop.models.Booking", "updated", {"id": 2, "status": "y"})])
        drained: DrainResult = await aio.drain(timeout=5.0, concurrency=4)
        stop = asyncio.Event()
        ran: DrainResult = await aio.run(concurrency=2, stop=stop)
        letters_async: list[pubsubpy.DeadLetter] = await aio.list_dead_letters(limit=10)
        assert_type(await aio.dead_letter_count(), int)
        await aio.declare(prune=False)
        AsyncPubSub("memory://", max_atempts=5)  # type: ignore[call-arg]
        print(sent, many, drained, ran, letters_async)
    facade_sent: str = await pubsubpy.apublish_model_event("shop.models.Booking", "updated", {"id": 3, "status": "z"})
    print(facade_sent)


class DownstreamUnavailable(Exception):
    pass


@app.subscribe("Booking.*", ordered=True, idempotent=True, pause_on=DownstreamUnavailable,
               dead_letter_on=(LookupError, PermissionError), retry_on=ConnectionError, time_limit=30)
def on_booking_in_order(event: BookingUpdated, info: MessageInfo) -> None:
    key: str | None = info.key
    sequence: int | None = info.sequence
    print(key, sequence)


app.subscribe("Booking.*", time_limit="30")  # type: ignore[arg-type]
app.subscribe("Booking.*", pause_on="oops")  # type: ignore[arg-type]
keyed: str = app.publish_model_event("shop.models.Booking", "updated", {"id": 1, "status": "x"}, key=1)
skipped_stale: int = app.drain().stale
given_back: int = app.drain().paused
guard: pubsubpy.OrderedInbox | None = None
limit_error: type[pubsubpy.PubSubError] = pubsubpy.TimeLimitExceeded
