"""The billing Celery app: ``celery -A billing_site worker -B`` drains every 30 seconds."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "billing_site.settings")
app = Celery("billing")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks(["pubsubpy.contrib"])
