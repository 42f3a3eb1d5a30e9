"""The event log and replay (issue 30) on ``memory://``: the semantics, without a broker.

The same scenarios run on RabbitMQ in tests/test_replay_rabbitmq.py; the stream's own contract (offsets,
nack refused, headers dropped) in tests/contract.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from pubsubpy import ConfigurationError, MessageInfo, ModelEvent, PayloadValidationError, PubSub, Reject
from pubsubpy._replay.window import parse_point
from pubsubpy.cli._commands import build
from pubsubpy.cli._replay import ProgressLine
from pubsubpy.envelope import H_LOG_MARKER, H_REPLAYED
from pubsubpy.errors import LogGap, ReplayStopped
from pubsubpy.messages import ReplayResult
from pubsubpy.testing import MemoryInbox, memory_broker
from pubsubpy.transports.memory import MemoryTransport, named_broker
from tests.conftest import wait_for

BOOKING = "shop.models.Booking"


class BookingCreated(ModelEvent, model=BOOKING, event="created", key="id", sequence="version", register=False):
    id: int
    version: int = 0


class RoomCreated(ModelEvent, model="shop.models.Room", event="created", register=False):
    id: int


SCHEMAS = [BookingCreated, RoomCreated]


@pytest.fixture
def url() -> Iterator[str]:
    yield memory_broker()


def publisher(url: str, **options: object) -> PubSub:
    return PubSub(url, schemas=SCHEMAS, event_log="7D", **options)  # type: ignore[arg-type]


def service(url: str, name: str = "late", **options: object) -> PubSub:
    return PubSub(url, schemas=SCHEMAS, service_name=name, retry_delay=0.01, retry_delay_max=0.02,
                  **options)  # type: ignore[arg-type]


def record(app: PubSub, pattern: str, into: list[int] | None = None, **options: object) -> list[int]:
    """Subscribe a handler that appends each event's id to ``into`` (a new list unless given)."""
    runs: list[int] = [] if into is None else into

    def handler(event: BookingCreated | RoomCreated) -> None:
        runs.append(event.id)

    handler.__name__ = handler.__qualname__ = f"record_{pattern.split('.')[0].lower()}"
    app.subscribe(pattern, **options)(handler)  # type: ignore[arg-type]
    return runs


def test_the_log_keeps_what_is_published_and_replay_runs_it_in_order_once(url: str) -> None:
    pub = publisher(url)
    ids = [pub.publish_model_event(BOOKING, "created", {"id": n % 5, "version": n}) for n in range(30)]
    pub.publish_model_event("shop.models.Room", "created", {"id": 1})
    app = service(url)
    seen: list[tuple[int, int, str]] = []

    @app.subscribe("Booking.*", ordered=True)
    def on_booking(event: BookingCreated, info: MessageInfo) -> None:
        seen.append((event.id, event.version, info.message_id or ""))

    shares: list[float | None] = []
    result = app.replay(since="1h", progress=lambda running, share: shares.append(share))
    assert isinstance(result, ReplayResult)
    assert [message_id for _, _, message_id in seen] == ids
    assert len(shares) == 30 and shares == sorted(shares) and shares[0] < 0.1 and shares[-1] > 0.9  # type: ignore
    assert (result.handled, result.dead_lettered, result.unsubscribed, result.keys) == \
        (30, 0, 1, {"Booking.created": 30})
    assert app.transport.queue_depth("late.events") == 0  # nothing replayed enters the live queue


def test_a_second_replay_runs_again_but_an_idempotent_handler_skips_what_its_inbox_holds(url: str) -> None:
    pub = publisher(url)
    for n in range(10):
        pub.publish_model_event(BOOKING, "created", {"id": n})
    inbox = MemoryInbox()
    app = service(url, inbox=inbox)
    runs = record(app, "Booking.*", idempotent=True)
    app.replay(since="1h")
    app.replay(since="1h")  # a resume, a late join over what already ran
    assert runs == list(range(10))


def test_the_same_message_id_twice_in_the_log_runs_once(url: str) -> None:
    pub = publisher(url)
    message = pub.publisher.encode(BOOKING, "created", {"id": 1}, None, None, None, None)
    again = pub.publisher.encode(BOOKING, "created", {"id": 1}, None, None, None, None)
    again.properties.message_id = message.properties.message_id  # a relay's re-send after a lost confirm
    pub.send([message])
    pub.send([again])
    app = service(url)
    runs = record(app, "Booking.*")
    result = app.replay(since="1h")
    assert (runs, result.repeated) == ([1], 1)


def test_the_window_is_by_publish_time_and_until_stops_the_read(url: str) -> None:
    pub = publisher(url)
    broker = named_broker(url.removeprefix("memory://"))
    pub.publish_model_event(BOOKING, "created", {"id": 1})
    cut = dt.datetime.now(dt.timezone.utc)
    time.sleep(0.01)  # publish times are in milliseconds
    pub.publish_model_event(BOOKING, "created", {"id": 2})
    app = service(url)
    runs = record(app, "Booking.*")
    assert broker.log(f"{pub.settings.model_exchange}.log") is not None
    result = app.replay(since=cut)
    assert (runs, result.outside) == ([2], 1)
    runs.clear()
    result = app.replay(since="1h", until=cut)
    assert (runs, result.outside) == ([1], 1)


def test_failed_handlers_retry_in_place_then_dead_letter_marked_as_replayed(url: str) -> None:
    pub = publisher(url)
    for n in range(4):
        pub.publish_model_event(BOOKING, "created", {"id": n})
    app = service(url, max_attempts=3)
    attempts: dict[int, int] = {}

    @app.subscribe("Booking.*")
    def flaky(event: BookingCreated) -> None:
        attempts[event.id] = attempts.get(event.id, 0) + 1
        if event.id == 1 and attempts[1] < 3:
            raise TimeoutError("database timeout")
        if event.id == 2:
            raise RuntimeError("a bug")
        if event.id == 3:
            raise Reject("not for us")

    result = app.replay(since="1h")
    assert attempts == {0: 1, 1: 3, 2: 3, 3: 1}
    assert (result.handled, result.dead_lettered, result.reasons) == (2, 2, {"handler_error": 1, "rejected": 1})
    letters = app.list_dead_letters()
    assert sorted(letter.reason for letter in letters) == ["handler_error", "rejected"]
    assert all(letter.headers[H_REPLAYED] == result.replay_id for letter in letters)
    assert app.transport.queue_depth("late.events") == 0  # no retry copy went to the live queue


def test_an_event_of_a_schema_no_longer_registered_dead_letters_as_unknown_event(url: str) -> None:
    old = PubSub(url, schemas=SCHEMAS, event_log="7D", require_schemas=False)
    old.publish_model_event(BOOKING, "cancelled", {"id": 1})  # its schema was since removed from the code
    app = service(url)
    record(app, "Booking.*")
    result = app.replay(since="1h")
    assert result.reasons == {"unknown_event": 1}


def test_without_an_event_log_replay_says_how_to_get_one(url: str) -> None:
    app = service(url)
    record(app, "Booking.*")
    with pytest.raises(ConfigurationError, match="event_log"):
        app.replay(since="1h")


def test_patterns_replay_a_subset_and_unknown_patterns_are_refused(url: str) -> None:
    pub = publisher(url)
    pub.publish_model_event(BOOKING, "created", {"id": 1})
    pub.publish_model_event("shop.models.Room", "created", {"id": 2})
    app = service(url)
    runs = record(app, "Booking.*")
    record(app, "Room.*", runs)
    result = app.replay(since="1h", patterns=["Room.*"])
    assert (runs, result.unsubscribed) == ([2], 1)
    with pytest.raises(ConfigurationError, match=r"Invoice\.\* are not subscribed"):
        app.replay(since="1h", patterns=["Invoice.*"])


def test_retention_gap_refuses_unless_allowed_and_dry_run_reports_it(url: str) -> None:
    pub = PubSub(url, schemas=SCHEMAS, event_log="1m")
    broker = named_broker(url.removeprefix("memory://"))
    pub.publish_model_event(BOOKING, "created", {"id": 1})
    since = dt.datetime.now(dt.timezone.utc) - dt.timedelta(seconds=30)
    broker.advance(120)  # the first event ages out of a one-minute log
    time.sleep(0.01)
    pub.publish_model_event(BOOKING, "created", {"id": 2})
    app = service(url)
    runs = record(app, "Booking.*")
    with pytest.raises(LogGap, match="retention dropped") as gap:
        app.replay(since=since)
    assert gap.value.since == since and gap.value.oldest > since
    assert runs == []
    dry = app.replay(since=since, dry_run=True)
    assert (dry.gap is not None, dry.handled, runs) == (True, 1, [])  # would run the one left; ran nothing
    result = app.replay(since=since, allow_gap=True)
    assert (runs, result.gap is not None) == ([2], True)


def test_dry_run_counts_without_running_and_the_cli_prints_it(url: str) -> None:
    pub = publisher(url)
    for n in range(3):
        pub.publish_model_event(BOOKING, "created", {"id": n})
    pub.publish_model_event("shop.models.Room", "created", {"id": 9})
    app = service(url)
    runs = record(app, "Booking.*")
    record(app, "Room.*", runs)
    result = app.replay(since="1h", dry_run=True)
    assert (runs, result.handled, result.keys) == ([], 4, {"Booking.created": 3, "Room.created": 1})
    import tests.replay_cli_app as target

    target.app = app
    output = CliRunner().invoke(build(), ["replay", "--app", "tests.replay_cli_app:app", "--since", "1h", "--dry-run"])
    assert output.exit_code == 0, output.output
    assert "events to replay: 4" in output.output and "  Booking.created: 3" in output.output
    assert "retention gap: none" in output.output and runs == []


def test_progress_line_shows_share_rate_and_eta() -> None:
    class Terminal:
        def __init__(self) -> None:
            self.text = ""

        def write(self, text: str) -> None:
            self.text += text

        def flush(self) -> None:
            pass

        def isatty(self) -> bool:
            return True

    out = Terminal()
    line = ProgressLine(out, terminal=True)  # type: ignore[arg-type]
    result = ReplayResult(handled=500)
    line(result, 0.2)
    assert out.text == ""  # not before a redraw interval: a rate needs some events
    line.started = line.drawn = line.started - 1.0
    line(result, 0.25)
    assert "[######..................]  25%  500 events" in out.text and "/s  ETA 0:" in out.text


def test_a_handler_whose_dependency_is_down_stops_the_replay_with_where_to_resume(url: str) -> None:
    pub = publisher(url)
    pub.publish_model_event(BOOKING, "created", {"id": 1})
    app = service(url)

    @app.subscribe("Booking.*", pause_on=(ConnectionError,))
    def needs_db(event: BookingCreated) -> None:
        raise ConnectionError("database down")

    with pytest.raises(ReplayStopped, match="dependency is down") as stopped:
        app.replay(since="1h")
    assert stopped.value.resume_from is not None


def test_parse_point_forms_and_errors() -> None:
    now = dt.datetime(2026, 12, 8, 12, 0, tzinfo=dt.timezone.utc)
    assert parse_point("7d", now) == now - dt.timedelta(days=7)
    assert parse_point("90s", now) == now - dt.timedelta(seconds=90)
    assert parse_point(dt.timedelta(hours=2), now) == now - dt.timedelta(hours=2)
    assert parse_point("2026-12-01T00:00Z", now) == dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc)
    assert parse_point(dt.datetime(2026, 12, 1), now).tzinfo is dt.timezone.utc
    with pytest.raises(ConfigurationError, match=r"since='yesterday' is not a time"):
        parse_point("yesterday", now)


def test_event_log_setting_is_checked() -> None:
    with pytest.raises(ConfigurationError, match="event_log"):
        PubSub("memory://", event_log="seven days")


def test_backfill_hands_over_to_live_with_no_gap_and_no_duplicate(url: str) -> None:
    """Events published before the service existed and while its backfill runs: each handled once, in key
    order (memory:// flavour of the RabbitMQ test)."""
    pub = publisher(url)
    versions: dict[int, int] = {}
    for n in range(400):
        versions[n % 40] = versions.get(n % 40, -1) + 1
        pub.publish_model_event(BOOKING, "created", {"id": n % 40, "version": versions[n % 40]})
    app = service(url)
    handled: list[tuple[int, int, str]] = []

    @app.subscribe("Booking.*", ordered=True)
    def apply(event: BookingCreated, info: MessageInfo) -> None:
        handled.append((event.id, event.version, info.message_id or ""))

    stop, published = threading.Event(), threading.Event()
    more: list[str] = []

    def keep_publishing() -> None:
        for n in range(300):
            versions[n % 40] += 1
            more.append(pub.publish_model_event(BOOKING, "created", {"id": n % 40, "version": versions[n % 40]}))
            time.sleep(0.02)
        published.set()

    writer = threading.Thread(target=keep_publishing)
    writer.start()
    worker = threading.Thread(target=app.run, kwargs={"stop": stop, "backfill": "1h"})
    worker.start()
    try:
        wait_for(published.is_set, 30, what="the publisher to finish")
        wait_for(lambda: len(handled) >= 700, 30, what="every event handled")
    finally:
        stop.set()
        worker.join(30)
        writer.join(30)
    ids = [message_id for _, _, message_id in handled]
    assert len(ids) == len(set(ids)) == 700
    last: dict[int, int] = {}
    for key, version, _ in handled:
        assert version == last.get(key, -1) + 1, f"key {key}: {version} after {last.get(key)}"
        last[key] = version


def test_markers_never_reach_other_queues_and_every_replay_skips_them(url: str) -> None:
    pub = publisher(url)
    pub.publish_model_event(BOOKING, "created", {"id": 1})
    other = service(url, name="other")
    record(other, "#")
    other.declare()
    app = service(url)
    record(app, "Booking.*")
    app.replay(since="1h")
    result = app.replay(since="1h")
    assert result.handled == 1 and result.read == 3  # the event, the first replay's marker, its own
    assert other.transport.queue_depth("other.events") == 0
    transport = app.transport
    assert isinstance(transport, MemoryTransport)
    consumer = transport.consume(f"{pub.settings.model_exchange}.log", 10, recover=False, offset="first")
    markers = [d for d in consumer.take_ready() if H_LOG_MARKER in d.properties.headers]
    consumer.close()
    assert len(markers) == 2


def test_a_backfill_stopped_midway_resumes_from_its_checkpoint_and_hands_over_exactly(url: str) -> None:
    """A non-idempotent handler: nothing runs twice because the checkpoint (in the inbox) says where the first
    backfill stopped and which events it ran after its start marker."""
    pub = publisher(url)
    for n in range(300):
        pub.publish_model_event(BOOKING, "created", {"id": n})
    inbox = MemoryInbox()
    app = service(url, inbox=inbox)
    runs: list[int] = []
    stop = threading.Event()

    @app.subscribe("Booking.*")
    def apply(event: BookingCreated) -> None:
        runs.append(event.id)
        if event.id == 120:
            stop.set()  # as if the worker were stopped during its backfill

    assert app.run(stop=stop, backfill="1h").stopped_by == "stopped"  # a stop during the backfill: no error
    assert runs[-1] == 120 and "backfill:late" in inbox.states
    for n in range(300, 320):  # published meanwhile: in the queue and in the log
        pub.publish_model_event(BOOKING, "created", {"id": n})
    stop = threading.Event()
    worker = threading.Thread(target=app.run, kwargs={"stop": stop, "backfill": "1h"})
    worker.start()
    try:
        wait_for(lambda: '"done": true' in inbox.states["backfill:late"], 30, what="the backfill to finish")
        for n in range(320, 330):  # live
            pub.publish_model_event(BOOKING, "created", {"id": n})
        wait_for(lambda: len(runs) >= 330, 30, what="every event handled")
    finally:
        stop.set()
        worker.join(30)
    assert sorted(runs) == list(range(330)), "each event exactly once"
    done, skip = app._backfill("1h")  # a restart after the backfill finished: no replay, the same ids to skip
    assert done.read == 0 and len(skip) == 20


def test_a_backfill_without_checkpoints_refuses_to_start_over_an_existing_queue(url: str) -> None:
    pub = publisher(url)
    pub.publish_model_event(BOOKING, "created", {"id": 1})
    app = service(url)
    record(app, "Booking.*")
    app.declare()  # an earlier start left the queue
    with pytest.raises(ConfigurationError, match="keeps no replay checkpoint"):
        app.run(stop=threading.Event(), backfill="1h")


def test_rebuild_runs_everything_again_and_equals_the_live_read_model(url: str) -> None:
    pub = publisher(url)
    inbox = MemoryInbox()
    app = service(url, inbox=inbox)
    model: dict[int, int] = {}

    @app.subscribe("Booking.*", ordered=True, idempotent=True)
    def project(event: BookingCreated) -> None:
        model[event.id] = event.version

    app.declare()
    for n in range(60):
        pub.publish_model_event(BOOKING, "created", {"id": n % 7, "version": n})
    app.drain(timeout=10)
    live = dict(model)
    model.clear()  # the read model is dropped (a bug fix changed how it is built)
    assert app.replay(since="1h").handled == 60 and model == {}  # a late join: the inbox skips all of it
    dry = app.replay(since="1h", dry_run=True)
    assert dry.already_run == {"tests.test_replay.test_rebuild_runs_everything_again_and_equals_the_live_read_model"
                               ".<locals>.project": 60}
    result = app.replay(since="1h", rebuild=True)
    assert (result.handled, result.stale) == (60, 0) and model == live


def test_rebuild_is_refused_while_a_worker_consumes(url: str) -> None:
    pub = publisher(url)
    pub.publish_model_event(BOOKING, "created", {"id": 1})
    app = service(url)
    record(app, "Booking.*")
    app.declare()
    consumer = app.transport.consume("late.events", 1)  # a worker of the service
    try:
        with pytest.raises(ConfigurationError, match=r"late.events \(1\) have consumers"):
            app.replay(since="1h", rebuild=True)
        assert app.replay(since="1h", rebuild=True, force=True).handled == 1
    finally:
        consumer.close()


def test_the_cli_exits_1_naming_the_gap_and_logs_progress_without_a_terminal(
        url: str, caplog: pytest.LogCaptureFixture) -> None:
    pub = PubSub(url, schemas=SCHEMAS, event_log="1m")
    broker = named_broker(url.removeprefix("memory://"))
    pub.publish_model_event(BOOKING, "created", {"id": 1})
    broker.advance(120)
    time.sleep(0.01)
    for n in range(10_050):
        pub.publish_model_event(BOOKING, "created", {"id": n})
    app = service(url)
    record(app, "Booking.*")
    import tests.replay_cli_app as target

    target.app = app
    output = CliRunner().invoke(build(), ["replay", "--app", "tests.replay_cli_app:app", "--since", "90s"])
    assert output.exit_code == 1 and "LogGap" in output.output and "--allow-gap" in output.output, output.output
    caplog.set_level("INFO", "pubsubpy.replay")
    result = app.replay(since="90s", allow_gap=True)
    assert result.handled == 10_050
    assert any("10000 events" in record.getMessage() for record in caplog.records)


def test_with_the_log_on_array_headers_are_refused_before_sending(url: str) -> None:
    """A stream drops headers holding arrays or tables: publishing never sends one (the headers a publish takes
    are text, integers and booleans), so a replay sees what the live queue saw."""
    pub = publisher(url)
    with pytest.raises(PayloadValidationError, match="tags"):
        pub.publish_model_event(BOOKING, "created", {"id": 1}, headers={"tags": ["a", "b"]})  # type: ignore[dict-item]


def test_a_dry_run_warns_when_since_is_older_than_the_inbox_retention(url: str) -> None:
    class ForgetfulInbox(MemoryInbox):
        retention = dt.timedelta(days=30)  # as DjangoInbox's INBOX_RETENTION

    pub = publisher(url)
    pub.publish_model_event(BOOKING, "created", {"id": 1})
    app = service(url, inbox=ForgetfulInbox())
    record(app, "Booking.*", idempotent=True)
    assert app.replay(since="7d", dry_run=True).warnings == []
    warned = app.replay(since="45d", dry_run=True, allow_gap=True)
    assert len(warned.warnings) == 1 and "INBOX_RETENTION" in warned.warnings[0]


def test_middleware_hears_each_replayed_event_as_a_live_one(url: str) -> None:
    """``after_message`` observers (metrics, your own) see a replayed event's outcome, its queue the log."""
    from pubsubpy import Middleware
    from pubsubpy.middleware import MessageContext

    class Recorder(Middleware):
        def __init__(self) -> None:
            self.seen: list[tuple[str, str | None, str, bool]] = []

        def after_message(self, context: MessageContext) -> None:
            reason = context.reason.value if context.reason else None
            self.seen.append((context.outcome.value, reason, context.queue, context.handlers_ran))

    pub = publisher(url)
    pub.publish_model_event(BOOKING, "created", {"id": 1})
    pub.publish_model_event(BOOKING, "created", {"id": 2})
    recorder = Recorder()
    app = service(url, middleware=[recorder], max_attempts=1)

    @app.subscribe("Booking.*")
    def refuse_two(event: BookingCreated) -> None:
        if event.id == 2:
            raise Reject("not this one")

    app.replay(since="1h")
    log = f"{pub.settings.model_exchange}.log"
    assert recorder.seen == [("handled", None, log, True), ("dead_lettered", "rejected", log, True)]
