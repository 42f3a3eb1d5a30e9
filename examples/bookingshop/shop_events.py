"""The event schemas both services share (in real life: a small package both depend on)."""

from __future__ import annotations

import datetime as dt

from pydantic import Field

from pubsubpy import ModelEvent

BOOKING = "bookings.models.Booking"


class BookingEvent(ModelEvent):
    """What every Booking event carries; built from the model instance (from_attributes)."""

    id: int
    guest: str = Field(min_length=1)  # the database would accept "", the contract does not
    nights: int
    amount_cents: int
    status: str
    created_at: dt.datetime


class BookingCreated(BookingEvent, model=BOOKING, event="created"):
    pass


class BookingUpdated(BookingEvent, model=BOOKING, event="updated"):
    pass


class BookingDeleted(ModelEvent, model=BOOKING, event="deleted"):
    id: int
    guest: str
