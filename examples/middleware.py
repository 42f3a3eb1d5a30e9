"""A middleware of your own: a tenant on every event, a tenant context around each handler, an audit
line per settled message.

    python -m examples.middleware                      # memory://
    python -m examples.middleware --url amqp://guest:guest@127.0.0.1:5672/%2F
"""

from __future__ import annotations

import argparse
import contextvars
import uuid
from collections.abc import Callable

from pubsubpy import (
    HandlerContext,
    HandlerResult,
    MessageContext,
    Middleware,
    ModelEvent,
    PublishContext,
    PubSub,
    Reject,
)

ORDER = "shop.models.Order"
tenant: contextvars.ContextVar[str] = contextvars.ContextVar("tenant", default="-")


class OrderPlaced(ModelEvent, model=ORDER, event="placed", register=False):
    id: int
    total: int


class Tenancy(Middleware):
    """The publisher's tenant travels in a header; each handler runs with it set again."""

    def __init__(self) -> None:
        self.audit: list[str] = []

    def publish(self, context: PublishContext, send: Callable[[], list[str]]) -> list[str]:
        for message in context.messages:
            message.properties.headers["tenant"] = tenant.get()
        return send()

    def handle(self, context: HandlerContext, run: Callable[[], HandlerResult]) -> HandlerResult:
        token = tenant.set(str(context.message.headers.get("tenant", "-")))
        try:
            return run()
        finally:
            tenant.reset(token)

    def after_message(self, context: MessageContext) -> None:
        reason = f" ({context.reason.value})" if context.reason else ""
        self.audit.append(f"audit: order event {context.message.message_id} for tenant "
                          f"{context.message.headers.get('tenant')}: {context.outcome.value}{reason}")


def run(url: str = "memory://") -> list[str]:
    lines: list[str] = []
    tenancy = Tenancy()
    tag = uuid.uuid4().hex[:8]
    app = PubSub(url, schemas=[OrderPlaced], model_exchange=f"example-{tag}", service_name=f"example-{tag}",
                 middleware=[tenancy], telemetry=False)

    @app.subscribe("Order.placed")
    def bill(order: OrderPlaced) -> None:
        if order.total < 0:
            raise Reject("a negative total")
        lines.append(f"billing order {order.id} for tenant {tenant.get()}")

    try:
        app.declare()
        token = tenant.set("acme")
        try:
            app.publish_model_event(ORDER, "placed", {"id": 1, "total": 30})
            app.publish_model_event(ORDER, "placed", {"id": 2, "total": -5})
        finally:
            tenant.reset(token)
        result = app.drain(timeout=10)
        lines += tenancy.audit
        lines.append(f"drained: {result}")
    finally:
        from pubsubpy.testing import delete_topology

        delete_topology(app)  # throwaway names: remove the queues and exchange again
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="memory://")
    for line in run(parser.parse_args().url):
        print(line)


if __name__ == "__main__":
    main()
