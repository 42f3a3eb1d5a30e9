"""Django integration: add ``"pubsubpy.contrib.django"`` to ``INSTALLED_APPS``.

``settings.PUBSUBPY`` drives ``pubsubpy.init()`` from the app's ``ready()``
(start-up never connects). Each installed app's ``subscribers`` module is
imported so its ``@pubsubpy.subscribe`` handlers register, the way Celery finds
``tasks`` modules. ``MODEL_EVENTS`` declares which models publish which
events; see ``pubsubpy.contrib.django.model_events``. Without ``AMQP_URL`` (or with
``None``), ``init()`` reads ``PUBSUBPY_URL`` (else ``memory://``), and a URL with
no password takes it from the file ``PUBSUBPY_PASSWORD_FILE``, as outside Django.

::

    PUBSUBPY = {
        "AMQP_URL": "amqp://guest:guest@127.0.0.1:5672/%2F",
        "SERVICE_NAME": "shop",
        "MODEL_EVENTS": {"bookings.Booking": ["created", "updated", "deleted"]},
    }
"""

from pubsubpy.contrib.django.model_events import publish_changes

__all__ = ["publish_changes"]
