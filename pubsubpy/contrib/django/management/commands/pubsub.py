"""``manage.py pubsub <command line>``: the ``pubsubpy`` command on this project's PubSub (see ``.._cli``)."""

from pubsubpy.contrib.django._cli import PubSubCommand


class Command(PubSubCommand):
    pass
