"""The retry policy without a broker: exception lists and their precedence, the jitter set of delays."""

from __future__ import annotations

import pytest

from pubsubpy import ConfigurationError, Reject
from pubsubpy._engine.runs import run_handler
from pubsubpy.messages import Outcome, Reason
from pubsubpy.router import Router, exception_policy
from pubsubpy.settings import Settings
from pubsubpy.topology import build_topology, retry_delays_ms


def test_a_class_in_two_lists_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match="ValueError is in both retry_on= and dead_letter_on="):
        exception_policy(retry_on=(ValueError, OSError), dead_letter_on=ValueError)
    with pytest.raises(ConfigurationError, match="dead_letter_on= takes exception classes, got 'oops'"):
        exception_policy(dead_letter_on=("oops",))  # type: ignore[arg-type]
    assert exception_policy(retry_on=OSError, dead_letter_on=()) == {"retry_on": (OSError,), "dead_letter_on": ()}


def _outcome(exc: Exception, attempt: int = 1, **lists: object) -> tuple[Outcome, Reason | None]:
    router = Router()

    def handler(event: dict[str, object]) -> None:
        raise exc

    router.subscribe("a.b", max_attempts=3, **lists)(handler)  # type: ignore[arg-type]
    [sub] = router.subscriptions
    result = run_handler(sub, sub.handler, ({},), "a.b", attempt, 3)
    assert result is not None
    return result.outcome, result.reason


def test_dead_letter_on_is_matched_before_retry_on_and_unmatched_ones_retry() -> None:
    lists = {"dead_letter_on": (LookupError,), "retry_on": (ConnectionError,)}
    assert _outcome(KeyError("k"), **lists) == (Outcome.DEAD_LETTERED, Reason.REJECTED), "a subclass matches"
    assert _outcome(ConnectionResetError(), **lists) == (Outcome.RETRIED, None)
    assert _outcome(RuntimeError(), **lists) == (Outcome.RETRIED, None), "unmatched: retried as before"
    assert _outcome(RuntimeError(), attempt=3, **lists) == (Outcome.DEAD_LETTERED, Reason.HANDLER_ERROR)
    assert _outcome(Reject("no"), **lists) == (Outcome.DEAD_LETTERED, Reason.REJECTED)


def test_the_jitter_set_is_four_delays_per_step_down_to_five_eighths() -> None:
    settings = Settings(retry_delay=1.0, retry_delay_max=3.0)
    assert retry_delays_ms(settings, 1) == (1000, 875, 750, 625)
    assert retry_delays_ms(settings, 2) == (2000, 1750, 1500, 1250)
    assert retry_delays_ms(settings, 3) == (3000, 2625, 2250, 1875), "capped at retry_delay_max, jitter below it"
    assert retry_delays_ms(Settings(retry_delay=1.0, retry_jitter=False), 2) == (2000,)
    assert retry_delays_ms(Settings(retry_delay=0), 1) == (0,), "no delay: straight back to the service queue"


def test_every_delay_of_the_set_is_a_declared_retry_queue() -> None:
    settings = Settings(retry_delay=1.0, unknown_key_window=0, service_name="svc")
    topology = build_topology(settings, "svc", ["a.b"], max_attempts=3)
    assert sorted(q.arguments["x-message-ttl"] for q in topology.retry_queues) == [
        625, 750, 875, 1000, 1250, 1500, 1750, 2000]
