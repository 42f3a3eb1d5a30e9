"""The README's quickstart: two services in one process on the in-process broker ``memory://shop``.

``python examples/quickstart.py`` prints what the README says it prints; the test suite runs it from the
README and from the installed wheel.
"""

from pubsubpy import ModelEvent, PubSub


class BookingPaid(ModelEvent, model="shop.models.Booking", event="paid"):
    id: int
    amount: int


shop = PubSub("memory://shop", service_name="shop")  # every PubSub naming memory://shop shares one broker
billing = PubSub("memory://shop", service_name="billing", max_attempts=1)  # no retries: fail once, dead letter


@billing.subscribe("Booking.paid")
def invoice(event: BookingPaid) -> None:
    if event.amount < 0:
        raise ValueError(f"negative amount {event.amount}")
    print(f"billing: invoiced booking {event.id} for {event.amount} EUR")


billing.declare()  # billing's queue and bindings exist before shop publishes (at deploy time in real life)
shop.publish_model_event("shop.models.Booking", "paid", {"id": 1, "amount": 120})
shop.publish_model_event("shop.models.Booking", "paid", {"id": 2, "amount": -5})

result = billing.drain()
print(f"billing: {result.handled} handled, {result.dead_lettered} dead-lettered")
for letter in billing.list_dead_letters():
    print(f"dead letter: {letter.routing_key} {letter.payload} {letter.reason}: {letter.error}")
