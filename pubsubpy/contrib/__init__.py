"""Integrations: ``pubsubpy.contrib.django`` and ``pubsubpy.contrib.celery`` (optional extras)."""
