"""Billing: a Django service that turns Booking events into invoices."""

import os
from pathlib import Path

import console_tracing
from database import database

BASE_DIR = Path(__file__).resolve().parent.parent
SECRET_KEY = "example-only"
DEBUG = True
USE_TZ = True
INSTALLED_APPS = ["django.contrib.contenttypes", "invoices", "pubsubpy.contrib.django"]
DATABASES = {"default": database(BASE_DIR / "billing.sqlite3")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# TRACES_TO_CONSOLE=1: print every span (JSON, service.name "billing") on stdout; see console_tracing.py.
console_tracing.install("billing")

PUBSUBPY = {
    "AMQP_URL": os.environ.get("PUBSUBPY_URL", "amqp://guest:guest@127.0.0.1:5672/%2F"),
    "MODEL_EXCHANGE": os.environ.get("PUBSUBPY_EXCHANGE", "shop-models"),
    "SERVICE_NAME": os.environ.get("PUBSUBPY_SERVICE", "billing"),
}

CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
CELERY_BEAT_SCHEDULE = {
    "pubsubpy-drain": {"task": "pubsubpy.drain", "schedule": 30.0, "kwargs": {"timeout": 25.0}},
}
