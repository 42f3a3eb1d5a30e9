"""Deprecated: ``manage.py pubsub_schema`` is ``manage.py pubsub schema`` (removed in the next release)."""

from pubsubpy.contrib.django._cli import DeprecatedAlias


class Command(DeprecatedAlias):
    prefix = ("schema",)
    renamed = {("lock", "--lock"): "--out"}  # pubsub_schema lock --lock F wrote F
