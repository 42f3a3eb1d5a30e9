from django.db import models


class Invoice(models.Model):
    booking_id = models.IntegerField(unique=True)
    guest = models.CharField(max_length=100)
    amount_cents = models.IntegerField()
    status = models.CharField(max_length=20)
    message_id = models.CharField(max_length=64)


class InvoiceEvent(models.Model):
    """Every Booking event billing handled, in the order it handled them (an audit trail)."""

    booking_id = models.IntegerField(db_index=True)
    event = models.CharField(max_length=20)
    status = models.CharField(max_length=20)
    message_id = models.CharField(max_length=64)
