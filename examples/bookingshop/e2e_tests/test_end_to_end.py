"""The booking shop end to end: Django saves in `shop` become typed events handled by `billing`.

`shop` runs in this process under pytest-django (real commits: transaction=True);
`billing` is a second Django project run through its manage.py, on its own
database: a fresh PostgreSQL database when DATABASE_URL is set, SQLite otherwise.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import transaction

import pubsubpy

HERE = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _rabbit_up() -> bool:
    try:
        probe = pubsubpy.PubSub(settings.PUBSUBPY["AMQP_URL"], connect_timeout=3, connection_attempts=1)
        probe.transport.declare_exchange(settings.PUBSUBPY["MODEL_EXCHANGE"])
        probe.close()
        return True
    except pubsubpy.PubSubError:
        return False


@pytest.fixture(scope="session", autouse=True)
def broker() -> None:
    if not _rabbit_up():
        if IN_CI:
            pytest.fail("RabbitMQ is needed for the example's end-to-end tests (CI=true)")
        pytest.skip("RabbitMQ is not reachable")


class Billing:
    """The subscribing service, driven through its manage.py like an operator would."""

    def __init__(self, database_url: str, service: str) -> None:
        self.service = service
        self.env = {**os.environ, "DATABASE_URL": database_url, "PUBSUBPY_SERVICE": service,
                    "PUBSUBPY_EXCHANGE": settings.PUBSUBPY["MODEL_EXCHANGE"], "PYTHONPATH": str(HERE),
                    "DJANGO_SETTINGS_MODULE": "billing_site.settings"}

    def manage(self, *args: str) -> str:
        proc = subprocess.run([sys.executable, "manage.py", *args], cwd=HERE / "billing", env=self.env,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, f"manage.py {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
        return proc.stdout

    def invoices(self) -> list[dict[str, Any]]:
        code = ("import json; from invoices.models import Invoice; "
                "print(json.dumps(list(Invoice.objects.order_by('booking_id').values("
                "'booking_id', 'guest', 'amount_cents', 'status'))))")
        return json.loads(self.manage("shell", "-c", code).strip().splitlines()[-1])  # type: ignore[no-any-return]

    def depth(self) -> int:
        app = pubsubpy.PubSub(settings.PUBSUBPY["AMQP_URL"], service_name=self.service)
        try:
            return app.transport.queue_depth(f"{self.service}.events")
        finally:
            app.close()


def _billing_database(tmp_path: Path) -> Iterator[str]:
    shop_url = os.environ.get("DATABASE_URL")
    if not shop_url:
        yield f"sqlite:///{tmp_path / 'billing.sqlite3'}"
        return
    import psycopg

    name = f"billing_e2e_{uuid.uuid4().hex[:8]}"
    admin = shop_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield shop_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def billing(tmp_path: Path) -> Iterator[Billing]:
    for url in _billing_database(tmp_path):
        service = f"e2e-billing-{uuid.uuid4().hex[:8]}"
        app = Billing(url, service)
        app.manage("migrate", "--noinput")
        app.manage("pubsub_declare")  # deploy step: its queue exists before the shop publishes
        yield app
        from pubsubpy.testing import delete_topology

        delete_topology(pubsubpy.PubSub(settings.PUBSUBPY["AMQP_URL"], service_name=service), exchange=False)


@pytest.mark.django_db(transaction=True)
def test_save_publishes_after_commit_and_billing_gets_typed_events(billing: Billing) -> None:
    from bookings.models import Booking

    with transaction.atomic():
        booking = Booking.objects.create(guest="Ada", nights=3, amount_cents=36000)
        assert billing.depth() == 0, "nothing may leave before the commit"
    assert billing.depth() == 1, "exactly one event once committed"

    booking.status = "paid"
    booking.save()
    out = billing.manage("pubsub_drain", "--timeout", "30")
    assert "2 handled" in out, out
    assert billing.invoices() == [{"booking_id": booking.id, "guest": "Ada", "amount_cents": 36000,
                                   "status": "paid"}]


@pytest.mark.django_db(transaction=True)
def test_rollback_publishes_nothing(billing: Billing) -> None:
    from bookings.models import Booking

    with pytest.raises(RuntimeError), transaction.atomic():
        Booking.objects.create(guest="Ghost", nights=1, amount_cents=100)
        raise RuntimeError("payment failed")
    assert Booking.objects.count() == 0
    assert billing.depth() == 0
    assert "0 messages" in billing.manage("pubsub_drain", "--timeout", "10")


@pytest.mark.django_db(transaction=True)
def test_delete_publishes_deleted_and_bulk_update_publishes_nothing(billing: Billing) -> None:
    from bookings.models import Booking

    booking = Booking.objects.create(guest="Grace", nights=2, amount_cents=20000)
    Booking.objects.filter(id=booking.id).update(status="ignored")  # documented: no signal, no event
    booking_id = booking.id
    booking.delete()
    assert billing.depth() == 2
    out = billing.manage("pubsub_drain", "--timeout", "30")
    assert "2 handled" in out, out
    assert billing.invoices() == [{"booking_id": booking_id, "guest": "Grace", "amount_cents": 20000,
                                   "status": "void"}]


@pytest.mark.django_db(transaction=True)
def test_a_payload_the_schema_rejects_fails_the_save(billing: Billing) -> None:
    from bookings.models import Booking

    with pytest.raises(pubsubpy.PayloadValidationError), transaction.atomic():
        Booking.objects.create(guest="", nights=1, amount_cents=100)
    assert Booking.objects.count() == 0, "the save was rolled back with its transaction"
    assert billing.depth() == 0


def test_dead_letters_through_the_management_command(billing: Billing) -> None:
    pubsubpy.get_default().transport.declare_exchange(settings.PUBSUBPY["MODEL_EXCHANGE"])
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(settings.PUBSUBPY["AMQP_URL"]))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(settings.PUBSUBPY["MODEL_EXCHANGE"], "Booking.created", b"{broken",
                              pika.BasicProperties(content_type="application/json", message_id="bad-1"))
    finally:
        connection.close()
    assert "1 dead-lettered" in billing.manage("pubsub_drain", "--timeout", "30")
    listed = [json.loads(line) for line in billing.manage("pubsub_dlq", "list", "--json").splitlines()]
    assert [(x["message_id"], x["reason"]) for x in listed] == [("bad-1", "decode_error")]
    assert "purged 1" in billing.manage("pubsub_dlq", "purge", "--yes")


def test_prune_and_topology_through_the_management_commands(billing: Billing) -> None:
    """An older billing version bound Refund.* (recorded in the ledger); this one no longer subscribes it."""
    older = pubsubpy.PubSub(settings.PUBSUBPY["AMQP_URL"], service_name=billing.service, require_schemas=False,
                            model_exchange=settings.PUBSUBPY["MODEL_EXCHANGE"])
    older.subscribe("Refund.*")(lambda event: None)
    older.declare()
    older.close()
    billing.manage("pubsub_declare")  # the new version's deploy step: additive, Refund.* stays
    view = json.loads(billing.manage("pubsub_topology", "--format", "json"))
    bindings = {b["pattern"]: b for b in view["bindings"]}
    assert bindings["Refund.*"]["stale"] and bindings["Booking.*"]["handlers"] == ["invoices.subscribers.keep_invoice"]
    assert {e["routing_key"] for e in view["events"]} >= {"Booking.created", "Booking.deleted"}

    out = billing.manage("pubsub_declare", "--prune", "--dry-run")
    assert "Refund.*" in out and "dry run: nothing removed" in out
    out = billing.manage("pubsub_declare", "--prune", "--yes")
    assert "removed 1 binding(s)" in out, out
    view = json.loads(billing.manage("pubsub_topology", "--format", "json"))
    assert [b["pattern"] for b in view["bindings"]] == ["Booking.*"]
    assert billing.manage("pubsub_topology", "--format", "mermaid").startswith("flowchart LR")
