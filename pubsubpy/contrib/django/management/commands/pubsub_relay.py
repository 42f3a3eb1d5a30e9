"""Deprecated: ``manage.py pubsub_relay`` is ``manage.py pubsub relay`` (removed in the next release)."""

from pubsubpy.contrib.django._cli import DeprecatedAlias


class Command(DeprecatedAlias):
    prefix = ("relay",)
