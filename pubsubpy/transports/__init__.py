"""Transports: the broker contract (``base``), ``memory`` and ``rabbitmq``."""
