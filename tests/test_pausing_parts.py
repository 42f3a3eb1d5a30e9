"""The parts behind pausing and time limits, without a broker: the breaker, the failure share, timed runs."""

from __future__ import annotations

import logging
import threading

import pytest

from pubsubpy import TimeLimitExceeded
from pubsubpy._consume.pausing import Breaker, FailureShare
from pubsubpy._consume.time_limits import TimedRuns
from tests.conftest import wait_for


def test_the_breaker_opens_once_per_outage_and_its_probe_delay_doubles_to_a_cap(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="pubsubpy.drain")
    breaker = Breaker(1.0, 5.0)
    breaker.trip(("a",), "down", "q")
    breaker.trip(("a", "b"), "down", "q")
    assert breaker.paused == ("a", "b") and breaker.trips == 1
    assert [breaker.next_probe_delay() for _ in range(5)] == [1.0, 2.0, 4.0, 5.0, 5.0]
    breaker.close("q")
    assert not breaker.open and breaker.next_probe_delay() == 1.0, "a recovery starts the delays over"
    assert [r.levelname for r in caplog.records] == ["WARNING", "WARNING"], "one line per trip, one per recovery"


def test_the_failure_share_needs_enough_messages_in_its_window() -> None:
    share = FailureShare(0.5, window=60, min_runs=4)
    assert [share.record(failed) for failed in (True, True, True)] == [False, False, False], "3 < min_runs"
    assert share.record(False), "3 failures of 4"
    share.reset()
    assert not any(share.record(failed) for failed in (False, False, False, True))


def test_a_timed_run_returns_raises_or_is_abandoned_at_its_limit() -> None:
    runs = TimedRuns()
    owner = object()
    assert runs.run(lambda: 42, 1.0, "h", owner) == 42
    with pytest.raises(KeyError):
        runs.run(lambda: {}["x"], 1.0, "h", owner)
    release = threading.Event()
    with pytest.raises(TimeLimitExceeded, match=r"handler h still running after time_limit=0.05s"):
        runs.run(lambda: release.wait(10), 0.05, "h", owner)
    assert runs.live == 1 and runs.running(owner) and not runs.running(object())
    release.set()
    wait_for(lambda: not runs.running(owner), timeout=5, what="the abandoned run to return")
    assert runs.live == 0 and not runs.running(owner), "the abandoned run is forgotten once it returns"
