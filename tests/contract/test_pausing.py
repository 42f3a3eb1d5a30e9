"""pause_on and the retry policy on every backend: a handler whose dependency is down pauses the consumer
instead of burning attempts and dead-lettering, probes, and resumes; dead_letter_on dead-letters at once."""

from __future__ import annotations

import threading
import time

import pytest

from pubsubpy import DrainResult
from tests.conftest import running_worker, wait_for
from tests.contract.conftest import Backend
from tests.contract.events import ALL, BOOKING, BookingCreated


class DownstreamUnavailable(Exception):
    """What a client raises for a 503."""


class Dependency:
    def __init__(self) -> None:
        self.down = True
        self.attempts = 0
        self.attempts_while_down = 0
        self.handled: list[int] = []
        self.lock = threading.Lock()

    def call(self, event: BookingCreated) -> None:
        with self.lock:
            self.attempts += 1
            if self.down:
                self.attempts_while_down += 1
                raise DownstreamUnavailable("503 Service Unavailable")
            self.handled.append(event.id)


@pytest.mark.parametrize("concurrency", [1, 4])
def test_a_worker_pauses_while_its_dependency_is_down_then_handles_everything_once(
        backend: Backend, concurrency: int) -> None:
    app = backend.app(schemas=ALL, pause_probe_delay=0.1, pause_probe_delay_max=1.0, max_attempts=2,
                      retry_delay=0.05)
    dependency = Dependency()

    @app.subscribe("Booking.created", pause_on=DownstreamUnavailable)
    def on_booking(event: BookingCreated) -> None:
        dependency.call(event)

    app.declare()
    total = 300  # a backlog that one probe at a time would take a minute over: the breaker must close
    app.publish_many([(BOOKING, "created", {"id": i, "guest": "g"}) for i in range(total)])
    with running_worker(app, concurrency) as worker:
        wait_for(lambda: dependency.attempts_while_down >= 3, timeout=20, what="the trip and a few probes")
        assert app.dead_letter_count() == 0
        health = backend.apps[-1].health  # the PubSub under an AsyncPubSub has it
        assert health.paused() == (f"{__name__}.test_a_worker_pauses_while_its_dependency_is_down_then_"
                                       "handles_everything_once.<locals>.on_booking",)
        ready, why = health.ready()
        assert ready and why.startswith("paused: a dependency of"), why
        dependency.down = False
        # one message per probe would take total x 1 s: the breaker must close on the first probe that succeeds
        wait_for(lambda: len(dependency.handled) == total, timeout=30, what="every message once the dependency is up")
        wait_for(lambda: health.paused() == (), timeout=5, what="the breaker to close")
    [result] = worker.results
    assert sorted(dependency.handled) == list(range(total)), "each message handled once"
    assert result.handled == total and result.dead_lettered == 0 and result.retried == 0, result
    assert result.paused >= 1
    assert dependency.attempts_while_down <= 3 + 2 * concurrency + 10, "probes only, not every message"
    assert app.dead_letter_count() == 0


def test_a_drain_stops_when_a_dependency_is_down_and_leaves_the_messages(backend: Backend) -> None:
    app = backend.app(schemas=ALL)
    dependency = Dependency()

    @app.subscribe("Booking.created", pause_on=(DownstreamUnavailable, TimeoutError))
    def on_booking(event: BookingCreated) -> None:
        dependency.call(event)

    app.declare()
    app.publish_many([(BOOKING, "created", {"id": i, "guest": "g"}) for i in range(10)])
    result: DrainResult = app.drain(timeout=20)
    assert result.stopped_by == "paused" and result.paused >= 1 and result.messages == 0, result
    assert dependency.attempts == result.paused, "nothing ran after the trip"
    dependency.down = False
    again = app.drain(timeout=20)
    assert again.handled == 10 and sorted(dependency.handled) == list(range(10)), again


def test_dead_letter_on_dead_letters_at_once_and_retry_on_retries(backend: Backend) -> None:
    app = backend.app(schemas=ALL, max_attempts=3, retry_delay=0.05)
    runs: list[int] = []

    @app.subscribe("Booking.created", dead_letter_on=LookupError, retry_on=ConnectionError)
    def on_booking(event: BookingCreated) -> None:
        runs.append(event.id)
        if event.id == 1:
            raise KeyError("no such room")  # a LookupError: retrying cannot help
        if event.id == 2 and runs.count(2) == 1:
            raise ConnectionResetError("flaky")

    app.declare()
    app.publish_many([(BOOKING, "created", {"id": i, "guest": "g"}) for i in (1, 2)])
    first = app.drain(timeout=20)
    assert first.dead_lettered == 1 and first.reasons == {"rejected": 1} and first.retried == 1, first
    wait_for(lambda: app.drain(timeout=5).handled == 1, timeout=20, what="the retry of message 2")
    assert runs.count(1) == 1 and runs.count(2) == 2
    [letter] = app.list_dead_letters()
    assert letter.reason == "rejected" and "KeyError" in (letter.error or "")


def test_a_stuck_handler_is_dead_lettered_at_its_time_limit_while_others_run(backend: Backend) -> None:
    app = backend.app(schemas=ALL, max_attempts=1)
    release = threading.Event()
    handled: list[int] = []

    @app.subscribe("Booking.created", time_limit=1)
    def on_booking(event: BookingCreated) -> None:
        if event.id == 0:
            release.wait(10)  # a dead socket: stuck for 10 s
            return
        handled.append(event.id)

    app.declare()
    app.publish_many([(BOOKING, "created", {"id": i, "guest": "g"}) for i in range(5)])
    started = time.monotonic()
    try:
        with running_worker(app, concurrency=1):
            wait_for(lambda: app.dead_letter_count() == 1, timeout=3, what="the time_limit dead letter")
            took = time.monotonic() - started
            wait_for(lambda: sorted(handled) == [1, 2, 3, 4], timeout=5, what="the other messages")
        [letter] = app.list_dead_letters()
        assert letter.reason == "time_limit" and "time_limit=1s" in (letter.error or ""), letter
        assert took < 3
    finally:
        release.set()


def test_more_runs_past_their_time_limit_than_concurrency_stop_the_worker_with_75(backend: Backend) -> None:
    from pubsubpy._worker import exit_code

    app = backend.app(schemas=ALL, max_attempts=1)
    release = threading.Event()

    @app.subscribe("Booking.created", time_limit=0.2)
    def on_booking(event: BookingCreated) -> None:
        release.wait(10)

    app.declare()
    app.publish_many([(BOOKING, "created", {"id": i, "guest": "g"}) for i in range(8)])
    try:
        with running_worker(app, concurrency=2) as worker:
            wait_for(lambda: not worker.thread.is_alive(), timeout=10, what="the worker to stop by itself")
        [result] = worker.results
        assert result.stopped_by == "stuck" and exit_code(result) == 75, result
        assert result.dead_lettered >= 3 and set(result.reasons) == {"time_limit"}, result
    finally:
        release.set()


def test_the_service_wide_breaker_trips_on_a_share_of_failures(backend: Backend) -> None:
    app = backend.app(schemas=ALL, breaker_failure_share=0.5, breaker_window=30, breaker_min_runs=4,
                      pause_probe_delay=0.1, pause_probe_delay_max=0.2, max_attempts=3, retry_delay=0.05)
    broken = threading.Event()
    broken.set()
    attempts_while_broken = 0
    handled: list[int] = []

    @app.subscribe("Booking.created")
    def on_booking(event: BookingCreated) -> None:
        nonlocal attempts_while_broken
        if broken.is_set():
            attempts_while_broken += 1
            raise RuntimeError("the database is down (a plain error: no pause_on)")
        handled.append(event.id)

    app.declare()
    app.publish_many([(BOOKING, "created", {"id": i, "guest": "g"}) for i in range(30)])
    with running_worker(app) as worker:
        health = backend.apps[-1].health
        wait_for(lambda: health.paused() == ("(service-wide breaker)",), timeout=20, what="the breaker to trip")
        wait_for(lambda: attempts_while_broken >= 6, timeout=20, what="a few probes")
        broken.clear()
        wait_for(lambda: sorted(set(handled)) == list(range(30)), timeout=30, what="every message once it works")
    [result] = worker.results
    assert result.dead_lettered == 0, result
    assert attempts_while_broken <= 40, "probes while paused, not three attempts per message"


def test_a_paused_subscriptions_share_is_parked_while_the_others_go_on(backend: Backend) -> None:
    app = backend.app(schemas=ALL, pause_probe_delay=0.2, pause_probe_delay_max=0.4, max_attempts=2)
    dependency = Dependency()
    audited: list[int] = []

    @app.subscribe("Booking.created", pause_on=DownstreamUnavailable)
    def sync_to_crm(event: BookingCreated) -> None:
        dependency.call(event)

    @app.subscribe("Booking.created")
    def audit(event: BookingCreated) -> None:
        audited.append(event.id)

    app.declare()
    parked = f"{app.settings.service_name}.parked"
    app.publish_many([(BOOKING, "created", {"id": i, "guest": "g"}) for i in range(30)])
    with running_worker(app, concurrency=2) as worker:
        wait_for(lambda: sorted(audited) == list(range(30)), timeout=20, what="the other handler to go on")
        health = backend.apps[-1].health
        crm = f"{__name__}.test_a_paused_subscriptions_share_is_parked_while_the_others_go_on.<locals>.sync_to_crm"
        assert health.paused() == (crm,)
        wait_for(lambda: app.transport.queue_depth(parked) >= 25, timeout=10, what="the paused share parked")
        assert dependency.attempts_while_down <= 10, "the paused handler is not tried for every message"
        dependency.down = False
        wait_for(lambda: sorted(dependency.handled) == list(range(30)), timeout=20, what="the parked share")
        wait_for(lambda: health.paused() == (), timeout=5, what="the parking to end")
    [result] = worker.results
    assert sorted(audited) == list(range(30)), "the plain handler ran once per message"
    assert result.dead_lettered == 0 and app.dead_letter_count() == 0, result
    assert app.transport.queue_depth(parked) == 0
