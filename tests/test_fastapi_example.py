"""examples/fastapi_app.py on the real broker: the endpoint publishes, the lifespan's consumer handles;
and the same subscriptions consumed by ``pubsubpy worker --app examples.fastapi_app:bus``."""

from __future__ import annotations

import importlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from pubsubpy.testing import delete_topology
from tests.conftest import Names, wait_for

fastapi_testclient = pytest.importorskip("fastapi.testclient")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def example(rabbit_url: str, names: Names, monkeypatch: pytest.MonkeyPatch) -> Iterator[ModuleType]:
    monkeypatch.setenv("PUBSUBPY_URL", rabbit_url)
    monkeypatch.setenv("SERVICE_NAME", names.service("api"))
    monkeypatch.setenv("MODEL_EXCHANGE", names.exchange())
    monkeypatch.setenv("CONSUME_IN_WEB", "1")
    module = importlib.reload(importlib.import_module("examples.fastapi_app"))  # its bus reads the environment
    yield module
    delete_topology(module.bus.sync)
    module.bus.sync.close()


def test_an_endpoint_publishes_and_the_lifespan_consumer_handles(example: ModuleType) -> None:
    with fastapi_testclient.TestClient(example.api) as client:
        ids = [client.post("/bookings", json={"id": i, "guest": f"guest {i}"}).json()["message_id"]
               for i in range(5)]
        assert len(set(ids)) == 5 and all(len(i) == 32 for i in ids)
        bad = client.post("/bookings", json={"id": "x", "guest": "g"})
        assert bad.status_code == 422, "FastAPI's own validation: nothing published"
        wait_for(lambda: len(client.get("/confirmations").json()) == 5, timeout=30, step=0.05,
                 what="the consumer to confirm five bookings")
        assert sorted(client.get("/confirmations").json()) == [
            f"booking {i} for guest {i} confirmed" for i in range(5)]
    assert example.bus.sync.transport.queue_depth(f"{example.bus.settings.service_name}.events") == 0


def test_the_same_subscriptions_consumed_by_pubsubpy_worker(example: ModuleType, rabbit_url: str,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CONSUME_IN_WEB", "0")
    with fastapi_testclient.TestClient(example.api) as client:
        for i in range(3):
            assert client.post("/bookings", json={"id": i, "guest": "g"}).status_code == 202
    queue = f"{example.bus.settings.service_name}.events"
    env = {**os.environ}
    worker = subprocess.Popen([sys.executable, "-m", "pubsubpy.cli", "worker", "--app", "examples.fastapi_app:bus"],
                              cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for(lambda: example.bus.sync.transport.queue_depth(queue) == 0, timeout=30, step=0.1,
                 what="the worker to consume the three events")
        worker.send_signal(signal.SIGTERM)
        output, _ = worker.communicate(timeout=60)
    finally:
        if worker.poll() is None:
            worker.kill()
    assert worker.returncode == 0, output
    assert "3 messages in" in output and "3 handled, 0 retried, 0 dead-lettered" in output, output
