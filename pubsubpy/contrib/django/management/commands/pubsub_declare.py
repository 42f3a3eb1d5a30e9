"""Deprecated: ``manage.py pubsub_declare`` is ``manage.py pubsub declare`` (removed in the next release)."""

from pubsubpy.contrib.django._cli import DeprecatedAlias


class Command(DeprecatedAlias):
    prefix = ("declare",)
