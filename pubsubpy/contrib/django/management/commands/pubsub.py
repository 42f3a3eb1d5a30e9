"""``manage.py pubsub <command line>``: the ``pubsubpy`` command on this project's PubSub (see ``..cli``)."""

from pubsubpy.contrib.django.cli import PubSubCommand


class Command(PubSubCommand):
    pass
