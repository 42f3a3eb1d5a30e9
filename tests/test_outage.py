"""A dependency down for a minute, on a quorum queue: with ``pause_on`` the worker waits instead of
dead-lettering everything (issue 28's outage test, on the real broker, on both legs of the matrix).

A handler calls a local HTTP stub that answers 503 for ``PUBSUBPY_OUTAGE_SECONDS`` (60) while 200 events a
second arrive. Dead letters: none. Handler attempts during the outage: a trip and its probes, at most 20.
After the stub recovers, consumption is back within one probe interval, and every event is handled once.
"""

from __future__ import annotations

import http.server
import os
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator

import pytest

from pubsubpy import PubSub
from pubsubpy.testing import delete_topology
from tests.conftest import RABBIT_URL, Names, require_rabbit, running_worker, wait_for
from tests.contract.events import ALL, BOOKING, BookingCreated

OUTAGE = float(os.environ.get("PUBSUBPY_OUTAGE_SECONDS", "60"))
RATE = 200           # events a second, during the outage
PROBE_MAX = 8.0      # seconds: the longest probe interval of this test's worker


class DownstreamUnavailable(Exception):
    pass


class Stub:
    """An HTTP service that answers 503 until ``up_at``, then 200; counts what it answered."""

    def __init__(self, up_at: float) -> None:
        self.up_at = up_at
        self.answered: Counter[int] = Counter()
        stub = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status = 503 if time.monotonic() < stub.up_at else 200
                stub.answered[status] += 1
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def stub() -> Iterator[Stub]:
    made = Stub(time.monotonic() + OUTAGE)
    yield made
    made.server.shutdown()


@pytest.mark.outage
@pytest.mark.timeout(900)  # a minute of outage, then its backlog, beside other groups
def test_a_minute_long_outage_pauses_the_worker_instead_of_dead_lettering(stub: Stub, names: Names) -> None:
    require_rabbit()
    app = PubSub(RABBIT_URL, schemas=ALL, model_exchange=names.exchange(),  # type: ignore[arg-type]
                 service_name=names.service(), queue_type="quorum", pause_probe_delay=1.0,
                 pause_probe_delay_max=PROBE_MAX, max_attempts=3, retry_delay=0.2, telemetry=False)
    publisher = PubSub(RABBIT_URL, schemas=ALL, model_exchange=app.settings.model_exchange,  # type: ignore[arg-type]
                       telemetry=False)
    handled: Counter[int] = Counter()
    attempts_while_down = 0
    lock = threading.Lock()

    @app.subscribe("Booking.created", pause_on=DownstreamUnavailable)
    def on_booking(event: BookingCreated) -> None:
        nonlocal attempts_while_down
        try:
            urllib.request.urlopen(stub.url, timeout=5).close()
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code == 503:
                with lock:
                    attempts_while_down += 1
                raise DownstreamUnavailable("503 from the stub") from None
            raise
        with lock:
            handled[event.id] += 1

    app.declare()
    total = int(OUTAGE * RATE)
    try:
        with running_worker(app) as worker:
            sent = 0
            started = time.monotonic()
            while sent < total:  # 200 a second, on a schedule, in batches of 20
                due = started + sent / RATE
                if due > time.monotonic():
                    time.sleep(due - time.monotonic())
                publisher.publish_many([(BOOKING, "created", {"id": i, "guest": "g"}) for i in range(sent, sent + 20)])
                sent += 20
            wait_for(lambda: time.monotonic() >= stub.up_at, timeout=OUTAGE + 10, what="the stub to recover")
            assert app.dead_letter_count() == 0, "nothing is dead-lettered while the dependency is down"
            assert attempts_while_down <= 20, f"{attempts_while_down} handler attempts during the outage"
            recovered = time.monotonic()
            wait_for(lambda: sum(handled.values()) > 0, timeout=PROBE_MAX + 2,
                     what="consumption within one probe interval of the recovery")
            back_after = time.monotonic() - recovered
            # the backlog of a minute: generous, as this test runs beside other groups on two shared cores
            wait_for(lambda: len(handled) == total, timeout=600, what="every event handled")
        [result] = worker.results
        assert set(handled.values()) == {1}, "every event handled once"
        assert result.dead_lettered == 0 and result.handled == total, result
        assert app.dead_letter_count() == 0
        print(f"[outage test] {OUTAGE:g}s outage at {RATE}/s: {attempts_while_down} attempts while down, "
              f"{result.paused} given back, consuming again {back_after:.1f}s after the recovery, "
              f"{stub.answered[503]} 503s answered")
    finally:
        delete_topology(app)
        publisher.close()
