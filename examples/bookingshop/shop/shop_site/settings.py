"""The shop: a Django service that publishes Booking events."""

import os
from pathlib import Path

import console_tracing
from database import database

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "example-only"
DEBUG = True
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "bookings", "pubsubpy.contrib.django"]
DATABASES = {"default": database(BASE_DIR / "shop.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
ROOT_URLCONF = "shop_site.urls"
ALLOWED_HOSTS = ["localhost", "127.0.0.1", "testserver"]

# TRACES_TO_CONSOLE=1: print every span (JSON, service.name "shop") on stdout; see console_tracing.py.
console_tracing.install("shop")

PUBSUBPY = {
    "AMQP_URL": os.environ.get("PUBSUBPY_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"),
    "MODEL_EXCHANGE": os.environ.get("PUBSUBPY_EXCHANGE", "shop-models"),
    "SERVICE_NAME": "shop",
    "MODEL_EVENTS": {"bookings.Booking": ["created", "updated", "deleted"]},
    "OUTBOX": True,  # events are rows written with the booking, sent by `manage.py pubsub relay`
}
