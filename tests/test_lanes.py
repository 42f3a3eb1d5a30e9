"""The per-key lanes between the consumer loop and its executor, without a broker."""

from __future__ import annotations

import time

from pubsubpy._consume.lanes import Lanes
from pubsubpy._engine import Verdict, Work
from pubsubpy.envelope import H_KEY, Properties
from pubsubpy.messages import Delivery


def delivery(tag: int, key: str | None) -> Delivery:
    headers = {H_KEY: key} if key is not None else {}
    return Delivery(tag, "models", "Order.updated", b"{}", Properties(headers=headers), False)


def lanes() -> Lanes:
    return Lanes(lambda d: d.properties.headers.get(H_KEY))


def tags(items: list[Delivery | Work]) -> list[int]:
    return [item.delivery.tag if isinstance(item, Work) else item.tag for item in items]


def test_one_message_of_a_key_at_a_time_in_arrival_order() -> None:
    lane = lanes()
    a1, b1, a2, a3, free = delivery(1, "a"), delivery(2, "b"), delivery(3, "a"), delivery(4, "a"), delivery(5, None)
    assert tags(lane.admit([a1, b1, a2, a3, free])) == [1, 2, 5], "a2 and a3 wait behind a1; no key needs no lane"
    assert len(lane) == 2
    lane.release(a1)
    assert tags(lane.take()) == [3]
    lane.release(b1)  # nothing behind it
    assert lane.take() == [] and len(lane) == 1
    lane.release(a2)
    assert tags(lane.admit([])) == [4]
    lane.release(a3)
    assert len(lane) == 0 and tags(lane.admit([delivery(6, "a")])) == [6], "the lane is free again"


def test_a_held_message_keeps_its_lane_and_comes_back_after_its_delay() -> None:
    lane = lanes()
    a1, a2, b1 = delivery(1, "a"), delivery(2, "a"), delivery(3, "b")
    assert tags(lane.admit([a1, a2])) == [1]
    work = Work(a1, Verdict("Order.updated", 1), [])
    lane.hold(work, 0.05)
    assert tags(lane.admit([b1])) == [3], "another key is not held"
    assert not lane.ready() and lane.take() == []
    due = lane.next_due()
    assert due is not None and 0 < due <= 0.05
    deadline = time.monotonic() + 5
    while not lane.ready() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert lane.take() == [work] and lane.next_due() is None
    lane.release(a1)
    assert tags(lane.take()) == [2], "a2 ran only after a1 was settled"
