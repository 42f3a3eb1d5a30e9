"""Schemas the contract tests share (kept out of the default catalog)."""

from __future__ import annotations

from pubsubpy import ModelEvent

BOOKING = "shop.models.Booking"
ROOM = "shop.models.Room"


class BookingCreated(ModelEvent, model=BOOKING, event="created", register=False):
    id: int
    guest: str


class BookingUpdated(ModelEvent, model=BOOKING, event="updated", register=False):
    id: int
    status: str


class RoomCleaned(ModelEvent, model=ROOM, event="cleaned", version=2, register=False):
    number: int


ALL = [BookingCreated, BookingUpdated, RoomCleaned]
