"""Deprecated: ``manage.py pubsub_outbox`` is ``manage.py pubsub outbox`` (removed in the next release)."""

from pubsubpy.contrib.django._cli import DeprecatedAlias


class Command(DeprecatedAlias):
    prefix = ("outbox",)
