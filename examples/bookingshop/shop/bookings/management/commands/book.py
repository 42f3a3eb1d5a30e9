"""``manage.py book GUEST NIGHTS AMOUNT_CENTS``: take a booking, as a view or an API call would.

The save writes its ``Booking.created`` event to the outbox in the same
transaction; ``manage.py pubsub relay`` sends it. The command is a span (when
``opentelemetry-api`` is installed), so with ``TRACES_TO_CONSOLE=1`` the trace
starts here: the event's ``create`` span is its child, and billing's ``process``
span the child of that.
"""

from __future__ import annotations

import contextlib
from typing import Any

from django.core.management.base import BaseCommand, CommandParser
from django.db import transaction

from bookings.models import Booking


def _span(name: str) -> contextlib.AbstractContextManager[Any]:
    try:
        from opentelemetry import trace
    except ImportError:  # no pubsubpy[otel]: no tracing
        return contextlib.nullcontext()
    return trace.get_tracer("bookings").start_as_current_span(name)


class Command(BaseCommand):
    help = "Book a stay: saves a Booking, its event written to the outbox in the same transaction."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("guest")
        parser.add_argument("nights", type=int)
        parser.add_argument("amount_cents", type=int)

    def handle(self, *args: Any, **options: Any) -> None:
        with _span("book") as span, transaction.atomic():
            booking = Booking.objects.create(guest=options["guest"], nights=options["nights"],
                                             amount_cents=options["amount_cents"])
            if span is not None:
                span.set_attribute("booking.id", booking.pk)
        self.stdout.write(f"booked #{booking.pk} for {booking.guest}")
