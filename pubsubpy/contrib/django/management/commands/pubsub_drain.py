"""Deprecated: ``manage.py pubsub_drain`` is ``manage.py pubsub drain`` (removed in the next release)."""

from pubsubpy.contrib.django._cli import DeprecatedAlias


class Command(DeprecatedAlias):
    prefix = ("drain",)
