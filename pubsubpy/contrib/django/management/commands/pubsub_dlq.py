"""Deprecated: ``manage.py pubsub_dlq`` is ``manage.py pubsub dlq`` (removed in the next release)."""

from pubsubpy.contrib.django._cli import DeprecatedAlias


class Command(DeprecatedAlias):
    prefix = ("dlq",)
