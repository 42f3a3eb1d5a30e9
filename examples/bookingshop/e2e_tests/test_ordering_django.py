"""Per-aggregate ordering under Django (issue 27): the outbox stamps `pubsubpy-sequence`, the relay holds an
aggregate behind its parked row, and the inbox skips an event older than the last one applied.

No broker: the relay sends through an in-process transport (`pubsubpy.testing.memory_pubsub`), and what it
sent is what it marked sent. The tests that need two connections at once run on PostgreSQL (DATABASE_URL).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection, connections, transaction

from pubsubpy.envelope import H_KEY, H_SEQUENCE, Properties
from pubsubpy.inbox import Applied, OrderedRun
from pubsubpy.transports.base import OutgoingMessage

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
KEY = "bookings.models.Booking:1"


def _postgres_only(what: str = "concurrent transactions") -> None:
    if connection.vendor != "postgresql":
        if IN_CI:
            pytest.fail(f"{what}: PostgreSQL (DATABASE_URL) is needed under CI=true")
        pytest.skip(f"{what}: PostgreSQL (DATABASE_URL) is needed")


def message(key: str | None, **headers: Any) -> OutgoingMessage:
    """An encoded event as the publisher hands it to the outbox; `key`: its `pubsubpy-key` header."""
    if key is not None:
        headers[H_KEY] = key
    properties = Properties(message_id=uuid.uuid4().hex, type="bookings.models.Booking.updated", headers=headers)
    return OutgoingMessage("e2e-ordering", "Booking.updated", b"{}", properties)


def sequences() -> dict[str, tuple[str, int | None]]:
    """message id -> (aggregate, stamped sequence) of every outbox row."""
    from pubsubpy.contrib.django.models import OutboxMessage

    return {row.message_id: (row.aggregate, row.properties["headers"].get(H_SEQUENCE))
            for row in OutboxMessage.objects.all()}


# -- the inbox's stale-event guard -------------------------------------------------------------------

@pytest.mark.django_db(transaction=True)
def test_the_inbox_runs_each_sequence_once_and_skips_older_ones() -> None:
    from pubsubpy.contrib.django.inbox import DjangoInbox
    from pubsubpy.contrib.django.models import InboxMessage, InboxSequence

    inbox = DjangoInbox()
    ran: list[str] = []

    def run(message_id: str, sequence: int, handler: str = "h") -> OrderedRun:
        return inbox.run_in_order(message_id, handler, KEY, sequence, lambda: ran.append(message_id))

    assert run("m5", 5) == OrderedRun(Applied.RAN, None)
    assert run("m5", 5) == OrderedRun(Applied.DUPLICATE, 5), "the same message id: a duplicate"
    assert run("m4", 4) == OrderedRun(Applied.STALE, 5), "an older sequence"
    assert run("m5-copy", 5) == OrderedRun(Applied.STALE, 5), "the same sequence under another message id"
    assert not InboxMessage.objects.filter(message_id__in=["m4", "m5-copy"]).exists(), "a stale event records nothing"
    assert run("m6", 6) == OrderedRun(Applied.RAN, 5)
    assert run("m4", 4, handler="other") == OrderedRun(Applied.RAN, None), "each handler has its own last sequence"
    assert ran == ["m5", "m6", "m4"]
    assert sorted(InboxSequence.objects.values_list("handler", "key", "sequence")) == \
        [("h", KEY, 6), ("other", KEY, 4)]


@pytest.mark.django_db(transaction=True)
def test_a_failing_handler_records_neither_its_message_nor_its_sequence() -> None:
    from bookings.models import Booking

    from pubsubpy.contrib.django.inbox import DjangoInbox
    from pubsubpy.contrib.django.models import InboxMessage, InboxSequence

    inbox = DjangoInbox()
    assert inbox.run_in_order("m1", "h", KEY, 1, lambda: None).applied is Applied.RAN

    def fails() -> None:
        Booking.objects.create(guest="Half", nights=1, amount_cents=1)
        raise RuntimeError("the handler failed midway")

    with pytest.raises(RuntimeError):
        inbox.run_in_order("m2", "h", KEY, 2, fails)
    assert not Booking.objects.exists(), "the handler's effects rolled back"
    assert not InboxMessage.objects.filter(message_id="m2").exists()
    assert InboxSequence.objects.get(handler="h", key=KEY).sequence == 1
    assert inbox.run_in_order("m2", "h", KEY, 2, lambda: None) == OrderedRun(Applied.RAN, 1), "its retry runs"

    with pytest.raises(RuntimeError):
        inbox.run_in_order("n1", "h", "another:1", 1, fails)
    assert not InboxSequence.objects.filter(key="another:1").exists(), "a key's first event that fails: no record"


@pytest.mark.django_db(transaction=True)
def test_reset_order_forgets_the_last_sequence_and_retention_never_expires_it(
        capsys: pytest.CaptureFixture[str]) -> None:
    from pubsubpy.contrib.django.inbox import DjangoInbox
    from pubsubpy.contrib.django.models import InboxMessage, InboxSequence

    inbox = DjangoInbox(retention=dt.timedelta(0))
    for handler in ("h", "other"):
        inbox.run_in_order(f"m9-{handler}", handler, KEY, 9, lambda: None)
    inbox.run_in_order("m1", "h", "another:1", 1, lambda: None)
    inbox.clean()  # (a run may have cleaned already: the inbox cleans now and then on its own)
    assert not InboxMessage.objects.exists()
    assert InboxSequence.objects.count() == 3, "retention expires message records, never sequences"
    assert inbox.run_in_order("m8", "h", KEY, 8, lambda: None).applied is Applied.STALE

    assert inbox.reset_order(KEY, handler="other") == 1
    call_command("pubsub", "ordered", "reset", "--key", KEY)  # the project's DjangoInbox: the same table
    assert f"cleared 1 record(s) of key {KEY} (every handler)" in capsys.readouterr().out
    assert inbox.reset_order(KEY) == 0
    assert inbox.run_in_order("m8", "h", KEY, 8, lambda: None) == OrderedRun(Applied.RAN, None)
    assert InboxSequence.objects.get(handler="h", key="another:1").sequence == 1, "other keys are kept"


@pytest.mark.django_db(transaction=True)
def test_two_first_events_of_a_key_at_once_apply_the_newer_only_once() -> None:
    """Two consumers, the first events of one key: the second waits for the first's commit, then decides
    against the sequence it recorded."""
    from pubsubpy.contrib.django.inbox import DjangoInbox

    _postgres_only()
    inbox = DjangoInbox()
    first_inside, release = threading.Event(), threading.Event()
    results: dict[str, OrderedRun] = {}

    def slow() -> None:
        first_inside.set()
        assert release.wait(30)

    def consumer(message_id: str, sequence: int, call: Callable[[], object]) -> None:
        try:
            results[message_id] = inbox.run_in_order(message_id, "h", KEY, sequence, call)
        finally:
            connections.close_all()

    newer = threading.Thread(target=consumer, args=("m2", 2, slow))
    newer.start()
    assert first_inside.wait(30)
    older = threading.Thread(target=consumer, args=("m1", 1, lambda: None))
    older.start()
    older.join(0.5)
    assert older.is_alive(), "the second waits for the first transaction"
    release.set()
    newer.join(30)
    older.join(30)
    assert results == {"m2": OrderedRun(Applied.RAN, None), "m1": OrderedRun(Applied.STALE, 2)}


# -- the outbox stamps sequences -----------------------------------------------------------------------

@pytest.mark.django_db(transaction=True)
def test_the_outbox_stamps_a_sequence_per_aggregate_in_commit_order() -> None:
    from pubsubpy.contrib.django.outbox import DjangoOutbox

    writer = DjangoOutbox()
    first, second = message("a:1"), message("a:1")
    with transaction.atomic():
        writer.write([first])
    with transaction.atomic():
        writer.write([second])
    other, kept, unkeyed = message("b:1"), message("a:1", **{H_SEQUENCE: 42}), message(None)
    writer.write([other, kept, unkeyed])  # outside a transaction: one of its own
    stamped = sequences()
    assert stamped[first.properties.message_id or ""] == ("a:1", 1)
    assert stamped[second.properties.message_id or ""] == ("a:1", 2)
    assert stamped[other.properties.message_id or ""] == ("b:1", 1), "another aggregate counts from 1"
    assert stamped[kept.properties.message_id or ""] == ("a:1", 42), "a sequence already there is kept"
    assert stamped[unkeyed.properties.message_id or ""] == (f"message:{unkeyed.properties.message_id}", None)
    assert H_SEQUENCE not in first.properties.headers, "the caller's headers are not changed"


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_write_gives_its_sequence_back() -> None:
    from pubsubpy.contrib.django.outbox import DjangoOutbox

    writer = DjangoOutbox()
    with pytest.raises(RuntimeError), transaction.atomic():
        writer.write([message("a:1")])
        raise RuntimeError("rolled back")
    later = message("a:1")
    writer.write([later])
    assert sequences() == {later.properties.message_id: ("a:1", 1)}


@pytest.mark.django_db(transaction=True)
def test_two_transactions_writing_one_aggregate_are_serialised_until_commit() -> None:
    """The counter row's lock lasts until the writer's commit, so the sequence order is the commit order
    (here the first-ever events of the aggregate: both try to create its counter)."""
    from pubsubpy.contrib.django.outbox import DjangoOutbox

    _postgres_only()
    writer = DjangoOutbox()
    first, second = message("a:1"), message("a:1")
    done = threading.Event()

    def write_second() -> None:
        try:
            writer.write([second])
        finally:
            connections.close_all()
            done.set()

    with transaction.atomic():
        writer.write([first])
        thread = threading.Thread(target=write_second)
        thread.start()
        assert not done.wait(0.5), "the second writer waits for the first's commit"
    assert done.wait(30)
    thread.join()
    stamped = sequences()
    assert (stamped[first.properties.message_id or ""], stamped[second.properties.message_id or ""]) == \
        (("a:1", 1), ("a:1", 2))


# -- the relay holds an aggregate behind its parked row ------------------------------------------------

@pytest.fixture(params=["postgresql", "other"])
def vendor(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Both ways the relay claims rows: PostgreSQL's head query, and the one-relay path of other databases."""
    if request.param == "postgresql":
        _postgres_only("the relay's PostgreSQL head query")
    else:
        monkeypatch.setattr(connection, "vendor", "sqlite")
    return str(request.param)


@pytest.fixture
def relay_app() -> Iterator[Any]:
    from pubsubpy.testing import memory_pubsub

    app = memory_pubsub(model_exchange="e2e-ordering")
    yield app
    app.close()


def outbox_rows(*aggregates: str) -> list[int]:
    """One outbox row per aggregate named, in that order; their ids."""
    from pubsubpy.contrib.django.models import OutboxMessage
    from pubsubpy.contrib.django.outbox import to_row

    rows = [to_row(message(aggregate)) for aggregate in aggregates]
    return [row.id for row in OutboxMessage.objects.bulk_create(rows)]


def sent(ids: list[int]) -> list[bool]:
    from pubsubpy.contrib.django.models import OutboxMessage

    done = set(OutboxMessage.objects.filter(id__in=ids, sent_at__isnull=False).values_list("id", flat=True))
    return [row_id in done for row_id in ids]


def park(row_id: int) -> None:
    from django.utils import timezone

    from pubsubpy.contrib.django.models import OutboxMessage

    OutboxMessage.objects.filter(id=row_id).update(parked_at=timezone.now(), error="refused by the broker: test")


@pytest.mark.django_db(transaction=True)
def test_a_parked_row_holds_its_aggregate_until_it_is_retried(vendor: str, relay_app: Any,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    from pubsubpy.contrib.django.relay import Relay

    ids = outbox_rows("a:1", "b:1", "a:1", "a:1", "b:1")
    park(ids[0])
    with caplog.at_level(logging.WARNING, logger="pubsubpy.relay"):
        result = Relay(relay_app).run_once()
    assert (result.sent, result.parked) == (2, 0), result
    assert sent(ids) == [False, True, False, False, True], "a:1 waits behind its parked row; b:1 goes"
    held = [r.getMessage() for r in caplog.records if "held behind a parked row" in r.getMessage()]
    assert held and all("1 aggregate(s)" in text and "'a:1'" in text for text in held), caplog.text
    assert len(held) <= result.batches + 1, "once per batch, not per row"

    call_command("pubsub", "outbox", "retry")
    assert Relay(relay_app).run_once().sent == 3
    assert sent(ids) == [True] * 5


@pytest.mark.django_db(transaction=True)
def test_a_discarded_parked_row_lets_its_aggregate_go_and_a_parked_row_mid_aggregate_holds_the_rest(
        vendor: str, relay_app: Any) -> None:
    from pubsubpy.contrib.django.models import OutboxMessage
    from pubsubpy.contrib.django.relay import Relay

    ids = outbox_rows("c:1", "c:1", "d:1", "d:1", "d:1")
    park(ids[0])
    park(ids[3])  # d:1's head is not parked, but its third row waits behind its second
    assert Relay(relay_app).run_once().sent == 1
    assert sent(ids) == [False, False, True, False, False]

    OutboxMessage.objects.filter(id=ids[0]).delete()  # discarded by hand
    assert Relay(relay_app).run_once().sent == 1
    assert sent(ids[1:]) == [True, True, False, False]


# -- model events ------------------------------------------------------------------------------------

@pytest.mark.django_db(transaction=True)
def test_a_model_event_is_keyed_by_its_primary_key_and_stamped_in_order() -> None:
    from bookings.models import Booking

    from pubsubpy.contrib.django.models import OutboxMessage

    booking = Booking.objects.create(guest="Ada", nights=1, amount_cents=100)
    booking.status = "paid"
    booking.save()
    key = f"bookings.models.Booking:{booking.pk}"
    booking.delete()
    rows = [(row.routing_key, row.aggregate, row.properties["headers"].get(H_KEY),
             row.properties["headers"].get(H_SEQUENCE)) for row in OutboxMessage.objects.order_by("id")]
    assert rows == [("Booking.created", key, key, 1), ("Booking.updated", key, key, 2),
                    ("Booking.deleted", key, key, 3)]


@pytest.mark.django_db(transaction=True)
def test_the_django_inbox_keeps_replay_checkpoints_and_forgets_a_handler_for_a_rebuild() -> None:
    """``DjangoInbox`` is a ``ReplayInbox`` (issue 30): a backfill's checkpoint survives in its own table, a dry
    run asks which ids a handler ran, and a rebuild forgets a handler's records and stale guard only."""
    from pubsubpy.contrib.django.inbox import DjangoInbox
    from pubsubpy.contrib.django.models import InboxMessage, InboxSequence, ReplayCheckpoint
    from pubsubpy.inbox import ReplayInbox

    inbox = DjangoInbox()
    assert isinstance(inbox, ReplayInbox)
    assert inbox.replay_state("backfill:billing") is None
    inbox.save_replay_state("backfill:billing", '{"next_offset": 10}')
    inbox.save_replay_state("backfill:billing", '{"next_offset": 20}')
    assert DjangoInbox().replay_state("backfill:billing") == '{"next_offset": 20}'
    assert ReplayCheckpoint.objects.count() == 1
    for number in range(3):
        inbox.run_in_order(f"m{number}", "h", KEY, number, lambda: None)
    inbox.run_once("m0", "other", lambda: None)
    assert inbox.recorded("h", ["m0", "m2", "m9"]) == {"m0", "m2"}
    assert inbox.recorded("h", [f"x{n}" for n in range(1200)] + ["m1"]) == {"m1"}  # more than one batch
    assert inbox.forget_handler("h") == 4  # three messages and the key's sequence
    assert not InboxSequence.objects.filter(handler="h").exists()
    assert list(InboxMessage.objects.values_list("message_id", "handler")) == [("m0", "other")]
    assert inbox.run_in_order("m0", "h", KEY, 0, lambda: None).applied is Applied.RAN
    inbox.save_replay_state("backfill:billing", None)
    assert inbox.replay_state("backfill:billing") is None
