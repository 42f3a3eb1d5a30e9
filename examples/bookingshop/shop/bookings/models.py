import shop_events  # noqa: F401  (registers the Booking schemas before MODEL_EVENTS is checked)
from django.db import models


class Booking(models.Model):
    guest = models.CharField(max_length=100)
    nights = models.PositiveIntegerField()
    amount_cents = models.IntegerField()
    status = models.CharField(max_length=20, default="pending")
    created_at = models.DateTimeField(auto_now_add=True)
