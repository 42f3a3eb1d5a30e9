from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("invoices", "0001_initial")]
    operations = [
        migrations.CreateModel(
            name="InvoiceEvent",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("booking_id", models.IntegerField(db_index=True)),
                ("event", models.CharField(max_length=20)),
                ("status", models.CharField(max_length=20)),
                ("message_id", models.CharField(max_length=64)),
            ],
        ),
    ]
