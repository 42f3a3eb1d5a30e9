"""The consumer on the real broker: long handlers keep their connection; every wait has one deadline."""

from __future__ import annotations

import _thread
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable

import pytest

from pubsubpy import BrokerUnavailable, MessageInfo, PubSub, TransportError
from pubsubpy.health import WorkerHealth
from tests.conftest import Names, free_port, wait_for
from tests.contract.events import ALL, BOOKING, BookingCreated


def _app(url: str, names: Names, **options: object) -> PubSub:
    options.setdefault("model_exchange", names.exchange())
    options.setdefault("service_name", names.service())
    return PubSub(url, schemas=ALL, **options)  # type: ignore[arg-type]


def test_a_handler_longer_than_five_heartbeats_runs_once(rabbit_url: str, names: Names) -> None:
    """Before: pika sent no heartbeats while a handler ran, the broker closed the connection, the
    message came back and ran again, forever (3 messages x 7 s with heartbeat=2: 10 runs in 70 s)."""
    app = _app(rabbit_url, names, heartbeat=1)
    runs: Counter[int] = Counter()
    redelivered: list[bool] = []

    @app.subscribe("Booking.created")
    def slow(event: BookingCreated, info: MessageInfo) -> None:
        runs[event.id] += 1
        redelivered.append(info.redelivered)
        time.sleep(5.5)  # more than five heartbeat intervals

    app.declare()
    app.publish_many([(BOOKING, "created", {"id": i, "guest": "g"}) for i in range(2)])
    result = app.drain(timeout=60)
    assert runs == {0: 1, 1: 1}
    assert redelivered == [False, False]
    assert (result.handled, result.duplicates, result.redelivered) == (2, 0, 0)
    app.close()


def test_a_worker_stays_ready_while_its_one_handler_runs_long(rabbit_url: str, names: Names) -> None:
    """At concurrency 1 the loop runs the handler on its own thread; the thread watching it turns the
    connection's I/O, and reports the loop alive, while the handler runs (3 s, against a probe that
    calls a loop stale after 1 s)."""
    app = _app(rabbit_url, names, heartbeat=1)
    app.health = WorkerHealth(stale_after=1.0)
    started, done = threading.Event(), threading.Event()

    @app.subscribe("Booking.created")
    def slow(event: BookingCreated) -> None:
        started.set()
        time.sleep(3.0)
        done.set()

    app.declare()
    app.publish_model_event(BOOKING, "created", {"id": 1, "guest": "g"})
    stop = threading.Event()
    results = []
    worker = threading.Thread(target=lambda: results.append(app.run(stop=stop)))
    worker.start()
    try:
        assert started.wait(30), "the handler did not start"
        readiness = []
        while not done.is_set():
            readiness.append(app.health.ready())
            time.sleep(0.1)
        assert len(readiness) >= 20 and all(ready for ready, _ in readiness), \
            [why for ready, why in readiness if not ready][:3]
    finally:
        stop.set()
        worker.join(30)
    assert results and results[0].handled == 1 and results[0].redelivered == 0
    app.close()


def _drain_again_until_handled(url: str, names: Names, app: PubSub, handler: Callable[..., None]) -> None:
    """A second app on ``app``'s queue drains (with ``handler``) until the abandoned message has come back."""
    again = _app(url, names, model_exchange=app.settings.model_exchange, service_name=app.settings.service_name)
    again.subscribe("Booking.created")(handler)
    wait_for(lambda: again.drain(timeout=10).handled == 1, timeout=30, what="the message to come back")
    again.close()


def test_ctrl_c_in_a_long_handler_stops_the_drain_at_once_and_the_message_comes_back(
        rabbit_url: str, names: Names) -> None:
    """KeyboardInterrupt reaches the thread that called drain() while the handler (on the loop's thread)
    sleeps: drain() raises it within a second, and the unfinished message is delivered again."""
    app = _app(rabbit_url, names)
    runs: list[bool] = []

    @app.subscribe("Booking.created")
    def interrupted(event: BookingCreated, info: MessageInfo) -> None:
        runs.append(info.redelivered)
        if len(runs) == 1:
            _thread.interrupt_main()  # as Ctrl-C would, on the test's (main) thread
            time.sleep(10)

    app.declare()
    app.publish_model_event(BOOKING, "created", {"id": 1, "guest": "g"})
    began = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        app.drain(timeout=30)
    assert time.monotonic() - began < 5, "the 10 s handler was waited for"
    _drain_again_until_handled(rabbit_url, names, app, interrupted)
    assert runs == [False, True]
    app.close()


def test_forcing_a_stop_during_a_long_handler_returns_at_once_with_the_message_abandoned(
        rabbit_url: str, names: Names) -> None:
    """run(stop, force): with the one handler 10 s into its run, stop then force: run() returns within a
    couple of seconds, saying so, and the message comes back to run again."""
    app = _app(rabbit_url, names)
    started = threading.Event()
    runs: list[bool] = []

    @app.subscribe("Booking.created")
    def slow(event: BookingCreated, info: MessageInfo) -> None:
        runs.append(info.redelivered)
        if len(runs) == 1:
            started.set()
            time.sleep(10)

    app.declare()
    app.publish_model_event(BOOKING, "created", {"id": 1, "guest": "g"})
    stop, force = threading.Event(), threading.Event()
    results = []
    worker = threading.Thread(target=lambda: results.append(app.run_with(None, 1, stop, force, signals=False)))
    worker.start()
    assert started.wait(30), "the handler did not start"
    stop.set()
    force.set()
    began = time.monotonic()
    worker.join(10)
    assert not worker.is_alive() and time.monotonic() - began < 3, "the 10 s handler was waited for"
    [result] = results
    assert (result.stopped_by, result.abandoned, result.handled) == ("forced", 1, 0)
    assert result.seconds > 0
    _drain_again_until_handled(rabbit_url, names, app, slow)
    assert runs == [False, True]
    app.close()


def _subscribed(url: str) -> PubSub:
    app = PubSub(url, schemas=ALL, service_name="deadline-test")

    @app.subscribe("Booking.created")
    def never(event: BookingCreated) -> None:
        raise AssertionError("no broker, no message")

    return app


def test_drain_against_a_refused_port_keeps_its_timeout() -> None:
    """Before: connect attempts were retried inside an outer retry loop: 12 attempts, 7.6 s for timeout=2."""
    app = _subscribed(f"amqp://guest:guest@127.0.0.1:{free_port()}/%2F")
    started = time.monotonic()
    with pytest.raises(BrokerUnavailable):
        app.drain(timeout=2)
    assert time.monotonic() - started < 3.0


@pytest.mark.parametrize("timeout", [2.0])
def test_drain_against_a_silent_broker_keeps_its_timeout(black_hole: int, timeout: float) -> None:
    app = _subscribed(f"amqp://guest:guest@127.0.0.1:{black_hole}/%2F")
    started = time.monotonic()
    with pytest.raises(TransportError):
        app.drain(timeout=timeout)
    assert time.monotonic() - started < timeout + 1.0


def test_publish_against_a_silent_broker_is_bounded_by_confirm_plus_connect(black_hole: int) -> None:
    app = PubSub(f"amqp://guest:guest@127.0.0.1:{black_hole}/%2F", schemas=ALL, connect_timeout=1.0,
                 confirm_timeout=1.0)
    started = time.monotonic()
    with pytest.raises(TransportError):
        app.publish_model_event(BOOKING, "created", {"id": 1, "guest": "g"})
    assert time.monotonic() - started < 1.0 + 1.0 + 1.0


def test_connection_attempts_means_attempts() -> None:
    port = free_port()
    app = _subscribed(f"amqp://guest:guest@127.0.0.1:{port}/%2F,amqp://guest:guest@127.0.0.1:{port}/%2F")
    app2 = PubSub(app.settings.amqp_url, schemas=ALL, service_name="deadline-test", connection_attempts=2,
                  retry_connect_delay=0)
    tries: list[float] = []
    real_socket = socket.socket.connect

    def counting(self: socket.socket, address: object) -> None:
        if isinstance(address, tuple) and address[1] == port:
            tries.append(time.monotonic())
        real_socket(self, address)  # type: ignore[arg-type]

    socket.socket.connect = counting  # type: ignore[method-assign]
    try:
        with pytest.raises(BrokerUnavailable):
            app2.publish_model_event(BOOKING, "created", {"id": 1, "guest": "g"})
    finally:
        socket.socket.connect = real_socket  # type: ignore[method-assign]
    assert len(tries) == 2 * 2, "two rounds over two URLs"
    app.close()


def test_dead_letter_commands_keep_their_timeout_against_a_silent_broker(black_hole: int) -> None:
    from click.testing import CliRunner

    from pubsubpy.cli._commands import build

    url = f"amqp://guest:guest@127.0.0.1:{black_hole}/%2F"
    app = _subscribed(url)
    started = time.monotonic()
    with pytest.raises(TransportError):
        app.list_dead_letters(timeout=2)
    assert time.monotonic() - started < 3.0
    started = time.monotonic()
    outcome = CliRunner().invoke(build(), ["dlq", "list", "--url", url, "--service", "deadline-test", "--timeout", "2"])
    assert outcome.exit_code in (1, 3), outcome.output
    assert time.monotonic() - started < 3.0


_WITHOUT_TIMEOUT: dict[str, Callable[[PubSub], object]] = {
    "list_dead_letters": lambda app: app.list_dead_letters(),
    "dead_letter_count": lambda app: app.dead_letter_count(),
    "replay_dead_letters": lambda app: app.replay_dead_letters(),
    "declare": lambda app: app.declare(),
    "publish_model_event": lambda app: app.publish_model_event(BOOKING, "created", {"id": 1, "guest": "g"}),
}


@pytest.mark.parametrize("urls", [1, 2])
@pytest.mark.parametrize("call", sorted(_WITHOUT_TIMEOUT))
def test_calls_without_timeout_are_bounded_by_connect_times_urls_plus_confirm(
        black_hole: int, call: str, urls: int) -> None:
    """Without ``timeout`` a call is bounded by ``connect_timeout x len(urls) + confirm_timeout``; a broker that
    accepts TCP and never answers was waited on for 19.5 s with connect 3 / confirm 4 (several rounds of
    AMQP handshakes of 2 x connect_timeout each)."""
    url = ",".join([f"amqp://guest:guest@127.0.0.1:{black_hole}/%2F"] * urls)
    app = PubSub(url, schemas=ALL, service_name="deadline-test", connect_timeout=1.0, confirm_timeout=1.0)

    @app.subscribe("Booking.created")
    def never(event: BookingCreated) -> None: ...

    started = time.monotonic()
    with pytest.raises(TransportError):
        _WITHOUT_TIMEOUT[call](app)
    assert time.monotonic() - started < 1.0 * urls + 1.0 + 0.5
