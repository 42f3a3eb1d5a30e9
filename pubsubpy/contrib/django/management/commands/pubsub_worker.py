"""Deprecated: ``manage.py pubsub_worker`` is ``manage.py pubsub worker`` (removed in the next release)."""

from pubsubpy.contrib.django._cli import DeprecatedAlias


class Command(DeprecatedAlias):
    prefix = ("worker",)
