"""Message properties RabbitMQ accepts but pika cannot decode (issue 9): nothing gets stuck behind them.

The foreign publisher is plain pika. To put bytes on the wire that pika itself would refuse to encode,
``pika.data.encode_value`` is wrapped for the test: a ``_Raw`` header value is written as the given field
bytes. RabbitMQ confirms every message, so it really holds them.
"""

from __future__ import annotations

import json
import struct
import types
from collections.abc import Iterator
from typing import Any

import pika
import pika.connection
import pika.data
import pika.exceptions
import pika.frame
import pika.spec
import pytest

from pubsubpy import PubSub
from pubsubpy.transports.rabbitmq._frames import (
    UndecodableProperties,
    decode_frame_tolerantly,
    tolerate_undecodable_properties,
)
from pubsubpy.transports.rabbitmq._properties import from_pika_properties
from tests.conftest import Names
from tests.contract.events import ALL, BookingCreated


class _Raw:
    """A header value sent as these exact field bytes (type octet + payload)."""

    def __init__(self, encoded: bytes) -> None:
        self.encoded = encoded


def _nested(depth: int) -> bytes:
    """A header table nested ``depth`` tables deep, built without recursion."""
    value = b"F" + struct.pack(">I", 0)
    for _ in range(depth):
        entry = b"\x01k" + value
        value = b"F" + struct.pack(">I", len(entry)) + entry
    return value


# case -> (field bytes, what the decode error names)
BAD_FIELDS: dict[str, tuple[bytes, tuple[str, ...]]] = {
    # pika: datetime.fromtimestamp(2**62) -> OSError (EOVERFLOW) on Linux; ValueError/OverflowError elsewhere
    "far_future_timestamp": (b"T" + struct.pack(">Q", 2**62), ("OSError", "ValueError", "OverflowError")),
    "nested_600_deep": (_nested(600), ("RecursionError",)),
    "unknown_field_type": (b"Z" + b"\x00" * 4, ("InvalidFieldTypeException",)),
}
CASES = sorted(BAD_FIELDS)
BROKER_CASES = [case for case in CASES if case != "unknown_field_type"]  # RabbitMQ 3.10 refuses that one (541)


@pytest.fixture
def raw_headers(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    original = pika.data.encode_value

    def encode_value(pieces: list[bytes], value: Any) -> int:
        if isinstance(value, _Raw):
            pieces.append(value.encoded)
            return len(value.encoded)
        return int(original(pieces, value))

    monkeypatch.setattr(pika.data, "encode_value", encode_value)
    yield


def _app(url: str, names: Names, **options: object) -> PubSub:
    options.setdefault("model_exchange", names.exchange())
    options.setdefault("service_name", names.service())
    return PubSub(url, schemas=ALL, **options)  # type: ignore[arg-type]


def _good(message_id: str, booking: int, **headers: Any) -> tuple[bytes, pika.BasicProperties]:
    body = json.dumps({"id": booking, "guest": "g"}).encode()
    return body, pika.BasicProperties(content_type="application/json", message_id=message_id, delivery_mode=2,
                                      type="shop.models.Booking.created", app_id="go-shop", headers=headers or None)


def _bad(case: str, message_id: str, booking: int) -> tuple[bytes, pika.BasicProperties]:
    """A valid event whose headers pika cannot decode; properties both before and after the headers table."""
    body = json.dumps({"id": booking, "guest": "Zoë \u2603"}).encode()
    headers = {"trace": "abc", "bad": _Raw(BAD_FIELDS[case][0]), "after": 1}
    return body, pika.BasicProperties(content_type="application/json", headers=headers, delivery_mode=2,
                                      correlation_id="corr-1", message_id=message_id, timestamp=1_750_000_000,
                                      type="shop.models.Booking.created", app_id="go-shop")


def _foreign_publish(url: str, messages: list[tuple[str, str, tuple[bytes, pika.BasicProperties]]]) -> None:
    """Publish with confirms, in order, on one channel. A message RabbitMQ refuses skips the test."""
    connection = pika.BlockingConnection(pika.URLParameters(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        for exchange, routing_key, (body, props) in messages:
            try:
                channel.basic_publish(exchange, routing_key, body, props)
            except pika.exceptions.ConnectionClosedByBroker as exc:
                pytest.skip(f"RabbitMQ refuses this header ({exc.reply_code} {exc.reply_text}): "
                            "no consumer can ever receive it")
    finally:
        if connection.is_open:
            connection.close()


def _assert_decode_error(error: str | None, case: str) -> None:
    assert error is not None and "could not be decoded" in error, error
    assert any(name in error for name in BAD_FIELDS[case][1]), error
    assert len(error) <= 1000


def _recording(app: PubSub) -> list[int]:
    got: list[int] = []

    @app.subscribe("Booking.created")
    def on_created(event: BookingCreated) -> None:
        got.append(event.id)

    return got


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
@pytest.mark.parametrize("case", BROKER_CASES)
def test_drain_dead_letters_the_undecodable_message_and_handles_the_rest(
        rabbit_url: str, names: Names, raw_headers: None, case: str, queue_type: str) -> None:
    app = _app(rabbit_url, names, queue_type=queue_type, prefetch=100)
    got = _recording(app)
    app.declare()
    exchange = app.settings.model_exchange
    bad = _bad(case, "bad-1", 99)
    _foreign_publish(rabbit_url, [(exchange, "Booking.created", m) for m in
                                  [_good("good-1", 1), _good("good-2", 2), bad, _good("good-3", 3),
                                   _good("good-4", 4)]])

    result = app.drain(timeout=15)

    assert sorted(got) == [1, 2, 3, 4], "every good message, before and after the bad one, is handled once"
    assert (result.handled, result.dead_lettered, result.reasons) == (4, 1, {"decode_error": 1})
    assert result.redelivered == 0, "no connection died: nothing came back"
    assert app.transport.queue_depth(f"{app.settings.service_name}.events") == 0
    [letter] = app.list_dead_letters()
    assert letter.reason == "decode_error"
    assert letter.body == bad[0], "the body is kept byte for byte"
    assert (letter.message_id, letter.event_type, letter.properties.app_id) == (
        "bad-1", "shop.models.Booking.created", "go-shop")
    assert letter.routing_key == "Booking.created"
    _assert_decode_error(letter.error, case)
    app.close()


@pytest.mark.parametrize("queue_type", ["classic", "quorum"])
@pytest.mark.parametrize("case", BROKER_CASES)
def test_dead_letter_tools_survive_an_undecodable_letter_in_the_dead_letter_queue(
        rabbit_url: str, names: Names, raw_headers: None, case: str, queue_type: str) -> None:
    app = _app(rabbit_url, names, queue_type=queue_type)
    got = _recording(app)
    app.declare()
    service = app.settings.service_name
    dlx, dlq = f"{service}.dlx", f"{service}.dead-letters"
    noted = {"pubsubpy-reason": "handler_error", "pubsubpy-error": "boom"}
    _foreign_publish(rabbit_url, [
        (dlx, "Booking.created", _good("good-1", 1, **noted)),
        (dlx, "Booking.created", _bad(case, "bad-replay", 77)),  # through the service's own DLX fanout
        (dlx, "Booking.created", _good("good-2", 2, **noted)),
        ("", dlq, _bad(case, "bad-purge", 78)),                   # straight into the queue
        (dlx, "Booking.created", _good("good-3", 3, **noted)),
    ])

    letters = app.list_dead_letters()

    assert [letter.message_id for letter in letters] == ["good-1", "bad-replay", "good-2", "bad-purge", "good-3"]
    by_id = {letter.message_id: letter for letter in letters}
    for message_id, booking in (("bad-replay", 77), ("bad-purge", 78)):
        letter = by_id[message_id]
        assert letter.reason == "decode_error"
        assert letter.body == _bad(case, message_id, booking)[0]
        assert letter.event_type == "shop.models.Booking.created"
        assert letter.properties.app_id == "go-shop"
        _assert_decode_error(letter.error, case)
    assert {by_id[f"good-{i}"].reason for i in (1, 2, 3)} == {"handler_error"}
    assert app.dead_letter_count() == 5, "listing is non-destructive"

    assert app.replay_dead_letters(["bad-replay"]) == ["bad-replay"]
    assert app.purge_dead_letters(["bad-purge"]) == ["bad-purge"]

    assert sorted(letter.message_id for letter in app.list_dead_letters()) == ["good-1", "good-2", "good-3"]
    result = app.drain(timeout=15)
    assert (result.handled, got) == (1, [77]), "the replayed copy (headers lost, body intact) is handled"
    app.close()



# -- the recovery itself, on frame bytes (no broker) -----------------------------------------------

EVERY_OTHER_PROPERTY: dict[str, Any] = {
    "content_type": "application/json", "content_encoding": "utf-8", "delivery_mode": 2, "priority": 3,
    "correlation_id": "corr-1", "reply_to": "replies", "expiration": "60000", "message_id": "m-1",
    "timestamp": 2**40, "type": "shop.models.Booking.created", "user_id": "guest", "app_id": "go-shop",
    "cluster_id": "c-1",
}


def _wire(case: str | None, body: bytes) -> tuple[bytes, bytes, bytes]:
    """A content header (with the bad field, if any), its body frame, and the next frame (a basic.ack)."""
    headers: dict[str, Any] = {"a": 1, "z": "last"}
    if case is not None:
        headers["bad"] = _Raw(BAD_FIELDS[case][0])
    props = pika.BasicProperties(headers=headers, **EVERY_OTHER_PROPERTY)
    return (pika.frame.Header(1, len(body), props).marshal(), pika.frame.Body(1, body).marshal(),
            pika.frame.Method(1, pika.spec.Basic.Ack(7)).marshal())


@pytest.mark.parametrize("case", CASES)
def test_an_undecodable_content_header_is_recovered_with_exact_lengths(raw_headers: None, case: str) -> None:
    body = b'{"id": 1}'
    header, body_frame, after = _wire(case, body)
    stream = header + body_frame + after
    with pytest.raises(Exception):  # pika's own error, whichever it is
        pika.frame.decode_frame(stream)

    consumed, frame = decode_frame_tolerantly(stream)

    assert consumed == len(header)
    assert isinstance(frame, pika.frame.Header)
    assert (frame.channel_number, frame.body_size) == (1, len(body))
    props = frame.properties
    assert isinstance(props, UndecodableProperties)
    assert props.headers is None, "the table is skipped whole"
    assert {name: getattr(props, name) for name in EVERY_OTHER_PROPERTY} == EVERY_OTHER_PROPERTY
    assert props.decode_error.startswith("headers could not be decoded: ")
    assert any(name in props.decode_error for name in BAD_FIELDS[case][1]), props.decode_error
    assert len(props.decode_error) <= 500

    used, body_back = decode_frame_tolerantly(stream[consumed:])
    assert used == len(body_frame)
    assert isinstance(body_back, pika.frame.Body) and body_back.fragment == body
    used, next_frame = decode_frame_tolerantly(stream[consumed + used:])
    assert used == len(after)
    assert isinstance(next_frame, pika.frame.Method) and next_frame.method.delivery_tag == 7


def test_a_decodable_header_and_other_frames_are_decoded_by_pika_as_before() -> None:
    header, body_frame, after = _wire(None, b"x")
    for data in (header, body_frame, after):
        mine, theirs = decode_frame_tolerantly(data), pika.frame.decode_frame(data)
        assert mine[0] == theirs[0] == len(data)
        assert type(mine[1]) is type(theirs[1]) and vars(mine[1]) == vars(theirs[1])
    assert type(decode_frame_tolerantly(header)[1].properties) is pika.spec.BasicProperties  # type: ignore[union-attr]
    assert decode_frame_tolerantly(header[:-3]) == (0, None), "an incomplete frame waits for more bytes"


def test_failures_other_than_a_content_header_still_raise(raw_headers: None) -> None:
    header, _body, after = _wire("far_future_timestamp", b"x")
    with pytest.raises(pika.exceptions.InvalidFrameError):
        decode_frame_tolerantly(header[:-1] + b"\x00")  # a bad frame-end octet
    unknown_method = after[:7] + struct.pack(">I", 0x00FF00FF) + after[11:]
    with pytest.raises(KeyError):
        decode_frame_tolerantly(unknown_method)
    # The headers fail and the properties after them run past the frame: not recoverable, pika's error stands.
    size = struct.unpack_from(">L", header, 3)[0]
    truncated = header[:3] + struct.pack(">L", size - 4) + header[7:-5] + header[-1:]
    with pytest.raises((OSError, ValueError, OverflowError)):  # what datetime raises for year 10**11
        decode_frame_tolerantly(truncated)


def test_tolerating_changes_that_connection_only() -> None:
    original_reader, original_decoder = pika.connection.Connection._read_frame, pika.frame.decode_frame
    impl = types.SimpleNamespace(_frame_buffer=b"")
    tolerate_undecodable_properties(types.SimpleNamespace(_impl=impl))  # type: ignore[arg-type]
    impl._frame_buffer = pika.frame.Body(3, b"abc").marshal()
    consumed, frame = impl._read_frame()
    assert consumed == len(impl._frame_buffer) and isinstance(frame, pika.frame.Body)
    assert pika.connection.Connection._read_frame is original_reader
    assert pika.frame.decode_frame is original_decoder


def test_from_pika_properties_reports_the_decode_error() -> None:
    lost = from_pika_properties(UndecodableProperties("headers could not be decoded: X", message_id="m-1",
                                                      type="t", app_id="a"))
    assert (lost.decode_error, lost.headers, lost.message_id, lost.type, lost.app_id) == (
        "headers could not be decoded: X", {}, "m-1", "t", "a")
    assert from_pika_properties(pika.BasicProperties(headers={"k": 1})).decode_error is None
