"""Found by pubsubpy.contrib.django at start-up (like Celery's tasks modules)."""

from __future__ import annotations

from shop_events import BookingCreated, BookingDeleted, BookingUpdated

import pubsubpy
from invoices.models import Invoice
from pubsubpy import MessageInfo


@pubsubpy.subscribe("Booking.*")
def keep_invoice(event: BookingCreated | BookingUpdated | BookingDeleted, info: MessageInfo) -> None:
    if isinstance(event, BookingDeleted):
        Invoice.objects.filter(booking_id=event.id).update(status="void")
        return
    # update_or_create keyed on the booking: a redelivered event is harmless (at-least-once)
    Invoice.objects.update_or_create(
        booking_id=event.id,
        defaults={"guest": event.guest, "amount_cents": event.amount_cents, "status": event.status,
                  "message_id": info.message_id or ""},
    )
