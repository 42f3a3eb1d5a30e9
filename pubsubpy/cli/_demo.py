"""``pubsubpy demo``: publish, subscribe, drain and a dead letter, in one screen.

Runs on ``memory://`` by default, or on RabbitMQ with ``--url``. The demo uses
its own exchange (``pubsubpy-demo``) and service (``demo-billing``), and empties
its dead-letter queue first so every run shows the same thing.
"""

from __future__ import annotations

from collections.abc import Callable

from pubsubpy.app import PubSub
from pubsubpy.errors import PayloadValidationError
from pubsubpy.messages import MessageInfo
from pubsubpy.schemas import ModelEvent
from pubsubpy.settings import Settings

__all__ = ["error_lines", "run_demo"]

BOOKING = "shop.models.Booking"


class DemoBookingCreated(ModelEvent, model=BOOKING, event="created", register=False):
    id: int
    guest: str
    nights: int


class DemoBookingPaid(ModelEvent, model=BOOKING, event="paid", register=False):
    id: int
    amount_cents: int


def error_lines(exc: BaseException) -> list[str]:
    """Every line of a refused publish: one per field error when the payload's schema rejects it."""
    from pydantic import ValidationError

    cause = exc.__cause__ or exc.__context__
    if isinstance(exc, PayloadValidationError) and isinstance(cause, ValidationError):
        head = str(exc).split(":", 1)[0]
        lines = [f"{head}: {cause.error_count()} field error(s)"]
        for error in cause.errors(include_url=False):
            where = ".".join(str(part) for part in error["loc"]) or "(payload)"
            given = "" if error["type"] == "missing" else f" (input: {error.get('input')!r})"
            lines.append(f"  {where}: {error['msg']}{given}")
        return lines
    return [line for line in str(exc).splitlines() if line.strip()]


def run_demo(url: str = "memory://", echo: Callable[[str], None] = print) -> int:
    """Run the demo; returns 0 when it showed what it promises (3 handled, 1 dead letter)."""
    app = PubSub(url, schemas=[DemoBookingCreated, DemoBookingPaid], model_exchange="pubsubpy-demo",
                 service_name="demo-billing", max_attempts=2, retry_delay=0)
    invoices: list[str] = []

    def on_booking(event: DemoBookingCreated | DemoBookingPaid, info: MessageInfo) -> None:
        if isinstance(event, DemoBookingPaid) and event.amount_cents < 0:
            raise ValueError(f"refusing a negative payment of {event.amount_cents} cents")
        invoices.append(f"{info.routing_key} #{event.id}")
        echo(f"  handled   {info.routing_key:<16} {event!r}  (attempt {info.attempt})")

    on_booking.__qualname__ = "on_booking"  # dead letters name it pubsubpy.cli._demo.on_booking, not <locals>
    app.subscribe("Booking.*")(on_booking)
    defaults = Settings.model_fields
    try:
        echo(f"pubsubpy demo on {app.settings.display_url}")
        echo("settings: max_attempts=2, retry_delay=0: a failing handler is retried at once, in the same drain, "
             "and dead-lettered there")
        echo(f"  (with the defaults, max_attempts={defaults['max_attempts'].default} and retry_delay="
             f"{defaults['retry_delay'].default:g} s, it is retried after retry_delay on a later drain)")
        app.declare()
        app.purge_dead_letters()
        echo("publishing 4 events (one carries a negative amount the handler refuses)")
        app.publish_model_event(BOOKING, "created", {"id": 1, "guest": "Ada", "nights": 3})
        app.publish_model_event(BOOKING, "paid", DemoBookingPaid(id=1, amount_cents=36000))
        app.publish_model_event(BOOKING, "created", {"id": 2, "guest": "Grace", "nights": 1})
        app.publish_model_event(BOOKING, "paid", {"id": 2, "amount_cents": -500})
        try:
            app.publish_model_event(BOOKING, "created", {"id": "three", "guest": "Linus"})
        except Exception as exc:
            lines = error_lines(exc)
            echo(f"refused before sending: {type(exc).__name__}: {lines[0]}")
            for line in lines[1:]:
                echo(f"  {line}")
        echo("draining:")
        result = app.drain(timeout=30)
        echo(f"drain: {result}")
        letters = app.list_dead_letters()
        echo(f"dead letters ({len(letters)}):")
        for letter in letters:
            echo(f"  {letter.message_id[:12]}  {letter.routing_key:<16} reason={letter.reason} "
                 f"attempts={letter.attempts} handler={letter.handler}\n      error: {letter.error}"
                 f"\n      body:  {letter.body.decode(errors='replace')}")
        ok = len(invoices) == 3 and len(letters) == 1 and letters[0].reason == "handler_error"
        echo("demo OK" if ok else "demo did not show what it should: see above")
        return 0 if ok else 1
    finally:
        app.close()
