"""A small billing service, used by the README's CLI walkthrough.

    pubsubpy drain --app examples.billing:app
    pubsubpy dlq list --app examples.billing:app
"""

from __future__ import annotations

import os

from pubsubpy import MessageInfo, ModelEvent, PubSub, Reject


class BookingPaid(ModelEvent, model="shop.models.Booking", event="paid"):
    id: int
    amount_cents: int


app = PubSub(
    os.environ.get("PUBSUBPY_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"),
    model_exchange="shop",
    service_name="billing",
    max_attempts=3,
    retry_delay=0,
)


@app.subscribe("Booking.paid")
def invoice(event: BookingPaid, info: MessageInfo) -> None:
    if event.amount_cents < 0:
        raise ValueError(f"negative amount {event.amount_cents}")
    if event.amount_cents == 0:
        raise Reject("free bookings are not invoiced")
    print(f"invoiced booking {event.id}: {event.amount_cents / 100:.2f} EUR (attempt {info.attempt})")
