"""Two versions of one event between two services, on a real broker (or memory:// by default).

    python -m examples.versions --url amqp://guest:guest@127.0.0.1:5672/%2F

Version 2 of ``Invoice.issued`` counts cents where version 1 counted euros. The
schema's author declares the step v1 -> v2 once (``@pubsubpy.upcaster``); then:

- an old producer (knows only v1) -> a new consumer (wants v2): the handler gets
  the v1 payload carried up to a v2 model;
- a new producer (sends v2) -> an old consumer (knows only v1): read as v1 (the
  fields v1 needs are still there; ``full`` compatibility promises this).
"""

from __future__ import annotations

import argparse
import uuid

import pubsubpy
from pubsubpy import MessageInfo, ModelEvent, PubSub
from pubsubpy.transports.memory import MemoryBroker, MemoryTransport

INVOICE = "billing.models.Invoice"


class IssuedV1(ModelEvent, model=INVOICE, event="issued", register=False):
    id: int
    amount: int  # whole euros


class IssuedV2(ModelEvent, model=INVOICE, event="issued", version=2, register=False):
    id: int
    amount: int  # kept, so version 1 consumers still read version 2 messages
    amount_cents: int
    currency: str = "EUR"


@pubsubpy.upcaster(IssuedV1, IssuedV2)
def to_cents(old: IssuedV1) -> IssuedV2:
    return IssuedV2(id=old.id, amount=old.amount, amount_cents=old.amount * 100)


def run(url: str) -> list[str]:
    tag = uuid.uuid4().hex[:8]
    exchange = f"versions-{tag}"
    lines: list[str] = []
    broker = MemoryBroker()  # memory://: the four services share one in-process broker

    def service(name: str, schemas: list[type[ModelEvent]]) -> PubSub:
        transport = MemoryTransport(broker) if url == "memory://" else None
        return PubSub(url, schemas=schemas, model_exchange=exchange, service_name=f"{name}-{tag}", transport=transport)

    old_producer = service("old-shop", [IssuedV1])
    new_producer = service("shop", [IssuedV1, IssuedV2])
    new_consumer = service("new-billing", [IssuedV1, IssuedV2])
    old_consumer = service("old-billing", [IssuedV1])

    @new_consumer.subscribe("Invoice.issued")
    def wants_v2(event: IssuedV2, info: MessageInfo) -> None:
        lines.append(f"new consumer: {event!r} (sent as v{info.schema_version})")

    @old_consumer.subscribe("Invoice.issued")
    def wants_v1(event: IssuedV1, info: MessageInfo) -> None:
        lines.append(f"old consumer: {event!r} (sent as v{info.schema_version})")

    apps = [old_producer, new_producer, new_consumer, old_consumer]
    try:
        new_consumer.declare()
        old_consumer.declare()
        old_producer.publish_model_event(INVOICE, "issued", {"id": 1, "amount": 12})
        new_producer.publish_model_event(INVOICE, "issued", {"id": 2, "amount": 5, "amount_cents": 500})
        for consumer in (new_consumer, old_consumer):
            result = consumer.drain(timeout=30)
            lines.append(f"{(consumer.settings.service_name or '').split('-')[0]} consumer drained: {result}")
    finally:
        if url != "memory://":
            from pubsubpy.testing import delete_topology

            for app in (new_consumer, old_consumer):
                delete_topology(app, exchange=False)
            new_producer.transport.delete(new_consumer.topology(), exchange=True)
        for app in apps:
            app.close()
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="memory://")
    for line in run(parser.parse_args().url):
        print(line)


if __name__ == "__main__":
    main()
