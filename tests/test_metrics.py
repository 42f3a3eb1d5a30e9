"""Metrics on the real broker: the counters and histograms a handled, retried, dead-lettered and
unroutable message move; and a worker's /metrics and /healthz over HTTP."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from pubsubpy import MessageInfo, PubSub, Reject
from pubsubpy.telemetry._metrics import Metrics
from tests.conftest import RABBIT_URL, Names, free_port, rabbitmqctl, wait_for
from tests.contract.events import ALL, BOOKING, ROOM, BookingCreated, BookingUpdated

ROOT = Path(__file__).resolve().parent.parent


def _points(reader: InMemoryMetricReader) -> dict[str, list[tuple[dict[str, Any], Any]]]:
    """metric name -> [(attributes, value or histogram count)]"""
    found: dict[str, list[tuple[dict[str, Any], Any]]] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    value = getattr(point, "value", None)
                    found.setdefault(metric.name, []).append(
                        (dict(point.attributes or {}), value if value is not None else point.count))  # type: ignore[attr-defined]
    return found


def _total(points: list[tuple[dict[str, Any], Any]], **match: Any) -> Any:
    return sum(value for attributes, value in points
               if all(attributes.get(key.replace("__", ".")) == want for key, want in match.items()))


def test_counters_and_histograms_move_with_each_outcome(rabbit_url: str, names: Names) -> None:
    reader = InMemoryMetricReader()
    provider = MeterProvider(metric_readers=[reader])
    exchange = names.exchange()
    shop = PubSub(rabbit_url, schemas=ALL, model_exchange=exchange, telemetry=False,
                  middleware=[Metrics(provider)])
    billing = PubSub(rabbit_url, schemas=ALL, model_exchange=exchange, service_name=names.service("billing"),
                     telemetry=False, middleware=[Metrics(provider)], retry_delay=0.05, max_attempts=2)
    attempts: list[int] = []

    @billing.subscribe("Booking.created")
    def flaky(event: BookingCreated, info: MessageInfo) -> None:
        attempts.append(info.attempt)
        if event.id == 2 and info.attempt == 1:
            raise RuntimeError("retry me")

    @billing.subscribe("Booking.updated")
    def refuse(event: BookingUpdated) -> None:
        raise Reject("no")

    billing.declare()
    shop.publish_model_event(BOOKING, "created", {"id": 1, "guest": "a"})
    shop.publish_many([(BOOKING, "created", {"id": 2, "guest": "b"}), (BOOKING, "updated", {"id": 2, "status": "x"})])
    shop.publish_model_event(ROOM, "cleaned", {"number": 4})  # nobody subscribes Room: unroutable

    def settled() -> bool:
        billing.drain(timeout=5)
        return len(attempts) == 3
    wait_for(settled, timeout=30, what="the retry to be handled")

    points = _points(reader)
    sent = points["messaging.client.sent.messages"]
    assert _total(sent) == 4
    assert [a.get("error.type") for a, _ in sent if a.get("error.type")] == ["unroutable"]
    assert _total(sent, error__type="unroutable", messaging__destination__name=f"{exchange}:Room.cleaned") == 1
    assert all(a["messaging.system"] == "rabbitmq" and a["messaging.operation.name"] == "publish" for a, _ in sent)
    assert _total(points["messaging.client.operation.duration"]) == 3  # three publish calls

    consumed = points["messaging.client.consumed.messages"]
    assert _total(consumed, pubsubpy__outcome="handled") == 2
    assert _total(consumed, pubsubpy__outcome="retried") == 1
    assert _total(consumed, pubsubpy__outcome="dead_lettered", pubsubpy__reason="rejected") == 1
    process = points["messaging.process.duration"]
    assert _total(process) == 4  # four handler runs
    assert _total(process, error__type="RuntimeError") == 1
    assert _total(process, error__type="Reject") == 1
    assert _total(points["pubsubpy.message.end_to_end.duration"]) == 4
    shop.close()
    billing.close()


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError as exc:
        return 0, str(exc)


@pytest.fixture
def vhost(rabbit_url: str) -> Iterator[str]:
    """A virtual host of its own, so the test can take the broker away from just this worker."""
    name = f"t-vhost-{os.getpid()}-{free_port()}"
    rabbitmqctl("add_vhost", name)
    rabbitmqctl("set_permissions", "-p", name, "guest", ".*", ".*", ".*")
    yield name
    subprocess.run(["rabbitmqctl", "delete_vhost", name], capture_output=True, timeout=60)


def test_a_worker_serves_metrics_and_a_readiness_probe_that_fails_when_the_broker_is_gone(
        vhost: str, names: Names, tmp_path: Path) -> None:
    url = RABBIT_URL.rsplit("/", 1)[0] + "/" + vhost
    exchange, service = names.exchange(), names.service()
    app = PubSub(url, schemas=ALL, model_exchange=exchange, service_name=service, telemetry=False)

    @app.subscribe("Booking.created")
    def placeholder(event: BookingCreated) -> None: ...

    app.declare()
    port = free_port()
    env = {**os.environ, "PUBSUBPY_TEST_URL": url, "WORKER_EXCHANGE": exchange, "WORKER_SERVICE": service,
           "WORKER_LOG": str(tmp_path / "handled.log"), "WORKER_HANDLER_SECONDS": "0"}
    worker = subprocess.Popen(
        [sys.executable, "-m", "pubsubpy.cli", "worker", "--app", "tests.worker_app:app", "--metrics-port", str(port)],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: _get(port, "/healthz")[0] == 200, timeout=30, what="/healthz to answer 200")
        ids = [app.publish_model_event(BOOKING, "created", {"id": i, "guest": "g"}) for i in range(5)]
        handled = 'pubsubpy_outcome="handled"'

        def counted() -> bool:
            status, text = _get(port, "/metrics")
            return status == 200 and any(line.startswith("messaging_client_consumed_messages_total")
                                         and handled in line and line.endswith(" 5.0") for line in text.splitlines())
        wait_for(counted, timeout=30, what="the consumed counter to reach 5")
        _, text = _get(port, "/metrics")
        lines = text.splitlines()
        assert any(line.startswith("messaging_process_duration_seconds_count") and line.endswith(" 5.0")
                   for line in lines)
        assert any(line.startswith("pubsubpy_message_end_to_end_duration_seconds_count") and line.endswith(" 5.0")
                   for line in lines)
        assert any(line.startswith("pubsubpy_queue_messages") and f'pubsubpy_queue="{service}.events"' in line
                   and line.endswith(" 0.0") for line in lines)
        assert any(line.startswith("pubsubpy_consumer_pauses") and line.endswith(" 0.0") for line in lines), \
            "the pause counter is served, at 0 for a worker whose dependencies were up"
        assert (tmp_path / "handled.log").read_text().split() == ids
        assert _get(port, "/healthz") == (200, f"consuming from {service}.events\n")
        app.close()

        rabbitmqctl("delete_vhost", vhost)  # the broker closes the worker's connection and refuses it back
        wait_for(lambda: _get(port, "/healthz")[0] == 503, timeout=30, what="/healthz to answer 503")
        assert worker.poll() is None, "the worker must keep trying, not exit"
        status, why = _get(port, "/healthz")
        assert status == 503 and ("reconnecting" in why or "no consumer" in why)
    finally:
        worker.terminate()
        try:
            output = worker.communicate(timeout=60)[0]
        except subprocess.TimeoutExpired:
            worker.kill()
            output = worker.communicate()[0]
    assert worker.returncode == 0, output
