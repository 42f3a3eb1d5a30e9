"""FastProperties writes exactly the bytes pika's BasicProperties.encode writes, for any header table."""

from __future__ import annotations

import datetime as dt
import decimal
import struct
from collections.abc import Iterator
from typing import Any

import pika
import pika.compat
import pika.data
import pika.frame
import pika.spec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pubsubpy.transports.rabbitmq._encoding import FastProperties, publish_frames


@pytest.fixture(autouse=True, scope="module")
def pika_1_4_long_integers() -> Iterator[None]:
    """pika 1.3 wrote a negative integer below -2**31 as type ``L`` (an unsigned 64-bit field, in RabbitMQ's
    reading) and 1.4 as ``l`` (signed), which is what pubsubpy writes: compare against 1.4's rule on 1.3."""
    if not pika.__version__.startswith("1.3"):
        yield
        return
    original = pika.data.encode_value

    def encode_value(pieces: list[bytes], value: Any) -> int:
        if type(value) is int and value < -(2**31):
            pieces.append(struct.pack(">cq", b"l", value))
            return 9
        return int(original(pieces, value))

    pika.data.encode_value = encode_value
    try:
        yield
    finally:
        pika.data.encode_value = original


_short = st.text(max_size=20).filter(lambda s: len(s.encode()) <= 255)
_scalars = st.one_of(
    st.text(max_size=40), st.binary(max_size=20), st.booleans(), st.none(),
    st.integers(min_value=-(2**63), max_value=2**63 - 1),
    st.integers(min_value=-(2**31) - 2, max_value=-(2**31) + 2), st.integers(min_value=2**31 - 2, max_value=2**31 + 2),
    st.integers(min_value=0, max_value=2**40).map(pika.compat.long),
    st.decimals(allow_nan=False, allow_infinity=False, places=2, min_value=-1000, max_value=1000),
    st.datetimes(min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(2200, 1, 1)).map(
        lambda d: d.replace(tzinfo=dt.timezone.utc)),
)
_values = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                           st.dictionaries(_short, inner, max_size=4)), max_leaves=12)
_fields = st.fixed_dictionaries({}, optional={
    "content_type": _short, "content_encoding": _short, "headers": st.dictionaries(_short, _values, max_size=8),
    "delivery_mode": st.sampled_from([1, 2]), "priority": st.integers(0, 9), "correlation_id": _short,
    "reply_to": _short, "expiration": st.integers(0, 10**9).map(str), "message_id": _short,
    "timestamp": st.integers(0, 2**40), "type": _short, "user_id": _short, "app_id": _short, "cluster_id": _short,
})


@settings(max_examples=400, deadline=None)
@given(_fields)
def test_the_same_bytes_as_pika(fields: dict[str, Any]) -> None:
    theirs = b"".join(pika.spec.BasicProperties(**fields).encode())
    ours = b"".join(FastProperties(**fields).encode())
    assert ours == theirs


def test_a_dead_letter_copy_of_a_pubsubpy_message() -> None:
    headers: dict[str, Any] = {
        "pubsubpy-schema-version": 2, "pubsubpy-published-at": 1_764_900_000_123, "pubsubpy-attempt": 3,
        "pubsubpy-reason": "handler_error", "pubsubpy-error": "RuntimeError: boom", "x-death": [{"count": 1}],
        "pubsubpy-queue": "billing.events", "big": 2**40, "neg": -(2**31) - 1, "flag": True, "none": None,
        "raw": b"\x00\xff", "price": decimal.Decimal("12.50"),
    }
    fields = {"content_type": "application/json", "message_id": "m-1", "timestamp": 1_764_900_000,
              "type": "Booking.updated", "app_id": "shop", "delivery_mode": 2, "headers": headers}
    assert b"".join(FastProperties(**fields).encode()) == b"".join(pika.spec.BasicProperties(**fields).encode())


@settings(max_examples=300, deadline=None)
@given(_fields, st.integers(1, 65535), st.sampled_from([4088, 131064]), _short, _short, st.booleans(),
       st.one_of(st.binary(max_size=50), st.binary(min_size=4000, max_size=20000)))
def test_a_publish_is_framed_as_pika_frames_it(fields: dict[str, Any], channel: int, body_max: int, exchange: str,
                                               routing_key: str, mandatory: bool, body: bytes) -> None:
    method = pika.spec.Basic.Publish(exchange=exchange, routing_key=routing_key, mandatory=mandatory)
    theirs = [pika.frame.Method(channel, method).marshal(),
              pika.frame.Header(channel, len(body), pika.spec.BasicProperties(**fields)).marshal()]
    theirs += [pika.frame.Body(channel, body[i:i + body_max]).marshal() for i in range(0, len(body), body_max)]
    ours = publish_frames(channel, body_max, exchange, routing_key, mandatory, FastProperties(**fields), body)
    assert ours == b"".join(theirs)
