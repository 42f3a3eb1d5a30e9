"""The hand-over from a replay to the live queue (``worker --backfill``): no gap, no event run twice.

1. A start marker goes into the log (``marker.py``).
2. The service's queue is declared and bound: from here it buffers every event
   routed to it, and each of them is stored in the log after the start marker
   (the marker was stored before the binding existed).
3. The replay runs from ``since`` to its end marker, written after the binding,
   and on for ``GRACE`` seconds more, up to a second marker (an event routed
   before the binding can reach the log a moment after the first marker); it
   remembers the id of every event it ran after the start marker.
4. The live loop starts on the queue and acks, without running, the events
   whose id the replay remembered (``LoopOptions.skip_ids``): the queue holds
   only events stored after the start marker, so every event ran once, the
   replayed ones first, in log order.

The ids are held in memory: a worker killed during its backfill starts it again
(an idempotent subscription's inbox skips what already ran).
"""

from __future__ import annotations

from collections.abc import Callable

from pubsubpy._replay.marker import new_marker
from pubsubpy._replay.runner import LogReplay, ReplayOptions
from pubsubpy.envelope import new_message_id
from pubsubpy.messages import ReplayResult
from pubsubpy.transports.base import Transport

__all__ = ["GRACE", "backfill"]

GRACE = 5.0  # seconds of the log read past the end marker


def backfill(transport: Transport, stream: str, declare: Callable[[], None],
             make_replay: Callable[[ReplayOptions], LogReplay], options: ReplayOptions
             ) -> tuple[ReplayResult, frozenset[str]]:
    """Run steps 1 to 3; the replay's result and the ids the live loop skips."""
    start = new_message_id()
    options.overlap_after, options.grace = start, GRACE
    replay = make_replay(options)
    replay.check_log()
    transport.publish([new_marker(stream, start)])
    declare()
    result = replay.run()
    return result, frozenset(options.overlap)
