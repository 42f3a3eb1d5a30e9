"""``pubsubpy worker`` as a real subprocess on the real broker: graceful SIGTERM, hard SIGKILL."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from pubsubpy import MessageInfo, PubSub
from tests.conftest import Names, wait_for
from tests.contract.events import ALL, BOOKING, BookingCreated

ROOT = Path(__file__).resolve().parent.parent
TOTAL = 400


def _start(rabbit_url: str, names: Names, log: Path, *, concurrency: int, pause: float,
           grace: float = 30.0, worker_app: str = "app") -> tuple[PubSub, subprocess.Popen[str]]:
    exchange, service = names.exchange(), names.service()
    app = PubSub(rabbit_url, schemas=ALL, model_exchange=exchange, service_name=service)

    @app.subscribe("Booking.created")
    def placeholder(event: BookingCreated) -> None: ...

    app.declare()  # the queue exists before anything is published (deploy-time declare)
    env = {**os.environ, "PUBSUBPY_TEST_URL": rabbit_url, "WORKER_EXCHANGE": exchange, "WORKER_SERVICE": service,
           "WORKER_LOG": str(log), "WORKER_HANDLER_SECONDS": str(pause), "WORKER_GRACE": str(grace)}
    worker = subprocess.Popen(
        [sys.executable, "-m", "pubsubpy.cli", "worker", "--app", f"tests.worker_app:{worker_app}",
         "--concurrency", str(concurrency)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return app, worker


def _lines(log: Path) -> list[str]:
    return log.read_text().split() if log.exists() else []


def _drain_the_rest(rabbit_url: str, app: PubSub) -> list[str]:
    rest = PubSub(rabbit_url, schemas=ALL, model_exchange=app.settings.model_exchange,
                  service_name=app.settings.service_name)
    seen: list[str] = []

    @rest.subscribe("Booking.created")
    def record(event: BookingCreated, info: MessageInfo) -> None:
        seen.append(info.message_id or "")

    rest.drain(timeout=60)
    rest.close()
    return seen


@pytest.mark.parametrize(("concurrency", "worker_app"), [(1, "app"), (8, "app"), (8, "async_app")])
def test_sigterm_mid_way_handles_every_message_exactly_once(rabbit_url: str, names: Names, tmp_path: Path,
                                                           concurrency: int, worker_app: str) -> None:
    log = tmp_path / "handled.txt"
    app, worker = _start(rabbit_url, names, log, concurrency=concurrency, pause=0.02, worker_app=worker_app)
    try:
        ids = app.publish_many([(BOOKING, "created", {"id": i, "guest": "g"}) for i in range(TOTAL)])
        wait_for(lambda: len(_lines(log)) >= 100, timeout=60, what="the worker to handle 100 messages")
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, output
    assert "worker started: service" in output and f"concurrency {concurrency}," in output
    by_worker = _lines(log)
    assert len(by_worker) < TOTAL, "SIGTERM came too late to test anything"
    by_drain = _drain_the_rest(rabbit_url, app)
    counts = Counter(by_worker + by_drain)
    assert set(counts) == set(ids), "no message lost"
    assert max(counts.values()) == 1, f"a graceful stop repeats nothing: {counts.most_common(3)}\n{output}"
    app.close()


def test_sigkill_mid_way_loses_nothing(rabbit_url: str, names: Names, tmp_path: Path) -> None:
    log = tmp_path / "handled.txt"
    app, worker = _start(rabbit_url, names, log, concurrency=4, pause=0.02)
    try:
        ids = app.publish_many([(BOOKING, "created", {"id": i, "guest": "g"}) for i in range(TOTAL)])
        wait_for(lambda: len(_lines(log)) >= 100, timeout=60, what="the worker to handle 100 messages")
        worker.kill()
        worker.communicate(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
    by_drain = _drain_the_rest(rabbit_url, app)
    counts = Counter(_lines(log) + by_drain)
    assert set(counts) == set(ids), "no message lost"
    print(f"\n[sigkill test] {TOTAL} published; {sum(counts.values()) - TOTAL} handled twice")
    app.close()


@pytest.mark.parametrize("signals, grace", [(1, 1.0), (2, 60.0)], ids=["grace-period-runs-out", "second-signal"])
def test_a_cut_short_stop_exits_non_zero_at_once_and_returns_the_message(
        rabbit_url: str, names: Names, tmp_path: Path, signals: int, grace: float) -> None:
    log = tmp_path / "handled.txt"
    app, worker = _start(rabbit_url, names, log, concurrency=1, pause=30.0, grace=grace)
    try:
        [sent] = app.publish_many([(BOOKING, "created", {"id": 1, "guest": "slow"})])
        # its handler has started (an empty queue is not enough: the delivery may still be on its way)
        started_log = log.with_name(log.name + ".started")
        wait_for(lambda: _lines(started_log) == [sent], timeout=30, what="the worker's handler to start")
        started = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        if signals == 2:  # again until it exits: signals sent too close together can coalesce into one
            wait_for(lambda: worker.send_signal(signal.SIGTERM) or worker.poll() is not None, timeout=10, step=0.5,
                     what="the worker to exit on a second SIGTERM")
        output, _ = worker.communicate(timeout=20)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 1, output
    assert time.monotonic() - started < 10, "the 30 s handler was not waited for"
    assert "abandoned" in output
    assert _lines(log) == []
    assert _drain_the_rest(rabbit_url, app) == [sent], "the unfinished message came back"
    app.close()
