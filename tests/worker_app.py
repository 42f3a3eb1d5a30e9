"""The apps a worker subprocess runs in tests/test_worker.py (``pubsubpy worker --app tests.worker_app:app``,
or ``:async_app``, whose handler is ``async def``).

Names and timing come from the environment; every handled message id is appended to WORKER_LOG, and every
started one to WORKER_LOG.started (before the handler's pause).
"""

from __future__ import annotations

import asyncio
import os
import time

from pubsubpy import MessageInfo, PubSub
from pubsubpy.aio import AsyncPubSub
from tests.contract.events import ALL, BookingCreated

app = PubSub(os.environ["PUBSUBPY_TEST_URL"], schemas=ALL, model_exchange=os.environ["WORKER_EXCHANGE"],
             service_name=os.environ["WORKER_SERVICE"], shutdown_timeout=float(os.environ.get("WORKER_GRACE", "30")))
_log = open(os.environ["WORKER_LOG"], "a", buffering=1)  # noqa: SIM115 - lives as long as the worker
_started = open(os.environ["WORKER_LOG"] + ".started", "a", buffering=1)  # noqa: SIM115
_pause = float(os.environ.get("WORKER_HANDLER_SECONDS", "0.01"))


@app.subscribe("Booking.created")
def record(event: BookingCreated, info: MessageInfo) -> None:
    _started.write(f"{info.message_id}\n")
    time.sleep(_pause)
    _log.write(f"{info.message_id}\n")


async_app = AsyncPubSub(os.environ["PUBSUBPY_TEST_URL"], schemas=ALL, model_exchange=os.environ["WORKER_EXCHANGE"],
                        service_name=os.environ["WORKER_SERVICE"],
                        shutdown_timeout=float(os.environ.get("WORKER_GRACE", "30")))


@async_app.subscribe("Booking.created")
async def record_async(event: BookingCreated, info: MessageInfo) -> None:
    _started.write(f"{info.message_id}\n")
    await asyncio.sleep(_pause)
    _log.write(f"{info.message_id}\n")
