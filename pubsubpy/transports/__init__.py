"""Transports: the broker contract (``base``), ``memory`` and ``rabbitmq``; ``make_transport`` picks one."""

from __future__ import annotations

from pubsubpy.settings import Settings, memory_name
from pubsubpy.transports.base import Transport

__all__ = ["make_transport"]


def make_transport(settings: Settings) -> Transport:
    """The transport ``settings.amqp_url`` names: ``memory://NAME`` the process's broker of that name,
    ``memory://`` a private one, anything else RabbitMQ. Nothing connects until it is used."""
    if settings.scheme == "memory":
        from pubsubpy.transports.memory import MemoryTransport, named_broker

        name = memory_name(settings.amqp_url)
        return MemoryTransport(None if name is None else named_broker(name))
    from pubsubpy.transports.rabbitmq import RabbitMQTransport

    return RabbitMQTransport(settings)
