# Stubs for the part of pika 1.x that pubsubpy uses (pika ships no py.typed).
from pika import adapters as adapters, channel as channel, credentials as credentials, data as data, exceptions as exceptions, frame as frame, spec as spec
from pika.adapters.blocking_connection import BlockingConnection as BlockingConnection
from pika.connection import SSLOptions as SSLOptions, URLParameters as URLParameters
from pika.spec import BasicProperties as BasicProperties
