from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies: list[tuple[str, str]] = []
    operations = [
        migrations.CreateModel(
            name="Invoice",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("booking_id", models.IntegerField(unique=True)),
                ("guest", models.CharField(max_length=100)),
                ("amount_cents", models.IntegerField()),
                ("status", models.CharField(max_length=20)),
                ("message_id", models.CharField(max_length=64)),
            ],
        ),
    ]
