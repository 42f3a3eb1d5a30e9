"""The broker at the other end: its version, as its handshake states it, and the queue arguments that
version wants.

RabbitMQ changed what some arguments mean: 3.12 made every classic queue lazy and ignores
``x-queue-mode`` (it only clutters the queue's arguments there), and 4.0 gave quorum queues a default
delivery limit of 20, which pubsubpy lifts on the dead-letter queue (``topology.NO_DELIVERY_LIMIT``).
``topology.py`` stays broker-agnostic (the memory broker reads the same specs); this adapts a spec
when it is declared on RabbitMQ.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import pika

from pubsubpy.topology import LAZY, NO_DELIVERY_LIMIT

__all__ = ["Version", "broker_arguments", "broker_version"]

Version = tuple[int, int, int]

_DIGITS = re.compile(rb"(\d+)\.(\d+)(?:\.(\d+))?")


def broker_version(connection: pika.BlockingConnection) -> Version:
    """``(major, minor, patch)`` from the ``version`` server property; ``(0, 0, 0)`` when it says none
    (a proxy, another broker): then nothing version-dependent is sent."""
    stated = connection._impl.server_properties.get("version", b"")
    found = _DIGITS.match(stated.encode() if isinstance(stated, str) else bytes(stated))
    if found is None:
        return (0, 0, 0)
    major, minor, patch = found.groups()
    return int(major), int(minor), int(patch or 0)


def broker_arguments(arguments: Mapping[str, Any], version: Version, *, dead_letters: bool) -> dict[str, Any]:
    """``arguments`` of a queue as the broker of ``version`` should get them; ``dead_letters``: the
    service's dead-letter queue."""
    adapted = dict(arguments)
    if version >= (3, 12):
        for key in LAZY:
            adapted.pop(key, None)
    if dead_letters and version >= (4, 0) and adapted.get("x-queue-type") == "quorum":
        adapted.update(NO_DELIVERY_LIMIT)
    return adapted
