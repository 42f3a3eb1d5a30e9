"""An async view that publishes: ``await pubsubpy.apublish_model_event(...)`` on the default instance.

With ``OUTBOX`` on, the event is an outbox row written through ``sync_to_async``. Django has no async
transactions, so inside an async view the row is written in a transaction of its own (autocommit),
not in one with the view's other writes; a view that must commit both together is a sync view (or
wraps both in one ``sync_to_async`` function under ``transaction.atomic``).
"""

from __future__ import annotations

from django.http import HttpRequest, JsonResponse
from shop_events import BOOKING

import pubsubpy
from bookings.models import Booking


async def announce_booking(request: HttpRequest, booking_id: int) -> JsonResponse:
    """Publish the booking's current state again (for a service that joined late, say)."""
    booking = await Booking.objects.aget(id=booking_id)
    message_id = await pubsubpy.apublish_model_event(BOOKING, "updated", booking,
                                                     headers={"source": "announce-view"})
    return JsonResponse({"message_id": message_id})
