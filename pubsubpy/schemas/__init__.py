"""Event schemas: the ``ModelEvent`` base class and the registries that look them up."""

from pubsubpy.schemas._base import ModelEvent, routing_key_for
from pubsubpy.schemas._registry import SchemaRegistry, default_catalog

__all__ = ["ModelEvent", "SchemaRegistry", "default_catalog", "routing_key_for"]
