"""Waiting out a broker failure: the Backoff policy, and a worker started before its broker answers."""

from __future__ import annotations

import contextlib
import logging
import selectors
import socket
import threading
import time
from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest

from pubsubpy import PubSub
from pubsubpy._consume.backoff import CAP, Backoff
from tests.conftest import Names, free_port, running_worker, wait_for
from tests.contract.events import ALL, BOOKING, BookingCreated

log = logging.getLogger("tests.backoff")


def test_the_pauses_double_up_to_the_cap_and_reset_after_a_success() -> None:
    backoff = Backoff(0.001, log)
    stop = threading.Event()
    seen = []
    for _ in range(3):
        seen.append(backoff.delay)
        assert backoff.pause("down", stop) is False
    assert seen == [0.1, 0.2, 0.4]  # never below 0.1 s, whatever the setting says
    for _ in range(10):
        backoff.delay = min(backoff.delay * 2, CAP)
    assert backoff.delay == CAP
    backoff.reset()
    assert backoff.delay == 0.1


def test_a_pause_ends_as_soon_as_stop_is_set(caplog: pytest.LogCaptureFixture) -> None:
    backoff = Backoff(CAP, log)
    stop = threading.Event()
    threading.Timer(0.05, stop.set).start()
    started = time.monotonic()
    with caplog.at_level(logging.WARNING, logger="tests.backoff"):
        assert backoff.pause("the broker is down", stop) is True
    assert time.monotonic() - started < CAP / 2
    assert [r.getMessage() for r in caplog.records] == ["the broker is down; retrying in 30.0s"]


class _Forwarder:
    """A TCP port forwarded to the broker once ``open()`` is called; refused before."""

    def __init__(self, port: int, target: tuple[str, int]) -> None:
        self.port, self.target = port, target
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def open(self) -> None:
        server = socket.create_server(("127.0.0.1", self.port))
        server.setblocking(False)
        self._thread = threading.Thread(target=self._serve, args=(server,), daemon=True)
        self._thread.start()

    def _serve(self, server: socket.socket) -> None:
        selector = selectors.DefaultSelector()
        selector.register(server, selectors.EVENT_READ)
        peers: dict[socket.socket, socket.socket] = {}
        try:
            while not self._stop.is_set():
                for key, _ in selector.select(0.05):
                    sock = key.fileobj
                    assert isinstance(sock, socket.socket)
                    if sock is server:
                        client, _ = server.accept()
                        upstream = socket.create_connection(self.target)
                        for one, other in ((client, upstream), (upstream, client)):
                            peers[one] = other
                            selector.register(one, selectors.EVENT_READ)
                        continue
                    if sock not in peers:  # closed with its peer in this round
                        continue
                    data = b""
                    with contextlib.suppress(OSError):
                        data = sock.recv(65536)
                    if data:
                        with contextlib.suppress(OSError):
                            peers[sock].sendall(data)
                            continue
                    for one in (sock, peers[sock]):  # one side ended (or failed): close both
                        peers.pop(one, None)
                        selector.unregister(one)
                        one.close()
        finally:  # every socket it made, whatever ended the loop (a leak fails a later test on Python 3.14)
            for sock in (server, *peers):
                sock.close()
            selector.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


@pytest.fixture
def forwarder(rabbit_url: str) -> Iterator[_Forwarder]:
    broker = urlsplit(rabbit_url)  # the broker this run tests (leg 2's RabbitMQ 4.3 is not on 5672)
    proxy = _Forwarder(free_port(), (broker.hostname or "127.0.0.1", broker.port or 5672))
    yield proxy
    proxy.close()


def test_a_worker_started_before_its_broker_answers_declares_and_consumes_once_it_does(
        rabbit_url: str, names: Names, forwarder: _Forwarder, caplog: pytest.LogCaptureFixture) -> None:
    """The worker's declare and consumer are one step of its loop, retried with one backoff: nothing
    listens at first (refused), then the broker appears and the worker handles what is published."""
    exchange, service = names.exchange(), names.service()
    url = f"amqp://guest:guest@127.0.0.1:{forwarder.port}/%2F?connection_attempts=1"
    app = PubSub(url, schemas=ALL, model_exchange=exchange, service_name=service, retry_connect_delay=0.1)
    handled: list[int] = []

    @app.subscribe("Booking.created")
    def on_created(event: BookingCreated) -> None:
        handled.append(event.id)

    caplog.set_level(logging.WARNING, logger="pubsubpy")
    with running_worker(app) as worker:
        wait_for(lambda: any("cannot declare the topology" in r.getMessage() for r in caplog.records),
                 timeout=30, what="the worker's first failed declare")
        forwarder.open()
        wait_for(lambda: app.health.ready()[0], timeout=60, what="the worker consuming")
        publisher = PubSub(rabbit_url, schemas=ALL, model_exchange=exchange)
        publisher.publish_model_event(BOOKING, "created", {"id": 7, "guest": "g"})
        publisher.close()
        wait_for(lambda: handled == [7], timeout=30, what="the message handled")
    assert not worker.thread.is_alive()
    assert worker.results and worker.results[0].handled == 1 and worker.results[0].stopped_by == "stopped"
    app.close()


def test_a_worker_whose_broker_never_answers_stops_when_asked(names: Names,
                                                              caplog: pytest.LogCaptureFixture) -> None:
    url = f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F?connection_attempts=1"
    app = PubSub(url, schemas=ALL, model_exchange=names.exchange(), service_name=names.service(),
                 retry_connect_delay=0.1)

    @app.subscribe("Booking.created")
    def on_created(event: BookingCreated) -> None:
        raise AssertionError("nothing is consumed")

    caplog.set_level(logging.WARNING, logger="pubsubpy")
    with running_worker(app) as worker:
        wait_for(lambda: sum("cannot declare the topology" in r.getMessage() for r in caplog.records) >= 2,
                 timeout=30, what="two paced retries")
    assert not worker.thread.is_alive()
    assert worker.results[0].stopped_by == "stopped" and worker.results[0].messages == 0
