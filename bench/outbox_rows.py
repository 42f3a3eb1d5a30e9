"""Outbox rows (Django + PostgreSQL): relay throughput vs ``publish_many``, and what the outbox adds to a save.

- Relay: N events already in the outbox, sent by ``Relay.run_once`` (batches of
  1000, its default: claim, publish confirmed, mark sent, commit) against ``publish_many`` of
  the same N events straight to the broker (confirmed). Same exchange, the same
  bound durable queue, the same payload; the queue is purged between runs.
- Save: N saves of a small model, each its own transaction, against the same
  saves each also writing its event to the outbox (validation, encoding and the
  row insert, in the save's transaction). The row reports the added time per
  event.

Needs PostgreSQL at ``BENCH_DATABASE_URL`` (default postgres://root@127.0.0.1:5432, database
``pubsubpy_bench``, created and dropped here); skipped when it does not answer.
"""

from __future__ import annotations

import os
import time

from bench.common import PAYLOAD, URL, Booking, Row, alternate, purge, unique

ADMIN_URL = os.environ.get("BENCH_DATABASE_URL", "postgres://root@127.0.0.1:5432/postgres")
DATABASE = "pubsubpy_bench"


def _setup_django() -> bool:
    try:
        import psycopg
    except ImportError:
        return False
    try:
        with psycopg.connect(ADMIN_URL, autocommit=True, connect_timeout=3) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{DATABASE}"')
    except psycopg.Error:
        return False
    import dj_database_url
    import django
    from django.conf import settings

    db = dict(dj_database_url.parse(ADMIN_URL.rsplit("/", 1)[0] + "/" + DATABASE))
    settings.configure(
        INSTALLED_APPS=["django.contrib.contenttypes", "pubsubpy.contrib.django", "bench.outbox_app"],
        DATABASES={"default": db}, USE_TZ=True, DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        PUBSUBPY={"AMQP_URL": URL, "SERVICE_NAME": unique("outbox"), "MODEL_EXCHANGE": unique("x"),
                  "ON_UNROUTABLE": "ignore", "SCHEMAS": [Booking],
                  "TELEMETRY": False},
    )
    django.setup()
    from django.core.management import call_command
    from django.db import connection

    call_command("migrate", "pubsubpy", verbosity=0)
    from bench.outbox_app.models import Item

    with connection.schema_editor() as editor:
        editor.create_model(Item)
    return True


def _drop_database() -> None:
    import psycopg
    from django.db import connections

    connections.close_all()
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{DATABASE}" WITH (FORCE)')


def rows(count: int, saves: int, rounds: int) -> list[Row]:
    if not _setup_django():
        print("PostgreSQL is not reachable: skipping the outbox rows", flush=True)
        return []
    from django.db import transaction

    import pubsubpy
    from bench.outbox_app.models import Item
    from pubsubpy.contrib.django.models import OutboxMessage
    from pubsubpy.contrib.django.outbox import DjangoOutbox
    from pubsubpy.contrib.django.relay import Relay

    app = pubsubpy.get_default()

    @app.subscribe("Booking.*")
    def on_booking(event: Booking) -> None: ...

    topology = app.declare()
    queue = topology.queue.name
    outbox = DjangoOutbox()
    model = Booking.__pubsub_model__ or ""
    events = [(model, "updated", {**PAYLOAD, "id": i}) for i in range(count)]  # one aggregate each

    def relay_rate() -> float:
        app.use_outbox(outbox)
        with transaction.atomic():
            app.publish_many(events)
        app.use_outbox(None)
        started = time.perf_counter()
        result = Relay(app).run_once()  # default batches
        elapsed = time.perf_counter() - started
        assert result.sent == count, result
        OutboxMessage.objects.all().delete()
        purge(queue)
        return count / elapsed

    def direct_rate() -> float:
        started = time.perf_counter()
        app.publish_many(events)
        elapsed = time.perf_counter() - started
        purge(queue)
        return count / elapsed

    def save_ms(with_event: bool) -> float:
        app.use_outbox(outbox if with_event else None)
        started = time.perf_counter()
        for i in range(saves):
            with transaction.atomic():
                Item.objects.create(name=f"item {i}", status="new")
                if with_event:
                    app.publish_model_event(model, "updated", {**PAYLOAD, "id": i})
        elapsed = time.perf_counter() - started
        app.use_outbox(None)
        Item.objects.all().delete()
        OutboxMessage.objects.all().delete()
        return elapsed / saves * 1000

    try:
        row = Row("outbox relay vs publish_many (PostgreSQL, both confirmed)", "msg/s", target=">= 0.5",
                  note=f"{count} events, relay batches of 1000 (its default)")
        relay = alternate(row, rounds, relay_rate, direct_rate)
        plain, evented = [], []
        for _ in range(rounds):
            plain.append(save_ms(False))
            evented.append(save_ms(True))
        added = Row("outbox: added time per event on a save (PostgreSQL)", "ms",
                    ours=[e - p for e, p in zip(evented, plain, strict=True)], target="median <= 1 ms",
                    note=f"plain save {sorted(plain)[len(plain) // 2]:.2f} ms, save + event "
                         f"{sorted(evented)[len(evented) // 2]:.2f} ms; {saves} saves, each its own commit")
        return [relay, added]
    finally:
        from pubsubpy.testing import delete_topology

        delete_topology(app)
        _drop_database()
