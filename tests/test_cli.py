"""The pubsubpy command: demo, declare, drain and dlq, on the real broker."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections import Counter

import pytest
from click.testing import CliRunner

import tests.cli_support
from pubsubpy import PubSub, Reject
from pubsubpy.cli._commands import build
from tests.conftest import Names, rabbitmqctl
from tests.contract.conftest import RabbitBackend
from tests.contract.events import ALL, BOOKING, BookingCreated, BookingUpdated


def run(*args: str, input: str | None = None) -> tuple[int, str]:
    result = CliRunner().invoke(build(), list(args), input=input, catch_exceptions=False)
    return result.exit_code, result.output


def test_demo_runs_on_memory_by_default() -> None:
    code, out = run("demo")
    assert code == 0, out
    assert "3 handled" in out and "reason=handler_error" in out and "demo OK" in out


def test_demo_runs_on_rabbitmq(rabbit_url: str) -> None:
    code, out = run("demo", "--url", rabbit_url)
    assert code == 0, out
    assert "guest:***@" in out and "demo OK" in out


def test_console_script_without_arguments_shows_help() -> None:
    proc = subprocess.run([sys.executable, "-m", "pubsubpy.cli", "--help"], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0 and "dlq" in proc.stdout and "drain" in proc.stdout


def test_unreachable_broker_exit_code() -> None:
    code, out = run("dlq", "list", "--url", "amqp://guest:guest@127.0.0.1:1/%2F", "--service", "x")
    assert code == 3 and "error:" in out


def _app(url: str, names: Names, **options: object) -> PubSub:
    app = PubSub(url, schemas=ALL, model_exchange=names.exchange(), service_name=names.service(), **options)  # type: ignore[arg-type]
    tests.cli_support.app = app
    return app


def test_dead_letter_workflow_through_the_cli(rabbit_url: str, names: Names) -> None:
    """100 good messages among bad ones of every reason; list, fix, replay ten by id, purge the rest."""
    app = _app(rabbit_url, names, retry_delay=0, max_attempts=2, max_message_size=2000, unknown_key_window=0)
    broken = {"on": True}
    good: Counter[int] = Counter()

    @app.subscribe("Booking.*")
    def on_booking(event: BookingCreated | BookingUpdated) -> None:
        if isinstance(event, BookingUpdated):
            if event.status == "reject":
                raise Reject("refused by policy")
            if broken["on"]:
                raise RuntimeError(f"bug on booking {event.id}")
        good[event.id] += 1

    @app.subscribe("Parcel.*")
    def on_parcel(event: dict[str, object]) -> None: ...

    app.declare()
    foreign = RabbitBackend(names)
    ex = app.settings.model_exchange
    bad = [
        (b"{oops", {"content_type": "application/json"}),
        (b"\x80\x04pickle", {"content_type": "application/x-python-pickle"}),
        (b'{"id": 1, "guest": "' + b"x" * 3000 + b'"}', {"content_type": "application/json"}),
        (b'{"id": "nope", "guest": "g"}', {"content_type": "application/json"}),
    ]
    for body, props in bad:
        foreign.foreign_publish(ex, "Booking.created", body, **props)
    foreign.foreign_publish(ex, "Parcel.sent", b'{"id": 1}', content_type="application/json")
    app.publish_many([(BOOKING, "created", {"id": i, "guest": "g"}) for i in range(100)])
    failing = app.publish_many([(BOOKING, "updated", {"id": 1000 + i, "status": "s"}) for i in range(15)])
    app.publish_model_event(BOOKING, "updated", {"id": 2000, "status": "reject"})

    result = app.drain(timeout=30)
    assert result.handled == 100
    expected = {"decode_error": 1, "unsupported_content_type": 1, "too_large": 1, "validation_error": 1,
                "unknown_event": 1, "handler_error": 15, "rejected": 1}
    assert result.reasons == expected

    depth = app.dead_letter_count()
    code, out = run("dlq", "list", "--app", "tests.cli_support:app", "--json")
    assert code == 0
    listed = [json.loads(line) for line in out.splitlines()]
    assert Counter(x["reason"] for x in listed) == Counter(expected)
    assert len({x["message_id"] for x in listed}) == len(listed), "each dead letter listed exactly once"
    assert app.dead_letter_count() == depth == 21, "listing leaves the queue as it was"
    code, table = run("dlq", "list", "--app", "tests.cli_support:app", "--reason", "handler_error")
    assert code == 0 and "21" not in table.splitlines()[-1] and "15 dead letter(s)" in table

    code, shown = run("dlq", "show", failing[0][:12], "--app", "tests.cli_support:app")
    assert code == 0 and "bug on booking 1000" in shown
    assert run("dlq", "show", "does-not-exist", "--app", "tests.cli_support:app")[0] == 1

    broken["on"] = False  # the bug is fixed
    code, out = run("dlq", "replay", *failing[:10], "--app", "tests.cli_support:app")
    assert code == 0 and "replayed 10" in out
    assert app.drain(timeout=30).handled == 10
    assert all(good[1000 + i] == 1 for i in range(10))
    remaining = {x.message_id for x in app.list_dead_letters()}
    assert not remaining & set(failing[:10]) and len(remaining) == 11

    code, out = run("dlq", "purge", "--app", "tests.cli_support:app", input="n\n")
    assert code == 1 and app.dead_letter_count() == 11, "declining the prompt deletes nothing"
    code, out = run("dlq", "purge", "--yes", "--app", "tests.cli_support:app")
    assert code == 0 and "purged 11" in out
    assert app.dead_letter_count() == 0
    assert sorted(good) == [*range(100), *range(1000, 1010)] and set(good.values()) == {1}, "no good message lost"
    app.close()


@pytest.mark.slow
def test_replay_survives_a_forced_connection_close(rabbit_url: str, names: Names,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    app = _app(rabbit_url, names, retry_delay=0, max_attempts=1, connection_attempts=10)
    broken = {"on": True}
    handled: Counter[str] = Counter()

    @app.subscribe("Booking.created")
    def on_created(event: BookingCreated) -> None:
        if broken["on"]:
            raise RuntimeError("bug")
        handled[str(event.id)] += 1

    app.declare()
    total = 2000
    app.publish_many([(BOOKING, "created", {"id": i, "guest": "g"}) for i in range(total)])
    assert app.drain(timeout=60).dead_lettered == total
    broken["on"] = False
    killed = threading.Event()
    replayed: list[str] = []

    def progress(_letter: object) -> None:
        replayed.append("x")
        if len(replayed) == total // 2 and not killed.is_set():
            rabbitmqctl("close_all_connections", "fault test: mid-replay")
            killed.set()

    rounds = 0
    while app.dead_letter_count() and rounds < 5:
        rounds += 1
        try:
            app.replay_dead_letters(progress=progress)
        except Exception as exc:  # the replay may stop with the connection; run it again, as an operator would
            print(f"replay round {rounds} stopped: {type(exc).__name__}")
    app.drain(timeout=60)
    duplicates = sum(handled.values()) - len(handled)
    with capsys.disabled():
        print(f"\n[replay fault test] {total} dead letters, connection force-closed mid-replay in {rounds} "
              f"round(s); handled {len(handled)} distinct, {duplicates} duplicates")
    assert killed.is_set()
    assert sorted(map(int, handled)) == list(range(total)), "no dead letter lost"
    assert app.dead_letter_count() == 0
    assert duplicates <= 1
    app.close()


def test_ordered_reset_clears_a_keys_stale_guard() -> None:
    from pubsubpy.testing import MemoryInbox, memory_pubsub

    inbox = MemoryInbox()
    inbox.sequences.update({("h.one", "shop.models.Order:1"): 7, ("h.two", "shop.models.Order:1"): 3,
                            ("h.one", "shop.models.Order:2"): 5})
    tests.cli_support.app = memory_pubsub(inbox=inbox)
    code, out = run("ordered", "reset", "--app", "tests.cli_support:app", "--key", "shop.models.Order:1",
                    "--handler", "h.one")
    assert code == 0 and "cleared 1 record(s) of key shop.models.Order:1 (handler h.one)" in out, out
    code, out = run("ordered", "reset", "--app", "tests.cli_support:app", "--key", "shop.models.Order:1")
    assert code == 0 and "cleared 1 record(s)" in out, out
    assert inbox.sequences == {("h.one", "shop.models.Order:2"): 5}


def test_ordered_reset_without_a_guarded_inbox_says_what_is_missing() -> None:
    from pubsubpy.testing import memory_pubsub

    tests.cli_support.app = memory_pubsub()
    code, out = run("ordered", "reset", "--app", "tests.cli_support:app", "--key", "k")
    assert code == 2 and "has no inbox" in out, out
