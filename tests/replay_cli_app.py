"""The ``--app`` target of the replay CLI test (tests/test_replay.py sets ``app`` before invoking the command)."""

from __future__ import annotations

from pubsubpy import PubSub

app: PubSub | None = None
