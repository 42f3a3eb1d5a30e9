"""FastAPI with typed events: an endpoint publishes, a consumer started by the app's lifespan handles.

    pip install pubsubpy-events fastapi uvicorn
    PUBSUBPY_URL=amqp://guest:guest@127.0.0.1:5672/%2F uvicorn examples.fastapi_app:api
    curl -X POST localhost:8000/bookings -H 'content-type: application/json' -d '{"id": 1, "guest": "Ada"}'
    curl localhost:8000/confirmations

The consumer may run in the web process (``CONSUME_IN_WEB=1``, the default here, for a small
service) or on its own: ``pubsubpy worker --app examples.fastapi_app:bus`` (the same subscriptions;
``async def`` handlers run on the worker's event loop).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from pydantic import BaseModel

from pubsubpy import ModelEvent
from pubsubpy.aio import AsyncPubSub

BOOKING = "shop.models.Booking"


class BookingCreated(ModelEvent, model=BOOKING, event="created", register=False):
    id: int
    guest: str


bus = AsyncPubSub(  # no URL: $PUBSUBPY_URL, else memory:// (an in-process broker, for a first try)
    schemas=[BookingCreated],
    service_name=os.environ.get("SERVICE_NAME", "bookings-api"),
    model_exchange=os.environ.get("MODEL_EXCHANGE", "models"),
)
confirmations: list[str] = []  # what the handler did; a real service would write to its database


@bus.subscribe("Booking.created")
async def confirm(event: BookingCreated) -> None:
    await asyncio.sleep(0)  # an awaitable call: an HTTP client, an async database driver...
    confirmations.append(f"booking {event.id} for {event.guest} confirmed")


@asynccontextmanager
async def lifespan(_api: FastAPI) -> AsyncIterator[None]:
    await bus.declare()  # deploy-time work, here at start-up: the queue exists before the first publish
    stop = asyncio.Event()
    consumer = asyncio.create_task(bus.run(concurrency=8, stop=stop)) if os.environ.get(
        "CONSUME_IN_WEB", "1") == "1" else None
    try:
        yield
    finally:
        stop.set()  # no new message starts; running handlers finish and are acked
        if consumer is not None:
            await consumer
        await bus.aclose()


api = FastAPI(lifespan=lifespan)


class BookingIn(BaseModel):
    id: int
    guest: str


@api.post("/bookings", status_code=202)
async def create_booking(booking: BookingIn) -> dict[str, str]:
    message_id = await bus.publish_model_event(BOOKING, "created", booking)  # validated, then confirmed
    return {"message_id": message_id}


@api.get("/confirmations")
async def list_confirmations() -> list[str]:
    return confirmations
