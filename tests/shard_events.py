"""The event of the shards tests (tests/test_shards_rabbitmq.py and the worker app it runs, tests/shard_app.py)."""

from __future__ import annotations

from pubsubpy import ModelEvent

ORDER = "shop.models.Order"


class OrderUpdated(ModelEvent, model=ORDER, event="updated", key="id", sequence="version", register=False):
    id: int
    version: int
