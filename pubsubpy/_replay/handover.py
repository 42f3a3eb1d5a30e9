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

A checkpoint (the start marker's id, the next offset to read, the ids run after
the marker, and whether the backfill is done) is saved in the inbox
(``ReplayInbox``) before the queue is declared, every thousand events and at
the end. A worker killed during its backfill resumes at that offset with those
ids, from the ``since`` it began with; once done, a restart with ``--backfill``
skips the replay and keeps the ids to skip (a new backfill of the service: delete
the checkpoint ``backfill:<service>``, or run ``pubsubpy replay``). Without
such an inbox a backfill cannot resume: it starts only when the service's
queue does not exist yet (a first start), and is refused otherwise, saying why.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from pubsubpy._replay.marker import new_marker
from pubsubpy._replay.runner import LogReplay, ReplayOptions
from pubsubpy.envelope import new_message_id
from pubsubpy.errors import ConfigurationError
from pubsubpy.inbox import ReplayInbox
from pubsubpy.messages import ReplayResult
from pubsubpy.transports.base import Transport

__all__ = ["GRACE", "Backfill", "checkpoint_name"]

log = logging.getLogger("pubsubpy.replay")

GRACE = 5.0  # seconds of the log read past the end marker


def checkpoint_name(service: str) -> str:
    return f"backfill:{service}"


@dataclass
class _State:
    since: str
    start: str                      # the start marker's id
    next_offset: int | None = None  # every message of the log before it is settled
    after_start: bool = False       # the start marker was read
    overlap: list[str] = field(default_factory=list)
    done: bool = False


@dataclass
class Backfill:
    """Steps 1 to 3 for one service; ``run`` returns the replay's result and the ids the live loop skips."""

    transport: Transport
    stream: str
    queue: str                                   # the service queue
    declare: Callable[[], None]                  # the service's topology
    make_replay: Callable[[ReplayOptions], LogReplay]
    store: ReplayInbox | None
    name: str                                    # the checkpoint's (``checkpoint_name``)

    def run(self, options: ReplayOptions) -> tuple[ReplayResult, frozenset[str]]:
        state = self.load()
        if state is not None and state.done:
            log.info("the backfill from %s is done (checkpoint %r): consuming live, skipping the %d events it ran "
                     "after its start", state.since, self.name, len(state.overlap))
            return ReplayResult(since=options.since, replay_id=state.start), frozenset(state.overlap)
        if state is not None:  # unfinished: resumed as it began (a relative --backfill moves on every start)
            options.since = dt.datetime.fromisoformat(state.since)
        since = options.since.isoformat()
        replay = self.make_replay(options)
        replay.check_log()
        if state is None:
            state = self.begin(since)
        else:
            log.info("resuming the backfill from %s at offset %s (checkpoint %r)", since, state.next_offset, self.name)
            self.declare()
        options.overlap_after, options.grace = state.start, GRACE
        options.resume_offset, options.after_overlap, options.overlap = \
            state.next_offset, state.after_start, set(state.overlap)
        options.checkpoint = lambda offset, after, overlap: self.save(
            _State(since, state.start, offset, after, sorted(overlap)))
        result = replay.run()
        self.save(_State(since, state.start, replay.next_offset, True, sorted(options.overlap), done=True))
        return result, frozenset(options.overlap)

    def begin(self, since: str) -> _State:
        if self.store is None and self.transport.queue_info(self.queue) is not None:
            raise ConfigurationError(
                f"cannot backfill: the queue {self.queue!r} exists already (an earlier start, perhaps a backfill that "
                "was killed) and this PubSub's inbox keeps no replay checkpoint to resume from, so events could run "
                "twice. Give it an inbox with replay_state/save_replay_state (pubsubpy.inbox.ReplayInbox; the Django "
                "app's has them), or start without --backfill")
        state = _State(since, new_message_id())
        self.transport.publish([new_marker(self.stream, state.start)])
        self.save(state)  # before the queue exists: a crash from here on resumes
        self.declare()
        return state

    def load(self) -> _State | None:
        raw = self.store.replay_state(self.name) if self.store is not None else None
        if raw is None:
            return None
        try:
            state = _State(**json.loads(raw))
            dt.datetime.fromisoformat(state.since)
        except (TypeError, ValueError) as exc:
            log.warning("ignoring the unreadable backfill checkpoint %r (%s)", self.name, exc)
            return None
        return state

    def save(self, state: _State) -> None:
        if self.store is not None:
            self.store.save_replay_state(self.name, json.dumps(asdict(state)))

