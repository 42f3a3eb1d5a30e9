"""The booking shop end to end: Django saves in `shop` become typed events handled by `billing`.

`shop` runs in this process under pytest-django (real commits: transaction=True)
with the outbox on: a save writes its event to the outbox table, and
`pubsub relay` sends it after the commit. `billing` is a second Django project
run through its manage.py, on its own database (a fresh PostgreSQL database
when DATABASE_URL is set, SQLite otherwise), with an idempotent handler. The
tracing test runs the shop as processes too (`manage.py book`, `pubsub relay`),
with TRACES_TO_CONSOLE=1, and follows one trace through the spans both print.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection, transaction

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


def manage(project: str, env: dict[str, str], *args: str) -> str:
    """`manage.py ARGS` of `project` (shop or billing) in a process of its own; its stdout."""
    proc = subprocess.run([sys.executable, "manage.py", *args], cwd=HERE / project, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"{project} manage.py {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


class Billing:
    """The subscribing service, driven through its manage.py like an operator would."""

    def __init__(self, database_url: str, service: str) -> None:
        self.service = service
        self.env = {**os.environ, "DATABASE_URL": database_url, "PUBSUBPY_SERVICE": service,
                    "PUBSUBPY_EXCHANGE": settings.PUBSUBPY["MODEL_EXCHANGE"], "PYTHONPATH": str(HERE),
                    "DJANGO_SETTINGS_MODULE": "billing_site.settings"}

    def manage(self, *args: str) -> str:
        return manage("billing", self.env, *args)

    def invoices(self) -> list[dict[str, Any]]:
        code = ("import json; from invoices.models import Invoice; "
                "print(json.dumps(list(Invoice.objects.order_by('booking_id').values("
                "'booking_id', 'guest', 'amount_cents', 'status'))))")
        return json.loads(self.manage("shell", "-c", code).strip().splitlines()[-1])  # type: ignore[no-any-return]

    def events(self) -> list[dict[str, Any]]:
        """InvoiceEvent rows in the order billing wrote them."""
        code = ("import json; from invoices.models import InvoiceEvent; "
                "print(json.dumps(list(InvoiceEvent.objects.order_by('id').values("
                "'booking_id', 'event', 'status', 'message_id'))))")
        return json.loads(self.manage("shell", "-c", code).strip().splitlines()[-1])  # type: ignore[no-any-return]

    def drain(self, timeout: int = 60) -> str:
        return self.manage("pubsub", "drain", "--timeout", str(timeout))

    def depth(self) -> int:
        app = pubsubpy.PubSub(settings.PUBSUBPY["AMQP_URL"], service_name=self.service)
        try:
            return app.transport.queue_depth(f"{self.service}.events")
        finally:
            app.close()


def _fresh_database(tmp_path: Path, project: str, template: str | None = None) -> Iterator[str]:
    """A new database for `project` run as its own processes: PostgreSQL when DATABASE_URL is set, copied
    from ``template`` (a database already migrated) when given."""
    shop_url = os.environ.get("DATABASE_URL")
    if not shop_url:
        yield f"sqlite:///{tmp_path / f'{project}.sqlite3'}"
        return
    import psycopg

    name = f"{project}_e2e_{uuid.uuid4().hex[:8]}"
    admin = shop_url.rsplit("/", 1)[0] + "/postgres"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"' + (f' TEMPLATE "{template}"' if template else ""))
    try:
        yield shop_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def migrated_billing(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str | None]:
    """On PostgreSQL, a billing database migrated once, which each test's database copies (``migrate`` in a
    process of its own takes seconds); None on SQLite, where each test migrates its own."""
    if not os.environ.get("DATABASE_URL"):
        yield None
        return
    for url in _fresh_database(tmp_path_factory.mktemp("template"), "billing"):
        Billing(url, "e2e-billing-template").manage("migrate", "--noinput")
        yield url.rsplit("/", 1)[1]


def relay() -> None:
    """The shop's `manage.py pubsub relay --once`, in this process (it sees the test database)."""
    call_command("pubsub", "relay", "--once")


def unsent() -> int:
    from pubsubpy.contrib.django.models import OutboxMessage

    return OutboxMessage.objects.filter(sent_at__isnull=True).count()


@pytest.fixture
def billing(tmp_path: Path, migrated_billing: str | None) -> Iterator[Billing]:
    for url in _fresh_database(tmp_path, "billing", template=migrated_billing):
        service = f"e2e-billing-{uuid.uuid4().hex[:8]}"
        app = Billing(url, service)
        if migrated_billing is None:
            app.manage("migrate", "--noinput")
        app.manage("pubsub", "declare")  # deploy step: its queue exists before the shop publishes
        yield app
        from pubsubpy.testing import delete_topology

        delete_topology(pubsubpy.PubSub(settings.PUBSUBPY["AMQP_URL"], service_name=service), exchange=False)


@pytest.mark.django_db(transaction=True)
def test_save_publishes_after_commit_and_billing_gets_typed_events(billing: Billing) -> None:
    from bookings.models import Booking

    with transaction.atomic():
        booking = Booking.objects.create(guest="Ada", nights=3, amount_cents=36000)
        assert unsent() == 1 and billing.depth() == 0, "a row in the transaction; nothing leaves before the commit"
    assert unsent() == 1 and billing.depth() == 0, "the commit itself never touches the broker"
    relay()
    assert unsent() == 0 and billing.depth() == 1, "the relay sent it, once"

    booking.status = "paid"
    booking.save()
    relay()
    out = billing.manage("pubsub", "drain", "--timeout", "30")
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
    assert unsent() == 0, "the rollback took the outbox row with it"
    relay()
    assert billing.depth() == 0
    assert "0 messages" in billing.manage("pubsub", "drain", "--timeout", "10")


@pytest.mark.django_db(transaction=True)
def test_delete_publishes_deleted_and_bulk_update_publishes_nothing(billing: Billing) -> None:
    from bookings.models import Booking

    booking = Booking.objects.create(guest="Grace", nights=2, amount_cents=20000)
    Booking.objects.filter(id=booking.id).update(status="ignored")  # documented: no signal, no event
    booking_id = booking.id
    booking.delete()
    relay()
    assert billing.depth() == 2
    out = billing.manage("pubsub", "drain", "--timeout", "30")
    assert "2 handled" in out, out
    assert billing.invoices() == [{"booking_id": booking_id, "guest": "Grace", "amount_cents": 20000,
                                   "status": "void"}]


@pytest.mark.django_db(transaction=True)
def test_a_payload_the_schema_rejects_fails_the_save(billing: Billing) -> None:
    from bookings.models import Booking

    with pytest.raises(pubsubpy.PayloadValidationError), transaction.atomic():
        Booking.objects.create(guest="", nights=1, amount_cents=100)
    assert Booking.objects.count() == 0, "the save was rolled back with its transaction"
    assert unsent() == 0 and billing.depth() == 0


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
    assert "1 dead-lettered" in billing.manage("pubsub", "drain", "--timeout", "30")
    printed = billing.manage("pubsub", "dlq", "list", "--json")  # the code of `pubsubpy dlq list --json`
    listed = [json.loads(line) for line in printed.splitlines()]
    assert [(x["message_id"], x["reason"]) for x in listed] == [("bad-1", "decode_error")]
    assert billing.manage("pubsub_dlq", "list", "--json") == printed  # the old name: an alias, for one release
    assert "purged 1" in billing.manage("pubsub", "dlq", "purge", "--yes")


def test_manage_py_pubsub_is_the_pubsubpy_command_with_django_s_own_and_exit_codes(billing: Billing) -> None:
    """`manage.py pubsub` runs the click command line: its help lists pubsubpy's commands and the Django
    ones, a failure exits with pubsubpy's code, and an old `pubsub_<name>` warns that it goes."""
    usage = billing.manage("pubsub", "--help")
    for command in ("declare", "dlq", "drain", "relay", "outbox", "schema", "topology", "worker"):
        assert f"  {command} " in usage, command
    run = functools.partial(subprocess.run, cwd=HERE / "billing", env=billing.env, capture_output=True, text=True,
                            timeout=120)
    missing = run([sys.executable, "manage.py", "pubsub", "dlq", "show", "no-such-id"])
    assert missing.returncode == 1 and "no-such-id" in missing.stderr + missing.stdout
    old = run([sys.executable, "manage.py", "pubsub_drain", "--timeout", "5"])
    assert "manage.py pubsub_drain is deprecated" in old.stderr and "use manage.py pubsub drain" in old.stderr


def test_prune_and_topology_through_the_management_commands(billing: Billing) -> None:
    """An older billing version bound Refund.* (recorded in the ledger); this one no longer subscribes it."""
    older = pubsubpy.PubSub(settings.PUBSUBPY["AMQP_URL"], service_name=billing.service, require_schemas=False,
                            model_exchange=settings.PUBSUBPY["MODEL_EXCHANGE"])
    older.subscribe("Refund.*")(lambda event: None)
    older.declare()
    older.close()
    billing.manage("pubsub", "declare")  # the new version's deploy step: additive, Refund.* stays
    view = json.loads(billing.manage("pubsub", "topology", "--format", "json"))
    bindings = {b["pattern"]: b for b in view["bindings"]}
    assert bindings["Refund.*"]["stale"] and bindings["Booking.*"]["handlers"] == ["invoices.subscribers.keep_invoice"]
    assert {e["routing_key"] for e in view["events"]} >= {"Booking.created", "Booking.deleted"}

    out = billing.manage("pubsub", "declare", "--prune", "--dry-run")
    assert "Refund.*" in out and "dry run: nothing removed" in out
    out = billing.manage("pubsub", "declare", "--prune", "--yes")
    assert "removed 1 binding(s)" in out, out
    view = json.loads(billing.manage("pubsub", "topology", "--format", "json"))
    assert [b["pattern"] for b in view["bindings"]] == ["Booking.*"]
    assert billing.manage("pubsub", "topology", "--format", "mermaid").startswith("flowchart LR")


# -- the outbox under failure: PostgreSQL (relay processes share the test database) --------------

def _postgres_only() -> None:
    if connection.vendor != "postgresql":
        if IN_CI:
            pytest.fail("the outbox failure tests need PostgreSQL (DATABASE_URL) under CI=true")
        pytest.skip("the outbox failure tests need PostgreSQL: relay processes must see the test database")


def _relay_process(*args: str) -> subprocess.Popen[str]:
    """The shop's `manage.py pubsub relay` as its own process, on this test's database."""
    db = connection.settings_dict
    url = f"postgres://{db['USER']}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}/{db['NAME']}"
    env = {**os.environ, "DATABASE_URL": url, "PYTHONPATH": str(HERE), "DJANGO_SETTINGS_MODULE": "shop_site.settings"}
    return subprocess.Popen([sys.executable, "manage.py", "pubsub", "relay", *args], cwd=HERE / "shop", env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _rabbitmqctl(*args: str) -> None:
    subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True, timeout=120)


def _wait_for_broker(timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not _rabbit_up():
        assert time.monotonic() < deadline, "RabbitMQ did not come back"
        time.sleep(0.2)


@pytest.mark.django_db(transaction=True)
def test_commits_succeed_with_the_broker_down_and_two_relays_send_each_event_once_in_order(
        billing: Billing) -> None:
    from bookings.models import Booking

    _postgres_only()
    _rabbitmqctl("stop_app")
    try:
        bookings = [Booking.objects.create(guest=f"g{i}", nights=1, amount_cents=100) for i in range(100)]
        for status in ("s1", "s2"):  # interleaved across bookings: each update its own commit
            for booking in bookings:
                booking.status = status
                booking.save()
        with pytest.raises(RuntimeError), transaction.atomic():
            Booking.objects.create(guest="rolled back", nights=1, amount_cents=1)
            raise RuntimeError("payment failed")
        assert unsent() == 300, "every commit succeeded with the broker down; the rollback left nothing"
    finally:
        _rabbitmqctl("start_app")
    _wait_for_broker()
    relays = [_relay_process("--once", "--batch-size", "50") for _ in range(2)]
    for process in relays:
        _out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
    assert unsent() == 0
    assert billing.depth() == 300, "two relays at once published no event twice"
    assert "300 handled" in billing.drain()
    events = billing.events()
    assert len({e["message_id"] for e in events}) == 300
    by_booking: dict[int, list[tuple[str, str]]] = {}
    for event in events:
        by_booking.setdefault(event["booking_id"], []).append((event["event"], event["status"]))
    expected = [("created", "pending"), ("updated", "s1"), ("updated", "s2")]
    assert all(seen == expected for seen in by_booking.values()), "each booking's events in commit order"
    assert sorted(by_booking) == sorted(b.id for b in bookings)


@pytest.mark.django_db(transaction=True)
def test_a_relay_killed_mid_batch_loses_nothing_and_idempotent_handlers_act_once(billing: Billing) -> None:
    from bookings.models import Booking

    _postgres_only()
    with transaction.atomic():
        for i in range(2000):
            Booking.objects.create(guest=f"k{i}", nights=1, amount_cents=1)
    relay_process = _relay_process("--batch-size", "2000")
    try:
        deadline = time.monotonic() + 60
        while billing.depth() == 0:  # the broker has started taking the batch...
            assert time.monotonic() < deadline and relay_process.poll() is None, "the relay never published"
            time.sleep(0.005)
        relay_process.kill()  # ...SIGKILL before it could mark the rows sent
    finally:
        relay_process.kill()
        relay_process.communicate(timeout=30)
    sent_before_kill, marked = billing.depth(), 2000 - unsent()
    assert sent_before_kill > 0 and marked < 2000, (sent_before_kill, marked)
    restarted = _relay_process("--once")
    _out, err = restarted.communicate(timeout=120)
    assert restarted.returncode == 0, err
    assert unsent() == 0
    out = billing.drain(timeout=240)  # 2,000 idempotent handlers, a PostgreSQL transaction each
    assert billing.depth() == 0, f"the drain stopped before the queue was empty: {out}"
    events = billing.events()
    assert len(events) == 2000, "every event delivered, every handler effect exactly once"
    assert len({e["booking_id"] for e in events}) == 2000
    handled = int(out.split(" handled")[0].rsplit(" ", 1)[-1])
    assert handled >= 2000, out  # duplicates re-sent after the kill were acked without running again


@pytest.mark.django_db(transaction=True)
def test_rows_the_broker_refuses_are_parked_and_listed_never_retried_in_a_loop(capsys: pytest.CaptureFixture[str]) \
        -> None:
    import datetime as dt

    import pika

    from pubsubpy.contrib.django.inbox import DjangoInbox
    from pubsubpy.contrib.django.models import InboxMessage, OutboxMessage
    from pubsubpy.contrib.django.outbox import to_row
    from pubsubpy.contrib.django.relay import Relay
    from pubsubpy.envelope import Properties
    from pubsubpy.transports.base import OutgoingMessage

    exchange = f"e2e-park-{uuid.uuid4().hex[:8]}"
    # a nacked publish is sent again until its deadline (connect_timeout + confirm_timeout): kept short here
    strict = pubsubpy.PubSub(settings.PUBSUBPY["AMQP_URL"], model_exchange=exchange, on_unroutable="raise",
                             connect_timeout=2, confirm_timeout=3)
    strict.transport.declare_exchange(exchange)
    connection_ = pika.BlockingConnection(pika.URLParameters(settings.PUBSUBPY["AMQP_URL"]))
    full = f"{exchange}-full"
    channel = connection_.channel()
    channel.queue_declare(full, arguments={"x-max-length": 0, "x-overflow": "reject-publish"})  # nacks everything
    channel.queue_bind(full, exchange, routing_key="Full.key")
    try:
        rows = [OutgoingMessage(exchange, key, b"{}", Properties(message_id=f"{key}-{uuid.uuid4().hex}"), True)
                for key in ("Nobody.key", "Full.key", "Nobody.key")]
        OutboxMessage.objects.bulk_create([to_row(m) for m in rows])
        first = Relay(strict).run_once()
        assert (first.sent, first.parked) == (0, 3), first
        again = Relay(strict).run_once()
        assert again.batches == 0, "parked rows are not retried on their own"
        call_command("pubsub", "outbox", "list")
        out = capsys.readouterr().out
        assert out.count("PARKED") == 3 and "unroutable" in out and "refused by the broker" in out
        assert "3 unsent row(s), 3 parked" in out
        call_command("pubsub", "outbox", "retry")
        assert OutboxMessage.objects.filter(parked_at__isnull=True, sent_at__isnull=True).count() == 3
    finally:
        channel.queue_delete(full)
        channel.exchange_delete(exchange)
        connection_.close()
        strict.close()
    InboxMessage.objects.create(message_id="old", handler="h")
    assert DjangoInbox(retention=dt.timedelta(0)).clean() == 1, "inbox rows past the retention are deleted"


@pytest.mark.django_db(transaction=True)
def test_send_on_commit_the_celery_task_and_retention(billing: Billing) -> None:
    import datetime as dt

    from bookings.models import Booking

    from pubsubpy.contrib.celery import relay as relay_task
    from pubsubpy.contrib.django.models import OutboxMessage
    from pubsubpy.contrib.django.outbox import DjangoOutbox
    from pubsubpy.contrib.django.relay import BackgroundRelay, Relay

    app = pubsubpy.get_default()
    writer = app.outbox
    assert isinstance(writer, DjangoOutbox)
    background = BackgroundRelay(Relay(app))
    writer.after_commit = background.poke  # what OUTBOX_SEND_ON_COMMIT installs
    try:
        with transaction.atomic():
            Booking.objects.create(guest="Now", nights=1, amount_cents=1)
            assert background._thread is None, "nothing happens before the commit"
        deadline = time.monotonic() + 30
        while billing.depth() < 1:  # sent by the background thread, off this (the saving) thread
            assert time.monotonic() < deadline, "the send on commit never happened"
            time.sleep(0.02)
        assert unsent() == 0
    finally:
        writer.after_commit = None

    Booking.objects.create(guest="Beat", nights=1, amount_cents=1)
    assert relay_task() == {"sent": 1, "parked": 0, "batches": 1}, "the Celery task pubsubpy.relay"
    assert billing.depth() == 2
    assert OutboxMessage.objects.filter(sent_at__isnull=False).count() == 2
    assert Relay(app, retention=dt.timedelta(0)).clean() == 2, "sent rows past the retention are deleted"


def test_schema_lock_and_check_through_the_management_command(billing: Billing, tmp_path: Path) -> None:
    lock = str(tmp_path / "pubsubpy.lock.json")
    assert "3 schema version(s)" in billing.manage("pubsub", "schema", "lock", "--out", lock)
    assert "3 schema version(s)" in billing.manage("pubsub_schema", "lock", "--lock", lock)  # the old spelling
    assert "compatible with" in billing.manage("pubsub", "schema", "check", "--lock", lock)
    document = json.loads(Path(lock).read_text())
    created = next(e for e in document["events"] if e["event"] == "created")
    created["schema"]["required"].remove("guest")  # as if the locked version had guest optional
    created["schema"]["properties"]["guest"].pop("minLength")
    Path(lock).write_text(json.dumps(document))
    proc = subprocess.run([sys.executable, "manage.py", "pubsub", "schema", "check", "--lock", lock],
                          cwd=HERE / "billing", env=billing.env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "bookings.models.Booking.created v1: changed since the lock: field guest" in proc.stdout
    document = json.loads(billing.manage("pubsub", "schema", "export", "--format", "asyncapi"))
    assert document["asyncapi"] == "3.0.0" and "Booking.created" in {c["address"] for c in
                                                                      document["channels"].values()}
    billing.manage("pubsub", "schema", "docs", "--out", str(tmp_path / "catalogue"))
    assert "Booking.updated" in (tmp_path / "catalogue" / "index.html").read_text()


# -- tracing: one trace from the save in shop to the handler in billing ----------------------------

TRACES = {"TRACES_TO_CONSOLE": "1"}  # console_tracing.py: each project prints its spans as JSON on stdout


def printed_spans(output: str) -> list[dict[str, Any]]:
    """The spans ConsoleSpanExporter printed (indented JSON objects, "{" and "}" alone on their lines)
    among a command's other output."""
    spans: list[dict[str, Any]] = []
    lines: list[str] | None = None
    for line in output.splitlines():
        if line == "{":
            lines = []
        if lines is not None:
            lines.append(line)
            if line == "}":
                spans.append(json.loads("\n".join(lines)))
                lines = None
    return spans


def the_span(spans: list[dict[str, Any]], name: str) -> dict[str, Any]:
    named = [span for span in spans if span["name"] == name]
    assert len(named) == 1, (name, [span["name"] for span in spans])
    return named[0]


@pytest.fixture
def shop(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The shop as processes of its own (with tracing, a process's global tracer provider is set once, at
    start-up), on a fresh database: the environment to run its manage.py with."""
    for url in _fresh_database(tmp_path, "shop"):
        env = {**os.environ, "DATABASE_URL": url, "PYTHONPATH": str(HERE),
               "DJANGO_SETTINGS_MODULE": "shop_site.settings",
               "PUBSUBPY_EXCHANGE": settings.PUBSUBPY["MODEL_EXCHANGE"], **TRACES}
        manage("shop", env, "migrate", "--noinput")
        yield env


def test_one_trace_runs_from_the_save_in_shop_through_the_relay_to_the_handler_in_billing(
        shop: dict[str, str], billing: Billing) -> None:
    saved = printed_spans(manage("shop", shop, "book", "Ada", "3", "36000"))  # the outbox write
    relayed = printed_spans(manage("shop", shop, "pubsub", "relay", "--once"))
    assert billing.depth() == 1, "the relay's publish was confirmed: the event is in billing's queue"
    billing.env.update(TRACES)
    out = billing.drain()
    assert "1 handled" in out, out
    handled = printed_spans(out)

    exchange = settings.PUBSUBPY["MODEL_EXCHANGE"]
    book = the_span(saved, "book")
    create = the_span(saved, f"create {exchange}:Booking.created")
    publish = the_span(relayed, f"publish {exchange}:Booking.created")
    process = the_span(handled, f"process {exchange}:Booking.created:{billing.service}.events")
    trace_id = book["context"]["trace_id"]

    assert book["parent_id"] is None, "the command is the trace's root"
    assert (create["context"]["trace_id"], create["parent_id"]) == (trace_id, book["context"]["span_id"])
    assert (process["context"]["trace_id"], process["parent_id"]) == (trace_id, create["context"]["span_id"]), \
        "billing's handler run is the child of the outbox write, across the relay and the broker"
    assert [link["context"]["span_id"] for link in publish["links"]] == [create["context"]["span_id"]]
    assert publish["links"][0]["context"]["trace_id"] == trace_id
    assert publish["context"]["trace_id"] != trace_id, "the relay's batch is a trace of its own, linked"

    assert [span["kind"] for span in (create, publish, process)] == \
        ["SpanKind.PRODUCER", "SpanKind.CLIENT", "SpanKind.CONSUMER"]
    assert [span["resource"]["attributes"]["service.name"] for span in (book, create, publish, process)] == \
        ["shop", "shop", "shop", "billing"]
    message_id = create["attributes"]["messaging.message.id"]
    assert process["attributes"]["messaging.message.id"] == message_id
    assert process["attributes"]["pubsubpy.handler"] == "invoices.subscribers.keep_invoice"
    assert process["attributes"]["pubsubpy.outcome"] == "handled"
    assert [e["message_id"] for e in billing.events()] == [message_id]


@pytest.mark.django_db(transaction=True)
def test_an_async_view_publishes_through_the_outbox(billing: Billing) -> None:
    """``await pubsubpy.apublish_model_event`` in an async view: an outbox row (its own transaction,
    written through sync_to_async), sent by the relay, handled by billing."""
    from asgiref.sync import async_to_sync
    from bookings.models import Booking
    from django.test import AsyncClient

    booking = Booking.objects.create(guest="Ada", nights=2, amount_cents=24000)
    relay()  # the created event
    response = async_to_sync(AsyncClient().post)(f"/bookings/{booking.id}/announce")
    assert response.status_code == 200, response.content
    message_id = response.json()["message_id"]
    from pubsubpy.contrib.django.models import OutboxMessage

    assert unsent() == 1 and OutboxMessage.objects.get(sent_at__isnull=True).message_id == message_id
    relay()
    out = billing.manage("pubsub", "drain", "--timeout", "30")
    assert "2 handled" in out, out
