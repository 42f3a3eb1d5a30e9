"""A redelivery of a settled message is skipped; a later copy of it (retry, deferral, replay) never is."""

from __future__ import annotations

from pubsubpy._consume.loop import _Recent
from pubsubpy._consume.settling import Settler
from pubsubpy._engine import Verdict
from pubsubpy.envelope import Properties
from pubsubpy.settings import Settings
from pubsubpy.transports.base import Delivery, OutgoingMessage


def _arrive(message: OutgoingMessage, redelivered: bool = False) -> Delivery:
    """What the consumer gets once a copy has gone through its retry queue back to the service queue."""
    return Delivery(1, "", "svc.events", message.body, message.properties, redelivered)


def test_each_deferral_copy_is_a_new_message_for_the_redelivery_check() -> None:
    settler = Settler(Settings(service_name="svc"), "svc")
    original = Delivery(1, "models", "Room.cleaned", b"{}", Properties(message_id="m1"), False)
    first = _arrive(settler.deferral_copy(original, Verdict("Room.cleaned", 1, deferred_since=1.0)))
    second = _arrive(settler.deferral_copy(first, Verdict("Room.cleaned", 1, deferred_since=1.0, deferrals=1)))
    recent = _Recent()
    recent.add(first)
    assert _arrive_again(first) in recent, "the same copy redelivered: already settled"
    assert _arrive_again(second) not in recent, "a later copy, redelivered before it was settled, must run"


def _arrive_again(delivery: Delivery) -> Delivery:
    return Delivery(2, delivery.exchange, delivery.routing_key, delivery.body, delivery.properties, True)
