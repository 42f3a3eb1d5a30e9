"""Schemas: keys, registry conflicts, strict publishing, tolerant consuming."""

from __future__ import annotations

import pytest

from pubsubpy import ConfigurationError, ModelEvent
from pubsubpy.schemas import SchemaRegistry


class Paid(ModelEvent, model="shop.models.Booking", event="paid", version=3, register=False):
    id: int
    amount: float


def test_keys_routing_key_and_type() -> None:
    assert Paid.event_key() == ("shop.models.Booking", "paid")
    assert Paid.routing_key() == "Booking.paid"
    assert Paid.event_type() == "shop.models.Booking.paid"
    assert Paid.__pubsub_version__ == 3


def test_two_schemas_for_one_event_version_is_an_error_naming_both() -> None:
    class Other(ModelEvent, model="shop.models.Booking", event="paid", version=3, register=False):
        id: int

    registry = SchemaRegistry([Paid])
    with pytest.raises(ConfigurationError) as excinfo:
        registry.register(Other)
    assert "Paid" in str(excinfo.value) and "Other" in str(excinfo.value) and "version=4" in str(excinfo.value)


def test_versions_of_one_event_live_side_by_side() -> None:
    class PaidV1(ModelEvent, model="shop.models.Booking", event="paid", register=False):
        id: int

    registry = SchemaRegistry([PaidV1, Paid])
    assert registry.get("shop.models.Booking", "paid") is Paid, "the newest by default"
    assert registry.get("shop.models.Booking", "paid", version=1) is PaidV1
    assert registry.get("shop.models.Booking", "paid", version=2) is None
    assert registry.versions("Booking.paid") == {1: PaidV1, 3: Paid}
    assert registry.for_routing_key("Booking.paid") is Paid and len(registry) == 2


def test_two_models_sharing_a_routing_key_is_an_error() -> None:
    class Elsewhere(ModelEvent, model="crm.models.Booking", event="paid", register=False):
        id: int

    with pytest.raises(ConfigurationError, match=r"routing key 'Booking\.paid'"):
        SchemaRegistry([Paid, Elsewhere])


def test_default_catalog_conflict_raises_at_class_definition() -> None:
    class First(ModelEvent, model="tests.models.Unique", event="made"):
        id: int

    with pytest.raises(ConfigurationError, match="First"):
        class Second(ModelEvent, model="tests.models.Unique", event="made"):
            id: int


def test_redefining_the_same_class_replaces_it() -> None:
    registry = SchemaRegistry()
    for _ in range(2):
        class Again(ModelEvent, model="tests.models.Again", event="made", register=False):
            id: int
        registry.register(Again)
    assert registry.get("tests.models.Again", "made") is Again


@pytest.mark.parametrize(
    "keywords",
    [{"model": "a.B"}, {"event": "x"}, {"model": "a.B", "event": "two.words"}, {"model": "a.*", "event": "x"},
     {"model": "a.B", "event": "x", "version": 0}, {"model": "", "event": "x"}],
)
def test_bad_class_keywords_are_configuration_errors(keywords: dict[str, object]) -> None:
    with pytest.raises(ConfigurationError):
        type("Bad", (ModelEvent,), {"__annotations__": {"id": int}, "__module__": __name__}, register=False,
             **keywords)


def test_consuming_ignores_unknown_fields_and_refuses_nan() -> None:
    assert Paid.model_validate_json(b'{"id": 1, "amount": 2.5, "new_field": true}') == Paid(id=1, amount=2.5)
    with pytest.raises(ValueError):
        Paid(id=1, amount=float("nan"))


# -- key= and sequence= (ordering) ----------------------------------------------------

def test_key_and_sequence_must_name_fields() -> None:
    with pytest.raises(ConfigurationError, match=r"key='nope' is not one of its fields \(id, status\)"):
        class Bad(ModelEvent, model="t.models.Keyed", event="updated", key="nope", register=False):
            id: int
            status: str
    with pytest.raises(ConfigurationError, match="sequence= must name a field"):
        class Worse(ModelEvent, model="t.models.Keyed", event="updated", sequence="row version", register=False):
            id: int


def test_every_event_and_version_of_a_model_names_the_same_key() -> None:
    class Updated(ModelEvent, model="t.models.Keyed", event="updated", key="id", register=False):
        id: int

    class Created(ModelEvent, model="t.models.Keyed", event="created", key="ref", register=False):
        ref: str

    with pytest.raises(ConfigurationError, match="every event and version of a model names the same key= field"):
        SchemaRegistry([Updated, Created])


def test_publishing_carries_the_ordering_key_and_sequence() -> None:
    from pubsubpy import PayloadValidationError
    from pubsubpy.envelope import H_KEY, H_SEQUENCE
    from pubsubpy.testing import memory_pubsub

    class Moved(ModelEvent, model="t.models.Parcel", event="moved", key="id", sequence="row_version",
                register=False):
        id: int
        row_version: int

    class Noted(ModelEvent, model="t.models.Note", event="noted", register=False):
        text: str

    publisher = memory_pubsub(schemas=[Moved, Noted]).publisher
    headers = publisher.encode("t.models.Parcel", "moved", {"id": 7, "row_version": 3}).properties.headers
    assert headers[H_KEY] == "t.models.Parcel:7" and headers[H_SEQUENCE] == 3
    assert publisher.encode("t.models.Parcel", "moved", {"id": 7, "row_version": 3}, key=7)
    with pytest.raises(PayloadValidationError, match="differs from its key field id=7"):
        publisher.encode("t.models.Parcel", "moved", {"id": 7, "row_version": 3}, key=8)
    with pytest.raises(PayloadValidationError, match=r"row_version=-1 must be an integer in \[0, 2\*\*63\)"):
        publisher.encode("t.models.Parcel", "moved", {"id": 7, "row_version": -1})
    noted = publisher.encode("t.models.Note", "noted", {"text": "hi"}, key="n-1").properties.headers
    assert noted[H_KEY] == "t.models.Note:n-1" and H_SEQUENCE not in noted
    assert H_KEY not in publisher.encode("t.models.Note", "noted", {"text": "hi"}).properties.headers
    with pytest.raises(PayloadValidationError, match="longer than 255"):
        publisher.encode("t.models.Note", "noted", {"text": "hi"}, key="x" * 300)
