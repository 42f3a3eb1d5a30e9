"""Deprecated: ``manage.py pubsub_topology`` is ``manage.py pubsub topology`` (removed in the next release)."""

from pubsubpy.contrib.django._cli import DeprecatedAlias


class Command(DeprecatedAlias):
    prefix = ("topology",)
