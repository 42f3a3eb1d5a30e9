"""Found by pubsubpy.contrib.django at start-up (like Celery's tasks modules)."""

from __future__ import annotations

from shop_events import BookingCreated, BookingDeleted, BookingUpdated

import pubsubpy
from invoices.models import Invoice, InvoiceEvent
from pubsubpy import MessageInfo


# idempotent=True: the inbox records each message id in the same transaction as the writes below,
# so a redelivered or re-sent event (at-least-once) never writes twice.
@pubsubpy.subscribe("Booking.*", idempotent=True)
def keep_invoice(event: BookingCreated | BookingUpdated | BookingDeleted, info: MessageInfo) -> None:
    name = info.routing_key.rsplit(".", 1)[-1]
    if isinstance(event, BookingDeleted):
        InvoiceEvent.objects.create(booking_id=event.id, event=name, status="void", message_id=info.message_id or "")
        Invoice.objects.filter(booking_id=event.id).update(status="void")
        return
    InvoiceEvent.objects.create(booking_id=event.id, event=name, status=event.status,
                                message_id=info.message_id or "")
    Invoice.objects.update_or_create(
        booking_id=event.id,
        defaults={"guest": event.guest, "amount_cents": event.amount_cents, "status": event.status,
                  "message_id": info.message_id or ""},
    )
