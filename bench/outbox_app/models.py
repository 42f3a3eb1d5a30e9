from __future__ import annotations

from django.db import models


class Item(models.Model):
    id: int
    name: models.CharField[str, str] = models.CharField(max_length=100)
    status: models.CharField[str, str] = models.CharField(max_length=20)

    class Meta:
        app_label = "outbox_app"
